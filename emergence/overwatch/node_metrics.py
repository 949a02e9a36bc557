"""Metrics of Emergence itself on this node: containers by state, the image
store's size (blob bytes, summed at most once a minute: a walk is not free),
and the events counted by other processes (pulls, Relay applies: see
emergence.counters)."""

import os
import select
import time

from ..runtime import state

STATES = ("creating", "created", "running", "paused", "stopped")


class _Known:
    """What a container's state file said, and a pidfd on its init.  The status
    is the runtime's (state.Container.status), reached without re-reading the
    file: a `creating` record asks the runtime whether its claim is held, and an
    init with exec.fifo still there asks state.at_barrier; each answer that
    cannot change back (the create died, the init left the barrier) is kept."""

    def __init__(self, root, cid, key):
        self.key, self.pidfd, self.dead, self.frozen_fd = key, None, False, None
        self.claim = self.fifo = None
        self.pid = 0
        c = state.Container.open(root, cid, lock=False, tolerate_corrupt=True)
        try:
            if c.data.get("status") == "creating":
                self.claim, c = c, None  # its directory stays open: the claim is its lock
                return
            freezer = c.data.get("freezer")
            if c.pid:
                try:  # the pidfd first: the start time checked after it proves it is this init
                    self.pidfd = os.pidfd_open(c.pid)
                except OSError:
                    pass
            if self.pidfd is None or not c.init_alive():
                self.close()
                self.dead = True
                return
            self.pid = c.pid
            if os.path.exists(os.path.join(c.dir, state.FIFO)):
                self.fifo = os.path.join(c.dir, state.FIFO)
            if freezer:  # freezer.state (v1) or cgroup.freeze (v2), as state.is_frozen
                try:
                    self.frozen_fd = os.open(freezer, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    pass
        finally:
            if c is not None:
                c.close()

    def status(self):
        """state.Container.status() without re-reading the state file."""
        if self.claim is not None:
            status = self.claim.status()
            if status == "creating" or self.claim.data.get("status") != "creating":
                return status  # at work, or done just now: its new file is read next time
            self.close()  # a create that died; it stays stopped until the file changes
            self.dead = True
        if not self.dead:
            p = select.poll()
            p.register(self.pidfd, select.POLLIN)
            if p.poll(0):  # the init exited: it stays stopped until the file changes
                self.close()
                self.dead = True
        if self.dead:
            return "stopped"
        if self.fifo is not None:
            # the pidfd says the init is ours, so its executable is what it runs
            if os.path.exists(self.fifo) and state.at_barrier(self.pid):
                return "created"
            self.fifo = None  # released (a start that died may leave the fifo): for good
        if self.frozen_fd is not None:
            try:
                if os.pread(self.frozen_fd, 64, 0).strip() in (b"FROZEN", b"1"):
                    return "paused"
            except OSError:
                pass
        return "running"

    def close(self):
        for fd in (self.pidfd, self.frozen_fd):
            if fd is not None:
                os.close(fd)
        self.pidfd = self.frozen_fd = None
        if self.claim is not None:
            self.claim.close()
            self.claim = None


class States:
    """Containers by state, for every scrape.  A state file is parsed again only
    when it was replaced (the runtime writes it by rename); what changes without
    a write (the init's exit, `start`, `pause`, a create that died) is checked
    each time: a poll, and a stat and a readlink while the init may be at the
    start barrier, a read while it may be paused, a try of the lock while the
    record says creating: 100 containers cost ~1 ms, not the ~15 ms of opening each."""

    def __init__(self, root):
        self.root = root
        self.known = {}

    def counts(self):
        counts = dict.fromkeys(STATES, 0)
        seen = {}
        for cid in state.list_ids(self.root):
            k = self.known.pop(cid, None)
            try:
                st = os.stat(os.path.join(self.root, cid, state.STATE))
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                if k is None or k.key != key:
                    if k is not None:
                        k.close()
                    k = None
                    k = _Known(self.root, cid, key)
                status = k.status()
            except Exception:  # deleted (or not written yet) while we looked
                if k is not None:
                    k.close()
                continue
            seen[cid] = k
            counts[status] = counts.get(status, 0) + 1
        for k in self.known.values():  # deleted since the last scrape
            k.close()
        self.known = seen
        return counts

    def close(self):
        for k in self.known.values():
            k.close()
        self.known = {}


class StoreSize:
    def __init__(self, store_root=None, every=60.0):
        self.store_root = store_root
        self.every = every
        self.value = None
        self.when = -every

    def blob_dir(self):
        if self.store_root is None:
            from .. import default_store
            self.store_root = default_store()
        return os.path.join(self.store_root, "blobs", "sha256")

    def get(self):
        now = time.monotonic()
        if now - self.when >= self.every:
            self.when = now
            try:
                with os.scandir(self.blob_dir()) as it:
                    self.value = sum(e.stat().st_size for e in it if e.is_file())
            except OSError:
                self.value = None  # no store on this node: absent, not zero
        return self.value


# counters: name -> (help, label, the label's values always shown, at zero if unseen)
COUNTERS = {
    "emergence_share_pulls_total": ("Pulls finished on this node, by where their bytes "
                                    "came from (store: nothing to fetch)", "source",
                                    ("peer", "upstream", "mixed", "store")),
    "emergence_share_pull_bytes_total": ("Bytes fetched by pulls, from peers or the upstream "
                                         "registry", "source", ("peer", "upstream")),
    "emergence_relay_applies_total": ("Relay applies that changed the kernel", None, ()),
    "emergence_relay_operations_total": ("Kernel operations issued by Relay applies "
                                         "(netlink requests, nft transactions), by kind",
                                         "kind", ()),
}


def counter_families(totals):
    """prometheus_client families for the COUNTERS, from {(name, "label=value"): n}."""
    from prometheus_client.core import CounterMetricFamily
    for name, (doc, label, shown) in COUNTERS.items():
        fam = CounterMetricFamily(name[:-6], doc, labels=[label] if label else None)
        values = {v: 0 for v in shown} if label else {"": 0}
        for (n, lab), amount in totals.items():
            if n == name:
                value = lab.partition("=")[2]
                values[value] = values.get(value, 0) + amount
        for value, amount in sorted(values.items()):
            fam.add_metric([value] if label else [], amount)
        yield fam


class NodeCollector:
    """prometheus_client Collector for emergence_containers{state}, the store size
    and the node's event counters."""

    def __init__(self, root, store_root=None, counters=None, log=lambda m: None):
        from ..counters import Totals
        self.root = root
        self.states = States(root)
        self.store = StoreSize(store_root)
        self.totals = Totals(counters)
        self.warned = False
        self.log = log

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        g = GaugeMetricFamily("emergence_containers", "Containers on this node by state",
                              labels=["state"])
        for st, n in self.states.counts().items():
            g.add_metric([st], n)
        yield g
        size = self.store.get()
        if size is not None:
            yield GaugeMetricFamily("emergence_store_bytes",
                                    "Bytes of blobs in the node's image store", value=size)
        try:
            totals = self.totals.read()
        except OSError as e:  # a bad counters file: the rest of /metrics still goes out
            if not self.warned:
                self.warned = True
                self.log(f"overwatch: counters {self.totals.path} unreadable ({e}); "
                         "pull and Relay counters left out")
            return
        yield from counter_families(totals)
