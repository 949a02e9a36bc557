"""Apply: the difference between the desired graph and what was applied (or,
when asked, what the kernel holds) becomes the matching minimal operations.

Two journals live in the state directory (journal.py: a snapshot and an
append-only log each, one line per edit):
  graph     the desired graph, node by node (addresses once IPAM gives them)
  applied   what has been applied, node by node, plus the nft digest
A change is computed from these two, and an edit that names its nodes
(attach, detach, a reconcile of dirty keys) looks at those nodes only: it
reads, plans and writes O(1) whatever the size of the graph.  A Relay keeps
both in memory between calls and rereads only what another process
appended.  A full compare (`check`) also reads the kernel for the nodes
asked, catching drift made behind Relay's back.

Order: removals (routes, attachments, networks), then additions (networks,
attachments, routes), then one nft transaction.  Every addition is checked
before anything changes (a bridge that is not ours, a missing netns); an
attachment that fails midway is deleted again (deleting the host end of a
veth deletes both ends), and the applied journal is written with what was
done, so a later apply converges from any interruption, a kill included.
"""

import fcntl
import os

from .. import counters
from ..errors import EmergenceError
from . import nft
from .graph import Attachment, Graph, Network
from .ipam import IPAM
from .journal import Journal
from .kernel import ALIAS_PREFIX, EEXIST, Kernel, in_netns, netns_identity

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


class Tracked(dict):
    """A dict that remembers which keys were set or deleted since last asked."""

    def __init__(self, *a):
        super().__init__(*a)
        self.dirty = set()

    def __setitem__(self, k, v):
        self.dirty.add(k)
        super().__setitem__(k, v)

    def __delitem__(self, k):
        self.dirty.add(k)
        super().__delitem__(k)


APPLIED_TABLES = (("networks", "net:"), ("attachments", ""), ("routes", ""))


