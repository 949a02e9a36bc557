"""`run --image`: start a Nix-built image straight from /nix/store.  The
rootfs is the image's own store paths, bound read-only over an empty writable
directory, so nothing is unpacked and start-up does not grow with image size.
Only the image's annotations are read from the store; the container itself
is made by the runtime's `run`."""

import os

from .. import fastjson
from ..errors import EmergenceError
from .store import Store


def image_bundle(store_root, image, bundle_dir, args=None):
    """A bundle whose rootfs is assembled from the image's own /nix/store paths
    (read-only binds) over an empty writable directory: nothing is unpacked, so
    start-up does not grow with the image's size."""
    from .build import ANNOTATION_CONTENTS, ANNOTATION_PATHS
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
    from .farm import farm_entries
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


def fetch_missing(store_root, image, peers=(), trusted_keys=(), config=None):
    """On a miss, get IMAGE from the peers (share's pull: every blob verified)
    and then the /nix/store paths it runs from (share's copy from the peers'
    signed Nix caches); the image to run (its digest after a pull).  Peers come
    from [share] in the node's config file plus PEERS; without any, a miss
    stays the store's own error."""
    cfg = None
    try:
        store = Store(store_root, create=False)
        desc = store.resolve(image)
    except EmergenceError as e:  # no such image, or no store yet
        from .. import share
        cfg = share.config(config, peers, trusted_keys)
        if not cfg["peers"] and not cfg["upstream"]:
            raise type(e)(f"{e}; or name the peers to pull it from with --peer URL") \
                from None
        store = Store(store_root)
        got = share.pull_image(store, image, cfg["peers"], cfg["upstream"],
                               cfg["trusted_keys"])
        image = got["digest"]
        desc = store.resolve(image)
        peers_first = list(got["from"])
    else:
        peers_first = []
    from .build import ANNOTATION_PATHS
    paths = store.read_json(desc["digest"]).get("annotations", {}).get(ANNOTATION_PATHS, "")
    missing = [p for p in paths.split() if not os.path.exists(p)]
    if missing:
        from .. import share
        cfg = cfg or share.config(config, peers, trusted_keys)
        order = [p for p in peers_first if p.startswith("http")] + cfg["peers"]
        if order:
            share.copy_closure(missing, list(dict.fromkeys(order)), cfg["trusted_keys"])
    return image


def run_image(root, store_root, image, container_id, args=None, detach=False, peers=(),
              trusted_keys=(), config=None):
    import shutil

    from ..runtime.run import run
    bundles = os.path.join(root, ".bundles")
    os.makedirs(bundles, mode=0o700, exist_ok=True)
    bundle = os.path.join(bundles, container_id)
    if os.path.exists(bundle):
        raise EmergenceError(f"container {container_id!r} already exists")
    image = fetch_missing(store_root, image, peers, trusted_keys, config)
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
