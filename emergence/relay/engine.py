"""Apply: the difference between the desired graph and what was applied (or,
when asked, what the kernel holds) becomes the matching minimal operations.

Two records live in the state directory, each written atomically:
  graph.json    the desired graph (addresses filled in once IPAM gives them)
  applied.json  what has been applied, node by node, plus the nft digest
A change is computed from these two, so an edit costs the nodes it touches,
whatever the size of the graph.  A full compare (`check`) also reads the
kernel for the nodes asked, catching drift made behind Relay's back.

Order: removals (routes, attachments, networks), then additions (networks,
attachments, routes), then one nft transaction.  Every addition is checked
before anything changes (a bridge that is not ours, a missing netns); an
attachment that fails midway is deleted again (deleting the host end of a
veth deletes both ends), and applied.json is saved with what was done, so a
later apply converges from any interruption, a kill included.
"""

import fcntl
import json
import os

from .. import counters
from ..errors import EmergenceError
from . import nft
from .graph import Attachment, Graph, Network
from .ipam import IPAM, write_atomic
from .kernel import ALIAS_PREFIX, Kernel, in_netns, netns_identity

DEFAULT_STATE = "/var/lib/emergence/relay"


def default_state():
    return os.environ.get("EMERGENCE_RELAY_STATE") or DEFAULT_STATE


class Change:
    __slots__ = ("action", "key", "why")

    def __init__(self, action, key, why=""):
        self.action, self.key, self.why = action, key, why

    def to_dict(self):
        return {"action": self.action, "key": self.key, "why": self.why}

    def __str__(self):
        sign = {"add": "+", "remove": "-", "replace": "~", "update": "~", "repair": "!",
                "release": "-"}[self.action]
        return f"{sign} {self.key}" + (f"  ({self.why})" if self.why else "")


