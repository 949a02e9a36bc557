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


def run_image(root, store_root, image, container_id, args=None, detach=False):
    import shutil

    from ..runtime.run import run
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
