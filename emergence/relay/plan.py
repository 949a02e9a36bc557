"""The diff: what apply would change, from the desired graph, the applied
record and (for the keys asked) the kernel.  A mixin of engine.Relay."""

from . import nft
from .kernel import netns_identity


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




def _identity(d):
    return (d["bridge"], tuple(d["subnets"]), tuple(d["gateway"]))




def same(a, b):
    """Two records of a node alike in what the kernel holds: who owns or made
    it (owner, origin) is no reason to rebuild it."""
    return {k: v for k, v in a.items() if k not in ("owner", "origin")} == \
        {k: v for k, v in b.items() if k not in ("owner", "origin")}


class Planner:
    # ---- the diff ----------------------------------------------------------------

    def _allocate(self, g, applied, keys):
        done = applied["attachments"]
        for key in keys:
            a = g.attachments[key]
            rec = done.get(key)
            if rec is not None and a.addresses and same(rec["att"], a.to_dict()):
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

    _pending = None   # (unapplied, orphans) when the engine keeps them (engine.py)

    def _att_keys(self, g, applied, touched):
        """The attachments a plan looks at: TOUCHED, and those not yet applied
        (an interrupted apply; kept key by key by the engine, else a set
        difference of the key views).  All of them when TOUCHED is None."""
        if touched is None:
            return list(g.attachments)
        keys = {k for k in touched if k in g.attachments}
        keys.update(self._pending[0] if self._pending is not None
                    else g.attachments.keys() - applied["attachments"].keys())
        return sorted(keys)

    def _plan(self, g, applied, full, check, gc=False, touched=None):
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
        if gc or full:
            touched = None
        for key in self._att_keys(g, applied, touched):
            att = g.attachments[key]
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
            elif not same(rec["att"], att.to_dict()) or att.network in replaced_nets:
                changes.append(Change("replace", key, "changed"))
            elif observe(key):
                why = self._observe_attachment(g.networks[att.network], att, rec)
                if why:
                    changes.append(Change("repair", key, why))
        gone = self._pending[1] if self._pending is not None and touched is not None \
            else aatts.keys() - g.attachments.keys()
        for key in sorted(gone):
            changes.append(Change("remove", key))
        for key, r in g.routes.items():
            rec = aroutes.get(key)
            if rec is None or not same(rec, r.to_dict()):
                changes.append(Change("add" if rec is None else "replace", key))
            elif observe(key):
                gw = self.kernel.host_route(r.destination)
                if gw != str(r.via):
                    changes.append(Change("repair", key, "route missing"))
        for key in aroutes:
            if key not in g.routes:
                changes.append(Change("remove", key))
        apeers, kernel_peers = applied["peers"], {}
        for key, p in g.peers.items():
            rec = apeers.get(key)
            if rec is None or rec != p.to_dict():
                changes.append(Change("add" if rec is None else "replace", key))
            elif observe(key):
                from .peers import observe as observe_peer
                why = observe_peer(self.kernel, p, kernel_peers)
                if why:
                    changes.append(Change("repair", key, why))
        for key in apeers:
            if key not in g.peers:
                changes.append(Change("remove", key))
        body = nft.ruleset(g, dead)
        want = nft.digest(body) if body else ""
        if applied.get("nft", "") != want:
            changes.append(Change("update", "nft:emergence", "ruleset changed"))
        elif observe("nft:emergence"):
            have = nft.installed_digest(self.kernel, self.table)
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