class Relay:
    def __init__(self, state_dir=None, host_netns=None):
        self.state_dir = state_dir or default_state()
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.kernel = Kernel(host_netns)
        self.ipam = IPAM(self.state_dir)
        self._lock_fd = None

    # ---- state files -----------------------------------------------------------

    def _path(self, name):
        return os.path.join(self.state_dir, name)

    def _read(self, name, default):
        try:
            with open(self._path(name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return default

    def desired(self):
        return Graph.from_dict(self._read("graph.json", {}), "graph.json")

    def applied(self):
        return self._read("applied.json", {"networks": {}, "attachments": {}, "routes": {},
                                           "nft": ""})

    def _save(self, name, doc):
        write_atomic(self._path(name), json.dumps(doc, sort_keys=True, indent=1).encode())

    def __enter__(self):
        """Hold the state lock: one writer of the graph at a time."""
        self._lock_fd = os.open(self._path("relay.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self._lock_fd)
        self._lock_fd = None
        return False

    def close(self):
        self.kernel.close()

    # ---- edits -----------------------------------------------------------------

    def edit(self, change, full=False):
        """Load the desired graph, CHANGE(graph) it, and apply.  Returns changes."""
        with self:
            g = self.desired()
            result = change(g)
            changes = self._apply(g, full=full)
            return result, changes

    def create_network(self, net):
        return self.edit(lambda g: g.add_network(net))[1]

    def remove_network(self, name):
        def rm(g):
            if name not in g.networks:
                raise EmergenceError(f"no network {name!r}; see `emergence net ls`")
            g.networks.pop(name)
            for k in [k for k, a in g.attachments.items() if a.network == name]:
                del g.attachments[k]
            for k in [k for k, p in g.forwards.items() if p.network == name]:
                del g.forwards[k]
            for k in [k for k, r in g.routes.items() if r.network == name]:
                del g.routes[k]
        return self.edit(rm)[1]

    def replace_declared(self, new):
        """`net apply FILE`: the file's networks, routes, attachments and
        forwards replace the declared ones; attachments made by `attach`
        (CNI, run) stay while their network does."""
        def rep(g):
            keep = {k: a for k, a in g.attachments.items()
                    if a.origin != "file" and a.network in new.networks}
            keep_pf = {k: p for k, p in g.forwards.items()
                       if (p.network, p.container) in {(a.network, a.container)
                                                        for a in keep.values()}}
            g.networks = dict(new.networks)
            g.routes = dict(new.routes)
            old = dict(g.attachments)
            g.attachments = dict(keep)
            for k, a in new.attachments.items():
                if not a.addresses and k in old:   # keep the address IPAM gave it
                    a.addresses = old[k].addresses
                g.attachments[k] = a
            g.forwards = dict(keep_pf)
            g.forwards.update(new.forwards)
            from .graph import validate
            validate(g)
        return self.edit(rep)[1]

    def attach(self, network, container, netns, ifname="eth0", addresses=(), mac=None,
               forwards=(), origin="attach"):
        """Attach a container's netns to NETWORK (idempotent); return the Attachment."""
        def add(g):
            if network not in g.networks:
                raise EmergenceError(f"no network {network!r}; create it with "
                                     "`emergence net create`")
            att = Attachment(network, container, netns, ifname, addresses, mac, origin)
            old = g.attachments.get(att.key)
            if old is not None:
                if old.netns == netns and (not addresses or old.addresses == att.addresses):
                    return old
                del g.attachments[att.key]
            g.add_attachment(att)
            for pf in forwards:
                g.add_forward(pf)
            return att
        att, _ = self.edit(add)
        return self.desired().attachments[att.key]

    def detach(self, network, container, ifname=None):
        """Detach (idempotent); return the keys removed."""
        def rm(g):
            gone = [k for k, a in g.attachments.items() if a.network == network
                    and a.container == container and (ifname is None or a.ifname == ifname)]
            for k in gone:
                del g.attachments[k]
            if not any(a.container == container and a.network == network
                       for a in g.attachments.values()):
                for k in [k for k, p in g.forwards.items()
                          if p.network == network and p.container == container]:
                    del g.forwards[k]
            return gone
        return self.edit(rm)[0]

    def apply(self, graph=None, full=False, check=None):
        with self:
            g = graph if graph is not None else self.desired()
            return self._apply(g, full=full, check=check)

    def diff(self, graph=None, full=False):
        """What apply would do, changing nothing (addresses not yet given show as such)."""
        with self:
            g = graph if graph is not None else self.desired()
            return self._plan(g, self.applied(), full, None)[0]

    def gc(self):
        """Release attachments whose netns is gone, and addresses nobody holds."""
        with self:
            g = self.desired()
            return self._apply(g, full=False, check=set(), gc=True)

    # ---- the diff ----------------------------------------------------------------

    def _allocate(self, g, applied):
        done = applied["attachments"]
        for key, a in g.attachments.items():
            rec = done.get(key)
            if rec is not None and a.addresses and rec["att"] == a.to_dict():
                continue    # applied with these addresses: IPAM holds them already
            net = g.networks[a.network]
            fams = {x.version for x in a.addresses}
            if a.addresses and all(s.version in fams for s in net.subnets):
                # fixed or already allocated: make sure IPAM records it
                self.ipam.allocate(net.name, net.subnets, net.gateways, a.key,
                                   netns_identity(a.netns), a.addresses)
                continue
            a.addresses = self.ipam.allocate(net.name, net.subnets, net.gateways, a.key,
                                             netns_identity(a.netns), a.addresses)

    def _plan(self, g, applied, full, check, gc=False):
        changes = []
        dead = []
        anets, aatts, aroutes = applied["networks"], applied["attachments"], applied["routes"]
        observe = (lambda k: True) if full else (lambda k: check is not None and k in check)
        replaced_nets = set()
        recorded = {}
        for name, net in g.networks.items():
            rec = anets.get(name)
            if rec is None:
                changes.append(Change("add", net.key))
            elif _identity(rec) != _identity(net.to_dict()):
                changes.append(Change("replace", net.key, "bridge or subnets changed"))
                replaced_nets.add(name)
            elif rec["mtu"] != net.mtu:
                changes.append(Change("update", net.key, f"mtu {rec['mtu']} -> {net.mtu}"))
            elif observe(net.key):
                why = self._observe_network(net)
                if why:
                    changes.append(Change("repair", net.key, why))
        for name in anets:
            if name not in g.networks:
                changes.append(Change("remove", f"net:{name}"))
        for key, att in g.attachments.items():
            if gc or full or observe(key):
                now = netns_identity(att.netns)
                if now is None or now != self._netns_record(att, recorded):
                    # gone, or its path now names another netns (a reused pid)
                    dead.append(key)
                    changes.append(Change("release", key, "its netns is gone"))
                    continue
            rec = aatts.get(key)
            if rec is None:
                changes.append(Change("add", key))
            elif rec["att"] != att.to_dict() or att.network in replaced_nets:
                changes.append(Change("replace", key, "changed"))
            elif observe(key):
                why = self._observe_attachment(g.networks[att.network], att, rec)
                if why:
                    changes.append(Change("repair", key, why))
        for key in aatts:
            if key not in g.attachments:
                changes.append(Change("remove", key))
        for key, r in g.routes.items():
            rec = aroutes.get(key)
            if rec != r.to_dict():
                changes.append(Change("add" if rec is None else "replace", key))
            elif observe(key):
                gw = self.kernel.host_route(r.destination)
                if gw != str(r.via):
                    changes.append(Change("repair", key, "route missing"))
        for key in aroutes:
            if key not in g.routes:
                changes.append(Change("remove", key))
        live = g.copy()
        for k in dead:
            live.attachments.pop(k, None)
        body = nft.ruleset(live)
        want = nft.digest(body) if body else ""
        if applied.get("nft", "") != want:
            changes.append(Change("update", "nft:emergence", "ruleset changed"))
        elif observe("nft:emergence"):
            have = nft.installed_digest(self.kernel)
            if have != want:
                changes.append(Change("repair", "nft:emergence", "table differs"))
        return changes, dead, body

    def _netns_record(self, att, cache):
        """The netns identity IPAM recorded for ATT (its current one if none)."""
        if att.network not in cache:
            cache[att.network] = {h["key"]: h.get("netns")
                                  for h in self.ipam.holders(att.network).values()}
        return cache[att.network].get(att.key) or netns_identity(att.netns)

    def _observe_network(self, net):
        link = self.kernel.get_link(net.bridge)
        if link is None:
            return "bridge missing"
        if not link["up"] or link["mtu"] != net.mtu:
            return "bridge down or mtu differs"
        have = self.kernel.addresses(link["index"])
        for s, gw in zip(net.subnets, net.gateways):
            if (str(gw), s.prefixlen) not in have:
                return f"address {gw}/{s.prefixlen} missing"
        return ""

    def _observe_attachment(self, net, att, rec):
        k = self.kernel
        host = k.get_link(rec["host"])
        if host is None:
            return "veth missing"
        br = k.get_link(net.bridge)
        if br is None or host["master"] != br["index"] or not host["up"]:
            return "veth not on its bridge or down"
        try:
            sock = k.ns(att.netns)
            inner = k.get_link(att.ifname, sock)
            if inner is None:
                return "container end missing"
            have = k.addresses(inner["index"], sock)
            for a in att.addresses:
                s, _ = net.subnet_for(a)
                if (str(a), s.prefixlen) not in have:
                    return f"address {a} missing"
            gws = k.default_routes(sock)
            if not inner["up"] or any(str(gw) not in gws for gw in net.gateways):
                return "container end down or default route missing"
        finally:
            k.forget_ns(att.netns)
        return ""

    # ---- doing it ----------------------------------------------------------------------

    def _apply(self, g, full=False, check=None, gc=False):
        before = set(self._read("graph.json", {}).get("attachments", []) and
                     self.desired().attachments)
        applied = self.applied()
        try:
            self._allocate(g, applied)
            from .graph import validate
            validate(g)
            changes, dead, body = self._plan(g, applied, full, check, gc)
            by = {c.key: c for c in changes}
            self._preflight(g, applied, by)
        except BaseException:
            # bad input changes nothing: not the graph, not IPAM
            for key, a in g.attachments.items():
                if key not in before:
                    self.ipam.release(a.network, key)
            raise
        # release dead attachments first: they are not in the kernel any more
        for key in dead:
            a = g.attachments.pop(key)
            self.ipam.release(a.network, key)
            for pk in [pk for pk, p in g.forwards.items()
                       if (p.network, p.container) == (a.network, a.container)]:
                del g.forwards[pk]
        self._save("graph.json", g.to_dict())
        if gc:
            self._gc_ipam(g)
        if not changes:
            return changes
        self._applied_ref = applied
        ops = len(self.kernel.ops)
        try:
            self._execute(g, applied, by, body)
        finally:
            self._save("applied.json", applied)
            counters.relay_applied(self.kernel.ops[ops:])
        return changes

    def _preflight(self, g, applied, by):
        for name, net in g.networks.items():
            c = by.get(net.key)
            if c and c.action in ("add", "replace", "repair"):
                link = self.kernel.get_link(net.bridge)
                if link is not None and link["alias"] != ALIAS_PREFIX + net.key \
                        and net.bridge not in applied.get("pending", []):
                    raise EmergenceError(f"networks.{name}.bridge: {net.bridge} exists and is "
                                         "not Emergence's; choose another bridge name or "
                                         "remove that interface")
        for key, att in g.attachments.items():
            c = by.get(key)
            if c and c.action in ("add", "replace", "repair") and not os.path.exists(att.netns):
                raise EmergenceError(f"{key}.netns: {att.netns} does not exist; "
                                     "is the container running?")

    def _execute(self, g, applied, by, body):
        k = self.kernel
        anets, aatts, aroutes = applied["networks"], applied["attachments"], applied["routes"]
        # removals: routes, attachments, networks
        for key, rec in list(aroutes.items()):
            c = by.get(key)
            if c and c.action in ("remove", "replace", "repair"):
                from .graph import Route
                r = Route(**rec)
                k.route_del(r.destination, r.via)
                del aroutes[key]
        for key, rec in list(aatts.items()):
            c = by.get(key)
            if (c and c.action in ("remove", "replace", "release", "repair")) or (
                    by.get("net:" + rec["att"]["network"]) and by["net:" + rec["att"]["network"]]
                    .action in ("remove", "replace")):
                k.link_del(rec["host"])
                if c is None or c.action == "remove":
                    self.ipam.release(rec["att"]["network"], key)
                del aatts[key]
        for name, rec in list(anets.items()):
            c = by.get("net:" + name)
            if c and c.action in ("remove", "replace"):
                k.link_del(rec["bridge"])
                if c.action == "remove":
                    self.ipam.drop_network(name)
                del anets[name]
        # additions: networks, attachments, routes
        for name, net in g.networks.items():
            c = by.get(net.key)
            if c and c.action in ("add", "replace", "repair", "update"):
                self._make_network(net, c.action)
                if c.action == "update":
                    self._set_mtu(g, net, aatts)
                anets[name] = net.to_dict()
        for key, att in g.attachments.items():
            c = by.get(key)
            if key not in aatts and (c is None or c.action != "release"):
                net = g.networks[att.network]
                host = self._make_attachment(net, att)
                aatts[key] = {"att": att.to_dict(), "host": host}
        for key, r in g.routes.items():
            if key not in aroutes:
                k.route_add(k.host, r.via, r.destination, label="host")
                aroutes[key] = r.to_dict()
        want = nft.digest(body) if body else ""
        if "nft:emergence" in by:
            k.nft(nft.script(body))
            applied["nft"] = want

    def _make_network(self, net, action):
        k = self.kernel
        link = k.get_link(net.bridge)
        if link is None:
            # write ahead: a kill between create and alias must not orphan the bridge
            self._applied_ref.setdefault("pending", []).append(net.bridge)
            self._save("applied.json", self._applied_ref)
            index = k.bridge_add(net.bridge, net.mtu, net.key)
            self._applied_ref["pending"].remove(net.bridge)
            have = set()
        else:
            index = link["index"]
            if not link["up"] or link["mtu"] != net.mtu:
                k.link_set(index, label=net.bridge, state="up", mtu=net.mtu)
            have = k.addresses(index)
        for s, gw in zip(net.subnets, net.gateways):
            if (str(gw), s.prefixlen) not in have:
                k.addr_add(index, gw, s.prefixlen, label=net.bridge)
        if any(s.version == 4 for s in net.subnets):
            k.sysctl("net/ipv4/ip_forward", "1")
            k.sysctl(f"net/ipv4/conf/{net.bridge}/route_localnet", "1")
        if any(s.version == 6 for s in net.subnets):
            k.sysctl("net/ipv6/conf/all/forwarding", "1")

    def _set_mtu(self, g, net, aatts):
        """A network's new MTU on both ends of each of its attachments."""
        k = self.kernel
        for key, rec in aatts.items():
            att = g.attachments.get(key)
            if att is None or att.network != net.name:
                continue
            host = k.get_link(rec["host"])
            if host is not None:
                k.link_set(host["index"], label=rec["host"], mtu=net.mtu)
            if os.path.exists(att.netns):
                try:
                    sock = k.ns(att.netns)
                    inner = k.get_link(att.ifname, sock)
                    if inner is not None:
                        k.link_set(inner["index"], sock, label=att.ifname, mtu=net.mtu)
                finally:
                    k.forget_ns(att.netns)

    def _make_attachment(self, net, att):
        """The veth pair, addresses, link up and default routes; on failure the
        pair is deleted again, so no half-made attachment stays."""
        k = self.kernel
        host = att.host_ifname(net.veth_prefix)
        old = k.get_link(host)
        if old is not None:   # left by an interrupted apply: its name is the key's hash
            if old["kind"] != "veth":
                raise EmergenceError(f"{att.key}: interface {host} exists and is not "
                                     "Emergence's; remove it")
            k.link_del(host)
        br = k.get_link(net.bridge)
        if br is None:
            raise EmergenceError(f"{att.key}: bridge {net.bridge} is missing; "
                                 "run `emergence net apply` to repair the network")
        try:
            inner_sock = k.ns(att.netns)
            stale = k.get_link(att.ifname, inner_sock)
            if stale is not None:
                raise EmergenceError(f"{att.key}.ifname: {att.ifname} already exists in "
                                     f"{att.netns}; choose another interface name")
            k.veth_add(host, br["index"], net.mtu, att.key, att.netns, att.ifname, att.mac)
            inner = k.get_link(att.ifname, inner_sock)
            for a in att.addresses:
                s, _ = net.subnet_for(a)
                k.addr_add(inner["index"], a, s.prefixlen, inner_sock, label=att.ifname)
            k.link_set(inner["index"], inner_sock, label=att.ifname, state="up")
            lo = k.get_link("lo", inner_sock)
            if lo is not None and not lo["up"]:
                k.link_set(lo["index"], inner_sock, label="lo", state="up")
            for gw in net.gateways:
                k.route_add(inner_sock, gw, label=att.ifname)
        except BaseException:
            try:
                k.link_del(host)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise
        finally:
            k.forget_ns(att.netns)
        return host

    def _gc_ipam(self, g):
        """Addresses recorded in IPAM whose attachment is not in the graph."""
        for name in g.networks:
            for holder in self.ipam.holders(name).values():
                if holder["key"] not in g.attachments:
                    self.ipam.release(name, holder["key"])

    # ---- views -------------------------------------------------------------------------

    def show(self):
        g = self.desired()
        doc = g.to_dict()
        doc["applied"] = self.applied()
        return doc


def _identity(d):
    return (d["bridge"], tuple(d["subnets"]), tuple(d["gateway"]))


def network_from_options(name, opts):
    from .graph import network_from_dict
    d = {}
    for k in ("bridge", "gateway", "veth_prefix"):
        if opts.get(k):
            d[k] = opts[k]
    if opts.get("subnet"):
        d["subnets"] = opts["subnet"]
    if opts.get("mtu"):
        try:
            d["mtu"] = int(opts["mtu"])
        except ValueError:
            raise EmergenceError(f"--mtu: {opts['mtu']!r} is not a number")
    if opts.get("no-nat"):
        d["nat"] = False
    if opts.get("no-isolate"):
        d["isolated"] = False
    return network_from_dict(name, d, f"network {name}")


__all__ = ["Relay", "Network", "Change", "in_netns"]