class Relay:
    def __init__(self, state_dir=None, host_netns=None):
        self.state_dir = state_dir or default_state()
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.kernel = Kernel(host_netns)
        self.ipam = IPAM(self.state_dir)
        self._lock_fd = None
        self._gj = Journal(self._path("graph"))
        self._aj = Journal(self._path("applied"))
        self._g = None     # the desired graph, as the graph journal says
        self._a = None     # the applied record, as the applied journal says

    # ---- state -------------------------------------------------------------------

    def _path(self, name):
        return os.path.join(self.state_dir, name)

    def _load(self):
        """Bring the cached graph and applied record up to date (under the lock)."""
        if self._g is None:
            self._migrate()
        changed = self._gj.refresh()
        if changed is None or self._g is None:
            self._g = Graph.from_items(self._gj.data)
        else:
            for key in changed:
                self._g.set_item(key, self._gj.data.get(key))
        changed = self._aj.refresh()
        if changed is None or self._a is None:
            d = self._aj.data
            self._a = {"nft": d.get("nft", ""), "pending": list(d.get("pending", []))}
            for table, _ in APPLIED_TABLES:
                self._a[table] = Tracked()
            # the attachments' records, the many, in one update
            dict.update(self._a["attachments"], {k: rec for k, rec in d.items()
                                                 if k.startswith("att:") and rec is not None})
            for key, rec in d.items():
                if not key.startswith("att:"):
                    self._set_applied(key, rec)
        else:
            for key in changed:
                self._set_applied(key, self._aj.data.get(key))
        for table, _ in APPLIED_TABLES:
            self._a[table].dirty.clear()

    def _migrate(self):
        """State written whole by earlier versions (graph.json, applied.json)
        becomes the journals' first line, once; the old files are kept aside."""
        for name, journal in (("graph", self._gj), ("applied", self._aj)):
            old = self._path(name + ".json")
            if not os.path.exists(old) or os.path.exists(journal.snap_path) \
                    or os.path.exists(journal.log_path):
                continue
            import json  # here: `json` costs a cold CNI call ~3 ms
            with open(old) as f:
                doc = json.load(f)
            if name == "graph":
                items = {k: n.to_dict() for k, n in Graph.from_dict(doc, old).items()}
            else:
                items = {k: doc[k] for k in ("nft", "pending") if doc.get(k)}
                for table, prefix in APPLIED_TABLES:
                    items.update({prefix + k: v for k, v in doc.get(table, {}).items()})
            journal.refresh()
            journal.commit(items)
            os.rename(old, old + ".migrated")

    def _set_applied(self, key, rec):
        if key in ("nft", "pending"):
            self._a[key] = rec if rec is not None else ("" if key == "nft" else [])
            return
        table = {"net": "networks", "att": "attachments", "route": "routes"}[key.split(":")[0]]
        k = key[4:] if table == "networks" else key
        if rec is None:
            dict.pop(self._a[table], k, None)
        else:
            dict.__setitem__(self._a[table], k, rec)

    def _locked_load(self):
        if self._lock_fd is not None:
            self._load()
            return
        with self:
            self._load()

    def desired(self):
        """A copy of the desired graph (the caller may change it)."""
        self._locked_load()
        return self._g.copy()

    def network(self, name):
        """The desired network NAME, or None."""
        self._locked_load()
        return self._g.networks.get(name)

    def attachment(self, key):
        self._locked_load()
        return self._g.attachments.get(key)

    def applied(self):
        """What has been applied (read only)."""
        self._locked_load()
        return self._a

    def _save_graph(self, g, touched):
        """Write the nodes of G that changed: TOUCHED keys, or all when None."""
        data = self._gj.data
        if touched is None:
            keys = set(data)
            keys.update(k for k, _ in g.items())
        else:
            keys = touched
        changes = {}
        for key in keys:
            node = g.get(key)
            d = node.to_dict() if node is not None else None
            if data.get(key) != d:
                changes[key] = d
        # Synced only when it holds configuration (networks, static routes):
        # attachments and forwards belong to containers, whose netns a power
        # cut ends as well (their lines survive a kill, being in the page
        # cache; after a reboot `gc` and the reconciler release them).
        self._gj.commit(changes, sync=any(k.startswith(("net:", "route:")) for k in changes))
        self._g = g

    def _save_applied(self):
        a, data = self._a, self._aj.data   # (not synced: it describes the kernel,
        # which a reboot empties as well; a lost line means the next apply redoes a node)
        changes = {}
        for table, prefix in APPLIED_TABLES:
            t = a[table]
            for k in t.dirty:
                changes[prefix + k] = t.get(k)
            t.dirty.clear()
        for k in ("nft", "pending"):
            if data.get(k, "" if k == "nft" else []) != a[k]:
                changes[k] = a[k] if k == "nft" else list(a[k])
        changes = {k: v for k, v in changes.items() if data.get(k) != v}
        self._aj.commit(changes, sync=False)

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

    def edit(self, change, touched=None, full=False, committed=None):
        """CHANGE(graph) the desired graph in place and apply.  TOUCHED: the
        keys CHANGE may add, change or remove (None: any).  COMMITTED() is
        called once the edit is on disk and only kernel work is left.  Returns
        (CHANGE's result, changes)."""
        with self:
            self._load()
            g = self._g
            try:
                result = change(g)
                changes = self._apply(g, full=full, touched=touched, committed=committed)
            except BaseException:
                self._g = self._a = None    # reload: the edit may be half done in memory
                raise
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
            old = dict(g.attachments.items())
            g.attachments.clear()  # the same table: a later refresh puts state in it
            g.attachments.update(keep)
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
        att = Attachment(network, container, netns, ifname, addresses, mac, origin)

        def add(g):
            if network not in g.networks:
                raise EmergenceError(f"no network {network!r}; create it with "
                                     "`emergence net create`")
            old = g.attachments.get(att.key)
            if old is not None:
                if old.netns == netns and (not addresses or old.addresses == att.addresses):
                    return old
                del g.attachments[att.key]
            g.add_attachment(att)
            for pf in forwards:
                g.add_forward(pf)
            return att
        self.edit(add, touched={att.key, *(pf.key for pf in forwards)})
        return self._g.attachments[att.key]

    def detach(self, network, container, ifname=None, committed=None):
        """Detach (idempotent); return the keys removed.  COMMITTED: as for edit."""
        prefix = f"att:{network}/{container}/"

        def of_container(g):
            # by key alone (an interface name has no slash), so no node is decoded
            return [k for k in g.attachments if k.startswith(prefix) and "/" not in k[len(prefix):]]
        touched = set()

        def rm(g):
            mine = of_container(g)
            gone = [k for k in mine if ifname is None or k == prefix + ifname]
            for k in gone:
                del g.attachments[k]
            touched.update(gone)
            if len(gone) == len(mine):    # the container's last interface on NETWORK
                for k in [k for k, p in g.forwards.items()
                          if p.network == network and p.container == container]:
                    del g.forwards[k]
                    touched.add(k)
            return gone
        return self.edit(rm, touched=touched, committed=committed)[0]

    def apply(self, graph=None, full=False, check=None):
        """Make the kernel what GRAPH (default: the desired graph) says.  CHECK:
        keys to read back from the kernel (and the only ones looked at,
        besides what is not yet applied or no longer desired)."""
        with self:
            self._load()
            g = graph.copy() if graph is not None else self._g
            touched = set(check) if check is not None and graph is None and not full else None
            try:
                return self._apply(g, full=full, check=check, touched=touched)
            except BaseException:
                self._g = self._a = None
                raise

    def diff(self, graph=None, full=False):
        """What apply would do, changing nothing (addresses not yet given show as such)."""
        with self:
            self._load()
            g = graph if graph is not None else self._g
            return self._plan(g, self._a, full, None)[0]

    def gc(self):
        """Release attachments whose netns is gone, and addresses nobody holds."""
        with self:
            self._load()
            return self._apply(self._g, full=False, check=set(), gc=True)

    # ---- the diff ----------------------------------------------------------------

    def _allocate(self, g, applied, keys):
        done = applied["attachments"]
        for key in keys:
            a = g.attachments[key]
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

    @staticmethod
    def _att_keys(g, applied, touched):
        """The attachments a plan looks at: TOUCHED, and those not yet applied
        (an interrupted apply) -- set differences of the key views, cheap at
        any size.  All of them when TOUCHED is None."""
        if touched is None:
            return list(g.attachments)
        keys = {k for k in touched if k in g.attachments}
        keys.update(g.attachments.keys() - applied["attachments"].keys())
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
            elif rec["att"] != att.to_dict() or att.network in replaced_nets:
                changes.append(Change("replace", key, "changed"))
            elif observe(key):
                why = self._observe_attachment(g.networks[att.network], att, rec)
                if why:
                    changes.append(Change("repair", key, why))
        for key in sorted(aatts.keys() - g.attachments.keys()):
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
        body = nft.ruleset(g, dead)
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

    def _apply(self, g, full=False, check=None, gc=False, touched=None, committed=None):
        before = self._gj.data
        applied = self._a
        if gc or full:
            touched = None
        keys = self._att_keys(g, applied, touched)
        try:
            self._allocate(g, applied, keys)
            from .graph import validate
            validate(g, None if touched is None else set(keys) | {
                k for k in touched if k.startswith("pf:")})
            changes, dead, body = self._plan(g, applied, full, check, gc, touched)
            by = {c.key: c for c in changes}
            self._preflight(g, applied, by)
        except BaseException:
            # bad input changes nothing: not the graph, not IPAM
            for key in keys:
                if key not in before:
                    self.ipam.release(g.attachments[key].network, key)
            raise
        save = None if touched is None else set(touched) | set(keys)
        # release dead attachments first: they are not in the kernel any more
        for key in dead:
            a = g.attachments.pop(key)
            self.ipam.release(a.network, key)
            for pk in [pk for pk, p in g.forwards.items()
                       if (p.network, p.container) == (a.network, a.container)]:
                del g.forwards[pk]
                if save is not None:
                    save.add(pk)
        self._save_graph(g, save)
        if gc:
            self._gc_ipam(g)
        # a removed attachment's addresses are free once the graph says so:
        # any later edit takes the lock first, and removals run before additions
        for c in changes:
            if c.action == "remove" and c.key in applied["attachments"]:
                self.ipam.release(applied["attachments"][c.key]["att"]["network"], c.key)
        if committed is not None:
            committed()
        if not changes:
            return changes
        ops = len(self.kernel.ops)
        try:
            self._execute(g, applied, by, body, touched)
        finally:
            self._save_applied()
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
        for key, c in by.items():
            att = g.attachments.get(key)
            if att and c.action in ("add", "replace", "repair") and not os.path.exists(att.netns):
                raise EmergenceError(f"{key}.netns: {att.netns} does not exist; "
                                     "is the container running?")

    def _execute(self, g, applied, by, body, mine=None):
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
        gone_nets = any(c.key.startswith("net:") and c.action in ("remove", "replace")
                        for c in by.values())
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
        # an attachment that fails holds up no other: the rest still go in, and
        # the error is raised after, if it is about a key the caller named
        # (MINE; None: any) -- another's is left to the reconciler's retries
        failed = None
        for key in sorted(g.attachments.keys() - aatts.keys()):
            att, c = g.attachments[key], by.get(key)
            if c is None or c.action != "release":
                net = g.networks[att.network]
                try:
                    host = self._make_attachment(net, att)
                except Exception as e:  # noqa: BLE001 - raised below
                    if failed is None and (mine is None or key in mine):
                        failed = e
                    continue
                aatts[key] = {"att": att.to_dict(), "host": host}
        for key, r in g.routes.items():
            if key not in aroutes:
                k.route_add(k.host, r.via, r.destination, label="host")
                aroutes[key] = r.to_dict()
        want = nft.digest(body) if body else ""
        if "nft:emergence" in by:
            k.nft(nft.script(body))
            applied["nft"] = want
        if failed is not None:
            raise failed

    def _make_network(self, net, action):
        k = self.kernel
        link = k.get_link(net.bridge)
        if link is None:
            # write ahead: a kill between create and alias must not orphan the bridge
            self._a["pending"].append(net.bridge)
            self._save_applied()
            index = k.bridge_add(net.bridge, net.mtu, net.key)
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
        host = att.host_ifname(net.veth_prefix)
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

    # ---- views -------------------------------------------------------------------------

    def show(self):
        g = self.desired()
        doc = g.to_dict()
        doc["applied"] = {k: dict(v) if isinstance(v, dict) else v
                          for k, v in self.applied().items()}
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
