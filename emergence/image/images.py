"""Image verbs on the store: images, inspect, tag, rmi, gc, verify."""

import os

from .. import fastjson
from ..errors import EmergenceError
from .store import MANIFEST, Store


def images(store_root, fmt="table"):
    store = Store(store_root, create=False)
    rows = []
    for ref, desc in store.images():
        try:
            manifest = store.read_json(desc["digest"])
            size = sum(layer["size"] for layer in manifest["layers"])
            layers = len(manifest["layers"])
        except (EmergenceError, KeyError, TypeError):  # an index has no layers
            size, layers = -1, -1
        rows.append({"ref": ref, "digest": desc["digest"], "layers": layers, "size": size})
    if fmt == "json":
        return fastjson.dumps(rows) + "\n"
    out = [("REF", "DIGEST", "LAYERS", "SIZE")]
    out += [(r["ref"], r["digest"][7:19], str(r["layers"]), _human(r["size"])) for r in rows]
    widths = [max(len(x[i]) for x in out) for i in range(4)]
    return "".join("   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n"
                   for row in out)


def _human(n):
    if n < 0:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024


def inspect(store_root, image):
    store = Store(store_root, create=False)
    desc = store.resolve(image)
    manifest = store.read_json(desc["digest"])
    return {"digest": desc["digest"], "manifest": manifest,
            "config": store.read_json(manifest["config"]["digest"])}


def tag(store_root, image, new_ref):
    store = Store(store_root, create=False)
    desc = store.resolve(image)
    if ":" not in new_ref:
        new_ref += ":latest"
    store.set_ref(new_ref, {"mediaType": desc.get("mediaType", MANIFEST),
                            "digest": desc["digest"], "size": desc["size"]})


def rmi(store_root, ref):
    store = Store(store_root, create=False)
    if ":" not in ref:
        ref += ":latest"
    store.remove_ref(ref)


def _pipeline_results(store, drop):
    """The blobs the CI stage's cache entries (STORE/pipeline/cache/KEY.json)
    name: kept as roots, or, when DROP, the entries removed (their blobs go)."""
    top = os.path.join(store.root, "pipeline", "cache")
    keep = set()
    try:
        names = os.listdir(top)
    except OSError:
        return keep
    for name in names:
        path = os.path.join(top, name)
        if drop:
            os.unlink(path)
            continue
        try:
            with open(path, "rb") as f:
                entry = fastjson.loads(f.read())
            keep.update(entry[k] for k in ("outputs", "log"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return keep


TEMP_GRACE = 3600  # a temp file untouched this long (seconds) belongs to a dead writer


def gc(store_root, pipeline=False):
    """Remove blobs no image references (what tagged and pushed manifests, the
    indexes and the referrers they list, point at: Store.referenced) nor,
    unless PIPELINE, a pipeline's cached result, and temp files no writer has
    touched for TEMP_GRACE; return (count, bytes)."""
    import time

    from .store import TEMP_PREFIXES
    store = Store(store_root, create=False)
    with store.locked():
        if pipeline:  # the results the pipeline tagged for its peers (emergence-ci-result:KEY)
            from .store import REF, canonical
            idx = store.index()
            idx["manifests"] = [m for m in idx.get("manifests", []) if not m.get(
                "annotations", {}).get(REF, "").startswith("emergence-ci-result:")]
            store._write_file("index.json", canonical(idx))
        keep = store.referenced() | _pipeline_results(store, pipeline)
        removed = freed = 0
        old = time.time() - TEMP_GRACE
        temps = [os.path.join(store.blob_dir, n) for n in os.listdir(store.blob_dir)
                 if n.startswith(TEMP_PREFIXES)]
        for path in [p for d, p in store.blobs() if d not in keep] + temps:
            try:
                st = os.lstat(path)
                if path in temps and st.st_mtime > old:
                    continue  # a build or a push is writing it now
                os.unlink(path)
            except FileNotFoundError:
                continue
            freed += st.st_size
            removed += 1
        cache = os.path.join(store.root, "cache")
        for name in os.listdir(cache):
            try:
                with open(os.path.join(cache, name), "rb") as f:
                    entry = fastjson.loads(f.read())
                if entry["digest"] not in keep:
                    os.unlink(os.path.join(cache, name))
            except (OSError, ValueError, KeyError):
                os.unlink(os.path.join(cache, name))
    return removed, freed


def verify(store_root):
    """Re-hash every blob; return [(digest, problem)] (empty when all is well)."""
    import hashlib
    store = Store(store_root, create=False)
    problems = []
    blobs = sorted(store.blobs())
    for digest, path in blobs:
        algo, _, name = digest.partition(":")
        h = hashlib.new(algo)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != name:
            problems.append((digest, "content does not match its digest"))
    present = {d for d, _ in blobs}
    for digest in sorted(store.referenced() - present):
        problems.append((digest, "referenced but missing"))
    return problems
