"""Image verbs on the store: images, inspect, tag, rmi, gc, verify; and
`run --image`, which starts a Nix-built image straight from /nix/store."""

import os

from . import fastjson
from .errors import EmergenceError
from .store import MANIFEST, Store


def images(store_root, fmt="table"):
    store = Store(store_root, create=False)
    rows = []
    for ref, desc in store.images():
        try:
            manifest = store.read_json(desc["digest"])
            size = sum(layer["size"] for layer in manifest["layers"])
            layers = len(manifest["layers"])
        except EmergenceError:
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


def gc(store_root):
    """Remove blobs no image references; return (count, bytes)."""
    store = Store(store_root, create=False)
    with store.locked():
        keep = store.referenced()
        removed = freed = 0
        for name in os.listdir(store.blob_dir):
            digest = "sha256:" + name
            if name.startswith(".tmp-") or digest not in keep:
                path = os.path.join(store.blob_dir, name)
                freed += os.lstat(path).st_size
                os.unlink(path)
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
    for name in sorted(os.listdir(store.blob_dir)):
        if name.startswith(".tmp-"):
            continue
        h = hashlib.sha256()
        with open(os.path.join(store.blob_dir, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != name:
            problems.append(("sha256:" + name, "content does not match its digest"))
    present = {"sha256:" + n for n in os.listdir(store.blob_dir)}
    for digest in sorted(store.referenced() - present):
        problems.append((digest, "referenced but missing"))
    return problems


# ---- run --image ------------------------------------------------------------------

def image_bundle(store_root, image, bundle_dir, args=None):
    """A bundle whose rootfs is assembled from the image's own /nix/store paths
    (read-only binds) over an empty writable directory: nothing is unpacked, so
    start-up does not grow with the image's size."""
    from .nixbuild import ANNOTATION_CONTENTS, ANNOTATION_PATHS
    from .unpack import runtime_config
    store = Store(store_root, create=False)
    desc = store.resolve(image)
    manifest = store.read_json(desc["digest"])
    ann = manifest.get("annotations", {})
    if ANNOTATION_PATHS not in ann:
        raise EmergenceError(f"{image} was not built from Nix; make a bundle with "
                             "`emergence bundle` and run that")
    paths = ann[ANNOTATION_PATHS].split()
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise EmergenceError(f"{image} needs {missing[0]}, which is not in this machine's "
                             "/nix/store; build it here or use `emergence bundle`")
    from .nixbuild import farm_entries
    rootfs = os.path.join(bundle_dir, "rootfs")
    os.makedirs(rootfs)
    for name, target in farm_entries(ann.get(ANNOTATION_CONTENTS, "").split()):
        if target is None:
            os.mkdir(os.path.join(rootfs, name))
        else:
            os.symlink(target, os.path.join(rootfs, name))
    os.makedirs(os.path.join(rootfs, "tmp"), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    config = runtime_config(store.read_json(manifest["config"]["digest"]), rootfs, args)
    config["mounts"] += [{"destination": p, "type": "bind", "source": p,
                          "options": ["bind", "ro", "nosuid", "nodev"]} for p in paths]
    with open(os.path.join(bundle_dir, "config.json"), "w") as f:
        f.write(fastjson.dumps(config))
    return bundle_dir


def run_image(root, store_root, image, container_id, args=None, detach=False):
    import shutil

    from .run import run
    bundles = os.path.join(root, ".bundles")
    os.makedirs(bundles, mode=0o700, exist_ok=True)
    bundle = os.path.join(bundles, container_id)
    if os.path.exists(bundle):
        raise EmergenceError(f"container {container_id!r} already exists")
    os.mkdir(bundle)
    ok = False
    try:
        image_bundle(store_root, image, bundle, args)
        code = run(root, container_id, bundle, detach=detach)
        ok = True
        return code
    finally:
        if not (detach and ok):  # a detached container's bundle goes with `delete`
            shutil.rmtree(bundle, ignore_errors=True)
