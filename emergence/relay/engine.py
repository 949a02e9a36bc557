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
from .execute import Executor
from .graph import Attachment, Graph, Network
from .instance import resolve as resolve_instance
from .instance import table as nft_table
from .ipam import IPAM
from .journal import Journal
from .kernel import Kernel, in_netns
from .plan import Change, Planner

DEFAULT_STATE = "/var/lib/emergence/relay"


def default_state():
    return os.environ.get("EMERGENCE_RELAY_STATE") or DEFAULT_STATE


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


APPLIED_TABLES = (("networks", "net:"), ("attachments", ""), ("routes", ""), ("peers", ""))


class Relay(Planner, Executor):
    def __init__(self, state_dir=None, host_netns=None, instance=None):
        self.state_dir = state_dir or default_state()
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.instance = resolve_instance(self.state_dir, instance, DEFAULT_STATE)
        self.table = nft_table(self.instance)
        self.allow_overlap = False   # routes over the host's (apply_file's --allow-overlap)
        self.kernel = Kernel(host_netns)
        self.ipam = IPAM(self.state_dir)
        self._lock_fd = None
        self._gj = Journal(self._path("graph"))
        self._aj = Journal(self._path("applied"))
        self._g = None     # the desired graph, as the graph journal says
        self._a = None     # the applied record, as the applied journal says
        # attachment keys desired but not applied, and applied but not desired
        # (kept key by key from the journals' changes: _note_pending)
        self._unapplied = self._orphans = None
        self._moved = set()

    # ---- state -------------------------------------------------------------------

    def _path(self, name):
        return os.path.join(self.state_dir, name)

    def _load(self):
        """Bring the cached graph and applied record up to date (under the lock)."""
        if self._g is None:
            self._migrate()
        changed = self._gj.refresh()
        whole = changed is None or self._g is None or self._a is None
        if changed is None or self._g is None:
            self._g = Graph.from_items(self._gj.data)
        else:
            for key in changed:
                self._g.set_item(key, self._gj.data.get(key))
        seen = set(changed or ())
        changed = self._aj.refresh()
        whole = whole or changed is None
        seen.update(changed or ())
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
        if whole or self._unapplied is None:
            self._count_pending()
        else:
            self._note_pending(seen)

    def _count_pending(self):
        """Which attachments are desired but not applied, and the reverse: the
        whole comparison, after a full load or an edit of unnamed keys."""
        g, a = self._g.attachments, self._a["attachments"]
        self._unapplied, self._orphans = set(g.keys() - a.keys()), set(a.keys() - g.keys())

    def _note_pending(self, keys):
        """The same for KEYS only (the rest did not change)."""
        g, a = self._g.attachments, self._a["attachments"]
        for k in keys:
            if not k.startswith("att:"):
                continue
            (self._unapplied.add if k in g and k not in a else self._unapplied.discard)(k)
            (self._orphans.add if k in a and k not in g else self._orphans.discard)(k)

    def _pending_for(self, g, touched):
        """(unapplied, orphans) as they are once an edit changed only TOUCHED
        of the loaded graph; None when they must be computed whole."""
        if touched is None or self._unapplied is None or g is not self._g:
            return None
        ga, aa = g.attachments, self._a["attachments"]
        t = [k for k in touched if k.startswith("att:")]
        return ((self._unapplied.difference(t) | {k for k in t if k in ga and k not in aa}),
                (self._orphans.difference(t) | {k for k in t if k in aa and k not in ga}))

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
                items = {k: n.to_dict() for k, n in
                         Graph.from_dict(doc, old, trusted=True).items()}
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
        table = {"net": "networks", "att": "attachments", "route": "routes",
                 "peer": "peers"}[key.split(":")[0]]
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
        self._moved.update(a["attachments"].dirty)
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

    def remove_network(self, name, force=False):
        """`net rm`: refused while containers are attached, unless FORCE."""
        from .owners import remove_network
        return self.edit(lambda g: remove_network(g, name, force))[1]

    def apply_file(self, new, owner, prune_all=False, force=False, allow_overlap=False):
        """`net apply FILE`: NEW's nodes (all owned by OWNER, the file's path)
        replace what OWNER owns; everything else stays (owners.py).
        ALLOW_OVERLAP: routes may cover the host's (networks say it themselves)."""
        from .owners import declare
        self.allow_overlap = allow_overlap
        try:
            return self.edit(lambda g: declare(g, new, owner, prune_all, force))[1]
        finally:
            self.allow_overlap = False

    def replace_declared(self, new):
        """`net apply --prune-all` (as before owners existed)."""
        owner = next((n.owner for _, n in new.items()), "cli")
        return self.apply_file(new, owner, prune_all=True, force=True)

    def attach(self, network, container, netns, ifname="eth0", addresses=(), mac=None,
               forwards=(), origin="attach", owner=None):
        """Attach a container's netns to NETWORK (idempotent); return the
        Attachment.  OWNER (default: by ORIGIN, cni:ID, run:ID or cli) owns
        it and FORWARDS."""
        att = Attachment(network, container, netns, ifname, addresses, mac, origin, owner)
        for pf in forwards:
            pf.owner = att.owner

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

    # ---- doing it ----------------------------------------------------------------------

    def _apply(self, g, full=False, check=None, gc=False, touched=None, committed=None):
        if gc or full:
            touched = None
        self._pending = self._pending_for(g, touched)
        self._moved = set()
        try:
            return self._apply_pending(g, full, check, gc, touched, committed)
        finally:
            pending, self._pending = self._pending, None
            if self._g is not None and self._a is not None:
                if pending is None:
                    self._count_pending()
                else:   # what the edit named or found pending, or the kernel work moved
                    self._note_pending(set(touched) | pending[0] | pending[1] | self._moved)

    def _apply_pending(self, g, full, check, gc, touched, committed):
        before = self._gj.data
        applied = self._a
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
        # an attachment removed before it was ever applied (its ADD failed in
        # the kernel) holds a lease nothing else frees
        unapplied = [(before[k]["network"], k) for k in (before if touched is None else touched)
                     if k.startswith("att:") and k in before and before[k] is not None
                     and k not in g.attachments and k not in applied["attachments"]]
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
        for network, key in unapplied:
            self.ipam.release(network, key)
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

    # ---- views -------------------------------------------------------------------------

    def show(self):
        g = self.desired()
        doc = g.to_dict()
        doc["applied"] = {k: dict(v) if isinstance(v, dict) else v
                          for k, v in self.applied().items()}
        return doc


def network_from_options(name, opts, instance=""):
    from .graph import network_from_dict
    d = {"owner": "cli"}
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
    if opts.get("allow-overlap"):
        d["allow_overlap"] = True
    return network_from_dict(name, d, f"network {name}", instance)


__all__ = ["Relay", "Network", "Change", "in_netns"]
