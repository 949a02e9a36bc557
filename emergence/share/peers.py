"""Who the peers are and who has what.

Membership: the static list in the config (`[share] peers = [...]`), plus
what those peers know (one hop): with trusted keys, their members whose
records a trusted key signed (GET /share/v1/members; the node itself learns
members by gossip, members.py); without, their lists (GET /share/v1/peers).  Who has
a digest is asked on a miss: HEAD /v2/<name>/blobs/<digest> (or the
manifest) on every peer at once, with a short timeout; if none has it, the
peers are asked whom they heard announce it (a node announces what is
pushed to it to its peers: POST /share/v1/announce, GET /share/v1/who-has).
"""

import asyncio
import time


async def discover(session, peers, timeout=5.0, trusted_keys=()):
    """The static PEERS and the peers they know (deduplicated, order kept).
    With TRUSTED_KEYS, only the members they know whose records one of those
    keys signed (members.py), so a peer cannot point us at any address;
    without, the peers' lists as they give them."""
    from .members import why_not
    found = list(dict.fromkeys(p.rstrip("/") for p in peers))

    async def ask(peer):
        try:
            async with session.get(peer + ("/share/v1/members" if trusted_keys else
                                           "/share/v1/peers"),
                                   timeout=_timeout(timeout)) as r:
                if r.status == 200 and trusted_keys:
                    return [m["url"] for m in (await r.json()).get("records", [])
                            if why_not(m, trusted_keys) is None]
                if r.status == 200:
                    return (await r.json()).get("peers", [])
        except (OSError, asyncio.TimeoutError, ValueError):
            pass
        except Exception as e:  # aiohttp.ClientError and kin
            if not _client_error(e):
                raise
        return []
    for more in await asyncio.gather(*(ask(p) for p in found)):
        for p in more:
            if isinstance(p, str) and p.rstrip("/") not in found:
                found.append(p.rstrip("/"))
    return found


async def who_has(session, peers, path, timeout=5.0):
    """[(peer, latency seconds)] of the PEERS answering 200 to HEAD PATH, fastest first."""
    async def ask(peer):
        t = time.monotonic()
        try:
            async with session.head(peer + path, timeout=_timeout(timeout)) as r:
                if r.status == 200:
                    return peer, time.monotonic() - t
        except (OSError, asyncio.TimeoutError):
            pass
        except Exception as e:
            if not _client_error(e):
                raise
        return None
    hits = [h for h in await asyncio.gather(*(ask(p) for p in peers)) if h]
    return sorted(hits, key=lambda h: h[1])


async def announced_holders(session, peers, key, timeout=5.0):
    """The nodes that announced KEY (a ref or digest) to any of PEERS."""
    async def ask(peer):
        try:
            async with session.get(peer + "/share/v1/who-has", params={"key": key},
                                   timeout=_timeout(timeout)) as r:
                if r.status == 200:
                    return (await r.json()).get("nodes", [])
        except (OSError, asyncio.TimeoutError, ValueError):
            pass
        except Exception as e:
            if not _client_error(e):
                raise
        return []
    found = []
    for nodes in await asyncio.gather(*(ask(p) for p in peers)):
        for n in nodes:
            if isinstance(n, str) and n.startswith(("http://", "https://")) \
                    and n not in found:
                found.append(n.rstrip("/"))
    return found


def _timeout(seconds):
    import aiohttp
    return aiohttp.ClientTimeout(total=seconds)


def _client_error(e):
    import aiohttp
    return isinstance(e, aiohttp.ClientError)
