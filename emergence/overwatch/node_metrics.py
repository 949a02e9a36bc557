"""Metrics of Emergence itself on this node: containers by state, the image
store's size (blob bytes, summed at most once a minute: a walk is not free),
and the events counted by other processes (pulls, Relay applies: see
emergence.counters)."""

import os
import time

from ..runtime import state

STATES = ("creating", "created", "running", "paused", "stopped")


def containers_by_state(root):
    counts = dict.fromkeys(STATES, 0)
    for cid in state.list_ids(root):
        try:
            with state.Container.open(root, cid, lock=False, tolerate_corrupt=True) as c:
                counts[c.status()] = counts.get(c.status(), 0) + 1
        except Exception:  # deleted while we looked
            continue
    return counts


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
        self.store = StoreSize(store_root)
        self.totals = Totals(counters)
        self.warned = False
        self.log = log

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        g = GaugeMetricFamily("emergence_containers", "Containers on this node by state",
                              labels=["state"])
        for st, n in containers_by_state(self.root).items():
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
