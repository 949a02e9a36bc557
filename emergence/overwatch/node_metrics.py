"""Metrics of Emergence itself on this node: containers by state and the image
store's size (blob bytes, summed at most once a minute: a walk is not free)."""

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


class NodeCollector:
    """prometheus_client Collector for emergence_containers{state} and the store size."""

    def __init__(self, root, store_root=None):
        self.root = root
        self.store = StoreSize(store_root)

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
