"""Membership learned from peers: push-pull gossip over the node's own HTTP
listener (not mDNS: multicast does not cross routed links or the tests'
namespaces, and one listener is less to secure).

Every `gossip_interval` seconds a node POSTs the members it knows to a few
others (its static peers and the live members, at random) and merges what
they answer.  A member is a record {url, key, heartbeat, sig}: the node at
URL signs "emergence-member-1;URL;KEY;HEARTBEAT" with its node key each
round (HEARTBEAT = its clock in ms), so a record cannot be moved to another
address or replayed as fresh.  A record is accepted only if KEY is one of
the operator's `trusted_keys` (and, if `member_networks` is set, URL's
address is in one of them): a peer can never make this node talk to an
address no trusted node signed for.  Without trusted keys nothing is
learned.  A member whose heartbeat has not risen for `member_timeout`
seconds is dead (shown as such), and forgotten after twice that.
"""

import asyncio
import ipaddress
import random
import time
from urllib.parse import urlsplit

from .signing import verify

MAX_MEMBERS = 1000
FANOUT = 3


def message(url, key, heartbeat):
    return f"emergence-member-1;{url};{key};{heartbeat}"


def url_allowed(url, networks):
    """True if URL is http(s) and, when NETWORKS are given, its host is an
    address inside one of them (a name could resolve anywhere)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host or parts.path not in ("", "/"):
        return False
    if not networks:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def why_not(rec, trusted_keys, networks=()):
    """None if the record REC may be a member; else why not."""
    try:
        url, key, hb, sig = rec["url"], rec["key"], rec["heartbeat"], rec["sig"]
    except (KeyError, TypeError):
        return "not a member record"
    if not (isinstance(url, str) and isinstance(key, str) and isinstance(hb, int)
            and isinstance(sig, str)):
        return "not a member record"
    if not url_allowed(url, networks):
        return "address outside [share] member_networks"
    if key not in trusted_keys:
        return "key not in [share] trusted_keys"
    if not verify([key], message(url, key, hb), sig):
        return "bad signature"
    return None


class Members:
    """The members this node knows, and the gossip that keeps them fresh."""

    def __init__(self, key, advertise, peers, trusted_keys, networks=(), interval=2.0,
                 timeout=10.0, log=lambda m: None):
        self.key = key
        self.me = advertise.rstrip("/")
        self.peers = [p.rstrip("/") for p in peers]
        self.trusted = list(trusted_keys)
        try:
            self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        except (ValueError, TypeError) as e:
            from ..errors import EmergenceError
            raise EmergenceError(f"[share] member_networks: {e}") from None
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.log = log
        self.known = {}    # url -> {"record", "seen" (monotonic), "latency_ms"}
        self.refused = {}  # url -> why (the last few, for status)

    # -- records --
    def own(self):
        hb = int(time.time() * 1000)
        key = self.key.public()
        return {"url": self.me, "key": key, "heartbeat": hb,
                "sig": self.key.sign(message(self.me, key, hb))}

    def merge(self, records):
        """Take the valid, newer records of RECORDS; the number taken."""
        now = time.monotonic()
        taken = 0
        for rec in records if isinstance(records, list) else ():
            url = rec.get("url") if isinstance(rec, dict) else None
            hb = rec.get("heartbeat") if isinstance(rec, dict) else None
            if not isinstance(url, str) or not isinstance(hb, int) or url.rstrip("/") == self.me:
                continue
            old = self.known.get(url)
            if old and old["record"]["heartbeat"] >= hb:
                continue  # nothing new (checked before the signature: cheap)
            why = why_not(rec, self.trusted, self.networks)
            if why:
                if len(self.refused) < 100:
                    self.refused[url[:200]] = why
                continue
            if old is None and len(self.known) >= MAX_MEMBERS:
                continue
            self.known[url] = {"record": rec, "seen": now,
                               "latency_ms": old["latency_ms"] if old else None}
            taken += 1
        return taken

    def records(self):
        """What this node tells others: itself (if it has an address) and the live."""
        out = [self.own()] if self.me else []
        return out + [m["record"] for m in self.known.values() if self._alive(m)]

    def _alive(self, m, now=None):
        return (now or time.monotonic()) - m["seen"] < self.timeout

    def live(self):
        """URLs of the members heard from within the timeout."""
        now = time.monotonic()
        return [u for u, m in self.known.items() if self._alive(m, now)]

    def table(self):
        """Every member with its state, for `emergence peers` and status."""
        now = time.monotonic()
        return [{"url": u, "key": m["record"]["key"],
                 "state": "alive" if self._alive(m, now) else "dead",
                 "last_heard_s": round(now - m["seen"], 1), "latency_ms": m["latency_ms"]}
                for u, m in sorted(self.known.items())]

    def expire(self):
        now = time.monotonic()
        for u in [u for u, m in self.known.items() if now - m["seen"] > 2 * self.timeout]:
            del self.known[u]
            self.log(f"share: member {u} forgotten (silent for {2 * self.timeout:g} s)")

    # -- gossip --
    async def exchange(self, session, target):
        """Push our records to TARGET and merge what it pulls back."""
        import aiohttp
        t = time.monotonic()
        try:
            async with session.post(target + "/share/v1/members",
                                    json={"members": self.records()},
                                    timeout=aiohttp.ClientTimeout(total=self.interval * 2)) as r:
                if r.status != 200:
                    return False
                body = await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return False
        if target in self.known:
            self.known[target]["latency_ms"] = round((time.monotonic() - t) * 1000, 1)
        self.merge(body.get("members") if isinstance(body, dict) else None)
        return True

    async def run(self):
        """Gossip until cancelled."""
        import aiohttp
        async with aiohttp.ClientSession() as session:
            while True:
                targets = list(dict.fromkeys(self.peers + self.live()))
                targets = [t for t in targets if t != self.me]
                chosen = random.sample(targets, min(FANOUT, len(targets)))
                await asyncio.gather(*(self.exchange(session, t) for t in chosen))
                self.expire()
                await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
