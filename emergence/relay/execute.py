"""Doing it: the checks before any change, then removals, additions and the
nft transaction, in that order.  A mixin of engine.Relay."""

import os

from ..errors import EmergenceError
from . import nft
from .hairpin import set_hairpin
from .instance import mark
from .kernel import ALIAS_PREFIX, EEXIST


class Executor:
    def _preflight(self, g, applied, by):
        for name, net in g.networks.items():
            c = by.get(net.key)
            if c and c.action in ("add", "replace", "repair"):
                link = self.kernel.get_link(net.bridge)
                ours = ALIAS_PREFIX + mark(self.instance, net.key)
                if link is not None and link["alias"] != ours \
                        and net.bridge not in applied.get("pending", []):
                    raise EmergenceError(f"networks.{name}.bridge: {net.bridge} exists and is "
                                         "not Emergence's; choose another bridge name or "
                                         "remove that interface")
        for key, c in by.items():
            att = g.attachments.get(key)
            if att and c.action in ("add", "replace", "repair") and not os.path.exists(att.netns):
                raise EmergenceError(f"{key}.netns: {att.netns} does not exist; "
                                     "is the container running?")
        self._check_overlap(g, by)

    def _check_overlap(self, g, by):
        """Subnets and routes added or remade must not cover the host's
        addresses and routes (hostnet.py); read only when there are some."""
        new = [(f"networks.{n.name}.subnets", s) for n in g.networks.values()
               if by.get(n.key) and by[n.key].action in ("add", "replace")
               and not n.allow_overlap for s in n.subnets]
        if not self.allow_overlap:
            new += [(f"{k}.destination", r.destination) for k, r in g.routes.items()
                    if by.get(k) and by[k].action in ("add", "replace")]
        if not new:
            return
        from .hostnet import collision, host_networks
        host = host_networks(self.kernel, {n.bridge for n in g.networks.values()})
        for where, s in new:
            what = collision(s, host)
            if what:
                raise EmergenceError(f"{where}: {s} overlaps the {what}; choose another "
                                     "subnet, or pass --allow-overlap if that is intended")

    def _execute(self, g, applied, by, body, touched=None):
        k = self.kernel
        anets, aatts, aroutes = applied["networks"], applied["attachments"], applied["routes"]
        apeers = applied["peers"]
        # removals: peers, routes, attachments, networks
        if apeers:
            from . import peers
            for key, rec in list(apeers.items()):
                c = by.get(key)
                if c and c.action in ("remove", "replace"):
                    peers.remove(k, peers.peer_from_dict(rec, key, trusted=True))
                    del apeers[key]
        for key, rec in list(aroutes.items()):
            c = by.get(key)
            if c and c.action in ("remove", "replace", "repair"):
                from .graph import Route
                r = Route(**rec)
                k.route_del(r.destination, r.via)
                del aroutes[key]
        gone_nets = any(c.key.startswith("net:") and c.action in ("remove", "replace")
                        for c in by.values())
        removed = set()
        for key, rec in list(aatts.items()) if gone_nets else \
                [(key, aatts[key]) for key in by if key in aatts]:
            c = by.get(key)
            if (c and c.action in ("remove", "replace", "release", "repair")) or (
                    by.get("net:" + rec["att"]["network"]) and by["net:" + rec["att"]["network"]]
                    .action in ("remove", "replace")):
                k.link_del(rec["host"])
                if c is None:   # its network went: nothing else frees it
                    self.ipam.release(rec["att"]["network"], key)
                del aatts[key]
                removed.add(key)
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
        published = None
        # an attachment that fails holds up no other: the rest still go in, and
        # the error is raised after, if it is about a key the caller named
        # (TOUCHED; None: any) -- another's is left to the reconciler's retries
        failed = None
        pending = self._pending
        if pending is None or touched is None:
            todo = g.attachments.keys() - aatts.keys()
        else:   # not applied before, or taken out above; not released since
            todo = {k for k in pending[0] | removed if k in g.attachments and k not in aatts}
        for key in sorted(todo):
            att, c = g.attachments[key], by.get(key)
            if c is None or c.action != "release":
                net = g.networks[att.network]
                try:
                    host = self._make_attachment(net, att)
                except Exception as e:  # noqa: BLE001 - raised below
                    if failed is None and (touched is None or key in touched):
                        failed = e
                    continue
                rec = {"att": att.to_dict(), "host": host}
                if published is None:
                    published = _published(g, touched)
                if (att.network, att.container) in published and set_hairpin(k, host):
                    rec["hairpin"] = True
                aatts[key] = rec
        for key, r in g.routes.items():
            if key not in aroutes:
                k.route_add(k.host, r.via, r.destination, label="host")
                aroutes[key] = r.to_dict()
        for key in sorted(key for key in by if key.startswith("peer:")):
            p = g.peers.get(key)
            if p is None or by[key].action not in ("add", "replace", "repair"):
                continue
            from . import peers  # here: a CNI call, with no peers, never loads it
            try:
                peers.add(k, p)     # FDB entry, neighbour, route: three operations
            except Exception as e:  # noqa: BLE001 - as an attachment's, raised below
                if failed is None and (touched is None or key in touched):
                    failed = e
                continue
            apeers[key] = p.to_dict()
        want = nft.digest(body) if body else ""
        if "nft:emergence" in by:
            self._hairpin_published(g, aatts, touched)
            k.nft(nft.script(body, self.table))
            applied["nft"] = want
        if failed is not None:
            raise failed

    def _hairpin_published(self, g, aatts, touched):
        """Forwards changed: the ports of containers that publish now and were
        applied before get hairpin mode (hairpin.py).  An edit that names its
        nodes (TOUCHED) looks at those only: an attach brings its forwards
        with it (set as it is made), so only a full apply scans them all."""
        published = _published(g, touched)
        keys = [] if not published else list(aatts) if touched is None else \
            [k for k in touched if k in aatts]
        for key in keys:
            rec = aatts[key]
            if not rec.get("hairpin") and tuple(key[4:].split("/")[:2]) in published:
                if set_hairpin(self.kernel, rec["host"]):
                    aatts[key] = dict(rec, hairpin=True)

    def _make_network(self, net, action):
        k = self.kernel
        link = k.get_link(net.bridge)
        if link is None:
            # write ahead: a kill between create and alias must not orphan the bridge
            self._a["pending"].append(net.bridge)
            self._save_applied()
            index = k.bridge_add(net.bridge, net.mtu, mark(self.instance, net.key))
            self._a["pending"].remove(net.bridge)
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
        pair is deleted again, so no half-made attachment stays.  Lookups are
        ioctls; a name taken (EEXIST) is sorted out only when it happens."""
        k = self.kernel
        host = att.host_ifname(net.veth_prefix, self.instance)
        br = k.index(net.bridge)
        if br is None:
            raise EmergenceError(f"{att.key}: bridge {net.bridge} is missing; "
                                 "run `emergence net apply` to repair the network")
        from .kernel import NetlinkError
        try:
            k.veth_add(host, br, net.mtu, att.key, att.netns, att.ifname, att.mac)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise
            self._taken(att, host)
            k.veth_add(host, br, net.mtu, att.key, att.netns, att.ifname, att.mac)
        try:
            inner_sock = k.raw(att.netns)
            inner = k.index(att.ifname, att.netns)
            if net.subnets and all(s.version == 4 for s in net.subnets):
                # an IPv4 network: no link-local address, so no DAD, MLD reports
                # or router solicitations, which the bridge floods to every port
                # (at 1,000 containers a steady load of a million deliveries)
                k.no_ipv6_addresses(att.ifname, inner_sock)
            for a in att.addresses:
                s, _ = net.subnet_for(a)
                k.addr_add(inner, a, s.prefixlen, inner_sock, label=att.ifname)
            k.link_set(inner, inner_sock, label=att.ifname, state="up")
            if k.is_up("lo", att.netns) is False:
                k.link_set(1, inner_sock, label="lo", state="up")   # lo is always index 1
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

    def _taken(self, att, host):
        """veth_add said a name is taken: a veth of ours left by an interrupted
        apply (its name is the key's hash) goes; anything else is an error."""
        k = self.kernel
        old = k.get_link(host)
        if old is None:
            raise EmergenceError(f"{att.key}.ifname: {att.ifname} already exists in "
                                 f"{att.netns}; choose another interface name")
        if old["kind"] != "veth":
            raise EmergenceError(f"{att.key}: interface {host} exists and is not "
                                 "Emergence's; remove it")
        k.link_del(host)

    def _gc_ipam(self, g):
        """Addresses recorded in IPAM whose attachment is not in the graph."""
        for name in g.networks:
            for holder in self.ipam.holders(name).values():
                if holder["key"] not in g.attachments:
                    self.ipam.release(name, holder["key"])


def _published(g, touched):
    """(network, container) of the forwards of G (those of TOUCHED keys when
    given: an edit's, O(1) whatever the number of forwards)."""
    forwards = g.forwards.values() if touched is None else \
        [g.forwards[k] for k in touched if k.startswith("pf:") and k in g.forwards]
    return {(p.network, p.container) for p in forwards}
