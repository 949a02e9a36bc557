"""`bundle`: an image from the store becomes a runtime bundle.

The rootfs is the layers applied in order, with OCI whiteouts (.wh.NAME
removes NAME, .wh..wh..opq empties a directory), hardlinks, symlinks, modes
and numeric ownership kept.  No entry may leave the rootfs: names with '..'
or a symlink on their way are refused.  config.json comes from the image
config as image-spec's conversion.md says.
"""

import os
import shutil
import tarfile

from .. import fastjson
from ..errors import EmergenceError
from .store import Store

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def _safe_target(rootfs, name):
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise EmergenceError(f"layer entry {name!r} points outside the rootfs; refusing it")
    path = rootfs
    for p in parts[:-1]:
        path = os.path.join(path, p)
        if os.path.islink(path):
            raise EmergenceError(f"layer entry {name!r} goes through the symlink "
                                 f"/{os.path.relpath(path, rootfs)}; refusing it")
    return os.path.join(rootfs, *parts), parts


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def apply_layer(rootfs, blob_path):
    with tarfile.open(blob_path, "r:*") as tar:
        for m in tar:
            target, parts = _safe_target(rootfs, m.name)
            base = parts[-1]
            if base == OPAQUE:
                d = os.path.dirname(target)
                if os.path.isdir(d):
                    for entry in os.listdir(d):
                        _remove(os.path.join(d, entry))
                continue
            if base.startswith(WHITEOUT):
                _remove(os.path.join(os.path.dirname(target), base[len(WHITEOUT):]))
                continue
            if m.islnk():
                link, _ = _safe_target(rootfs, m.linkname)
                m = _copy_with(m, linkname=os.path.relpath(link, rootfs))
            existing = os.path.lexists(target)
            if existing and not (m.isdir() and os.path.isdir(target)
                                 and not os.path.islink(target)):
                _remove(target)
            tar.extract(m, rootfs, numeric_owner=True, filter="fully_trusted")


def _copy_with(member, **changes):
    m = tarfile.TarInfo(member.name)
    for attr in ("size", "mtime", "mode", "type", "linkname", "uid", "gid", "uname", "gname",
                 "devmajor", "devminor", "pax_headers"):
        setattr(m, attr, getattr(member, attr))
    m.offset, m.offset_data = member.offset, member.offset_data
    for k, v in changes.items():
        setattr(m, k, v)
    return m


def _lookup(rootfs, filename, name):
    try:
        with open(os.path.join(rootfs, "etc", filename)) as f:
            for line in f:
                fields = line.strip().split(":")
                if fields and fields[0] == name and len(fields) > 3:
                    return int(fields[2]), int(fields[3])
    except OSError:
        pass
    raise EmergenceError(f"image config User: no {name!r} in /etc/{filename} of the image")


def runtime_config(image_config, rootfs, args=None):
    """config.json for an image config, per image-spec conversion.md."""
    from ..runtime.spec import default_config
    cfg = image_config.get("config", {}) or {}
    argv = list(args) if args else (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
    if not argv:
        raise EmergenceError("the image has neither Entrypoint nor Cmd; give a command")
    c = default_config(args=argv, terminal=False)
    c["root"] = {"path": "rootfs", "readonly": False}
    env = cfg.get("Env") or []
    if not any(e.startswith("PATH=") for e in env):
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + env
    c["process"]["env"] = env
    c["process"]["cwd"] = cfg.get("WorkingDir") or "/"
    user = cfg.get("User") or ""
    if user:
        u, _, g = user.partition(":")
        uid = int(u) if u.isdigit() else _lookup(rootfs, "passwd", u)[0]
        gid = (int(g) if g.isdigit() else _lookup(rootfs, "group", g)[0]) if g else \
            (_lookup(rootfs, "passwd", u)[1] if not u.isdigit() else 0)
        c["process"]["user"] = {"uid": uid, "gid": gid}
    ann = {}
    for k, v in (cfg.get("Labels") or {}).items():
        ann[k] = v
    if cfg.get("ExposedPorts"):
        ann["org.opencontainers.image.exposedPorts"] = ",".join(sorted(cfg["ExposedPorts"]))
    if cfg.get("StopSignal"):
        ann["org.opencontainers.image.stopSignal"] = cfg["StopSignal"]
    for key in ("os", "architecture", "author", "created"):
        if image_config.get(key):
            ann[f"org.opencontainers.image.{key}"] = image_config[key]
    c["annotations"] = ann
    for vol in sorted(cfg.get("Volumes") or {}):
        # conversion.md leaves volumes to the implementation: an anonymous tmpfs
        c["mounts"].append({"destination": vol, "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "mode=755"]})
    return c


def make_bundle(store_root, image, bundle_dir, args=None):
    store = Store(store_root, create=False)
    desc = store.resolve(image)
    manifest = store.read_json(desc["digest"])
    image_config = store.read_json(manifest["config"]["digest"])
    if os.path.exists(os.path.join(bundle_dir, "config.json")):
        raise EmergenceError(f"{bundle_dir} already holds a bundle; pick an empty directory")
    rootfs = os.path.join(bundle_dir, "rootfs")
    os.makedirs(rootfs, exist_ok=True)
    try:
        for layer in manifest["layers"]:
            store.read(layer["digest"])  # verify before unpacking
            apply_layer(rootfs, store.blob_path(layer["digest"]))
        config = runtime_config(image_config, rootfs, args)
        with open(os.path.join(bundle_dir, "config.json"), "w") as f:
            f.write(fastjson.dumps(config, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(rootfs, ignore_errors=True)
        raise
    return bundle_dir
