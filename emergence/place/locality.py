"""Where the bytes already are: each worker publishes what its image store
holds (layer digests and sizes, and which layers each image needs), and the
leader prices a host by the seconds it would spend fetching the layers it
lacks from the peers that hold them, at the bandwidth measured to them.

The record is small and changes rarely: digests are cut to 16 hex digits
(a collision only misprices a fetch), it is recomputed only when the store's
index.json changes, and written to etcd (`holdings/NODE`, on the worker's
lease) only when it differs from the last one written.
"""

import os

DIGITS = 16
DEFAULT_BANDWIDTH = 125e6  # bytes/s, when nothing was measured to a holder
DEFAULT_RUN = 60.0         # seconds, when a task says nothing of its length


def _short(digest):
    return digest.split(":", 1)[-1][:DIGITS]


def holdings(store_root):
    """{"layers": {short digest: size}, "images": {ref: [short digests]}} of the
    store at STORE_ROOT (an OCI layout), or None if there is none."""
    index = os.path.join(store_root or "", "index.json")
    if not store_root or not os.path.exists(index):
        return None
    from ..errors import EmergenceError
    from ..image.store import Store
    try:
        store = Store(store_root, create=False)
        refs = store.images()
    except (EmergenceError, OSError, ValueError):
        return None
    layers, images = {}, {}
    for ref, desc in refs:
        try:
            manifest = store.read_json(desc["digest"])
        except (EmergenceError, OSError, ValueError, KeyError):
            continue
        mine = []
        for layer in manifest.get("layers", []):
            d = _short(layer["digest"])
            if store.has(layer["digest"]):
                layers[d] = int(layer.get("size", 0))
            mine.append(d)
        if ref:
            images[ref] = mine
    return {"layers": layers, "images": images}


class Publisher:
    """Recompute a worker's holdings when its store's index changes."""

    def __init__(self, store_root):
        self.root = store_root
        self.stamp = None
        self.last = None

    def changed(self):
        """The new holdings if they differ from the last ones returned, else None."""
        if not self.root:
            return None
        try:
            st = os.stat(os.path.join(self.root, "index.json"))
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp == self.stamp:
            return None
        self.stamp = stamp
        now = holdings(self.root) if stamp else None
        if now == self.last:
            return None
        self.last = now
        return now or {"layers": {}, "images": {}}


def image_layers(image, all_holdings):
    """{short digest: size} of IMAGE's layers, as any node that has it knows them."""
    for h in all_holdings.values():
        names = h.get("images", {})
        refs = [image] if ":" in image else [image, f"{image}:latest"]
        for ref in refs:
            if ref in names:
                sizes = {}
                for d in names[ref]:
                    for other in all_holdings.values():
                        if d in other.get("layers", {}):
                            sizes[d] = other["layers"][d]
                            break
                return sizes
    return {}


def fetch_seconds(host, layers, all_holdings):
    """Seconds HOST would spend fetching the LAYERS it does not hold, each from
    the holder with the best bandwidth measured from HOST (DEFAULT_BANDWIDTH
    when none was measured), and the bytes missing."""
    mine = all_holdings.get(host["name"], {}).get("layers", {})
    bw = host.get("bandwidth", {})
    seconds = missing = 0.0
    for d, size in layers.items():
        if d in mine:
            continue
        holders = [n for n, h in all_holdings.items()
                   if n != host["name"] and d in h.get("layers", {})]
        rate = max((bw[n] for n in holders if bw.get(n)), default=DEFAULT_BANDWIDTH)
        seconds += size / rate
        missing += size
    return seconds, missing


def annotate(hosts, task, all_holdings, run_seconds=None):
    """HOSTS with `fetch` (seconds) and `fetch_share` (the share of the task's
    time it would spend fetching: fetch / (fetch + run)) for an image TASK;
    unchanged for other tasks or when no node knows the image."""
    image = task.get("image")
    if not image or not all_holdings:
        return hosts
    layers = image_layers(image, all_holdings)
    if not layers:
        return hosts
    run = run_seconds or task.get("expect") or DEFAULT_RUN
    out = []
    for h in hosts:
        s, missing = fetch_seconds(h, layers, all_holdings)
        out.append(dict(h, fetch=s, fetch_bytes=missing, fetch_share=s / (s + run)))
    return out
