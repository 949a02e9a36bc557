"""`export` and `import`: images in and out of the store as oci-archive or
docker-archive tarballs, the formats skopeo, podman and docker load and save.

Exports are deterministic (sorted entries, fixed owners and mtime).  Imports
check every blob against its digest (and, for docker archives, every layer
against the config's diff_ids) before anything is tagged.
"""

import hashlib
import io
import os
import tarfile

from .. import fastjson
from ..errors import EmergenceError
from .store import CONFIG, LAYER, MANIFEST, REF, Store, canonical


def _entry(tar, name, data=None, path=None, size=None):
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.uid, ti.gid, ti.mode = 1, 0, 0, 0o644
    if path is not None:
        ti.size = size if size is not None else os.path.getsize(path)
        with open(path, "rb") as f:
            tar.addfile(ti, f)
    else:
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))


def _dir(tar, name):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mtime, ti.mode = tarfile.DIRTYPE, 1, 0o755
    tar.addfile(ti)


def export(store_root, image, out_path, fmt="oci-archive"):
    store = Store(store_root, create=False)
    desc = store.resolve(image)
    ref = next((r for r, d in store.images() if d["digest"] == desc["digest"] and
                (r == image or r.split(":")[0] == image.split(":")[0])), image)
    manifest_bytes = store.read(desc["digest"])
    manifest = fastjson.loads(manifest_bytes)
    for blob in [manifest["config"]] + manifest["layers"]:
        store.read(blob["digest"])  # verified before it leaves the store
    tmp = f"{out_path}.tmp{os.getpid()}"
    try:
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            if fmt == "oci-archive":
                _dir(tar, "blobs")
                digests = sorted({desc["digest"], manifest["config"]["digest"],
                                  *(layer["digest"] for layer in manifest["layers"])})
                for algo in sorted({d.partition(":")[0] for d in digests}):
                    _dir(tar, f"blobs/{algo}")  # sha256, and sha512 for blobs pushed so
                for d in digests:
                    _entry(tar, _blob_name(d), path=store.blob_path(d))
                index = {"schemaVersion": 2, "manifests": [
                    {"mediaType": MANIFEST, "digest": desc["digest"],
                     "size": len(manifest_bytes), "annotations": {REF: ref}}]}
                _entry(tar, "index.json", canonical(index))
                _entry(tar, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
            elif fmt == "docker-archive":
                cfg = manifest["config"]["digest"][7:]
                _entry(tar, f"{cfg}.json", path=store.blob_path(manifest["config"]["digest"]))
                layers = []
                for layer in manifest["layers"]:
                    name = f"{layer['digest'][7:]}/layer.tar"
                    _dir(tar, layer["digest"][7:])
                    _entry(tar, name, path=store.blob_path(layer["digest"]))
                    layers.append(name)
                _entry(tar, "manifest.json", canonical(
                    [{"Config": f"{cfg}.json", "RepoTags": [_docker_tag(ref)],
                      "Layers": layers}]))
            else:
                raise EmergenceError(f"unknown export format {fmt!r}: use oci-archive or "
                                     "docker-archive")
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _docker_tag(ref):
    name, _, tag = ref.rpartition(":")
    if not name:
        name, tag = ref, "latest"
    return f"{name if '/' in name else 'localhost/' + name}:{tag}"


def _blob_name(digest):
    """blobs/ALGORITHM/HEX of an OCI layout."""
    algo, _, hexd = digest.partition(":")
    return f"blobs/{algo}/{hexd}"


def _put_checked(store, data, digest=None):
    from .store import ALGORITHMS
    algo = digest.partition(":")[0] if digest else "sha256"
    if algo not in ALGORITHMS:
        raise EmergenceError(f"the archive's blob {digest} has a digest that is neither "
                             "sha256 nor sha512")
    got, size = store.put(data, algo)
    if digest is not None and got != digest:
        raise EmergenceError(f"the archive's blob {digest} is corrupt (it hashes to {got})")
    return got, size


def import_archive(store_root, path, ref=None):
    """Load an oci-archive or docker-archive; return the refs it added."""
    store = Store(store_root)
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, ValueError, tarfile.TarError) as e:  # ValueError: an empty path
        raise EmergenceError(f"{path}: not a readable tar archive ({e})") from None
    with tar:
        names = {m.name.lstrip("./"): m for m in tar.getmembers()}

        def read(name):
            m = names.get(name)
            if m is None or not m.isfile():
                raise EmergenceError(f"{path}: {name} is missing from the archive")
            return tar.extractfile(m).read()

        def read_json(name):
            try:
                return fastjson.loads(read(name))
            except ValueError:
                raise EmergenceError(f"{path}: {name} is not valid JSON; the archive is "
                                     "corrupt") from None

        if "index.json" in names:
            index = read_json("index.json")
            added = []
            for i, desc in enumerate(index.get("manifests", [])):
                manifest_bytes = read(_blob_name(desc["digest"]))
                _put_checked(store, manifest_bytes, desc["digest"])  # verified before parsed
                manifest = read_json(_blob_name(desc["digest"]))
                for blob in [manifest["config"]] + manifest["layers"]:
                    data = read(_blob_name(blob["digest"]))
                    _put_checked(store, data, blob["digest"])
                name = ref if ref and i == 0 else desc.get("annotations", {}).get(REF)
                name = name or f"imported:{desc['digest'][7:19]}"
                store.set_ref(name, {"mediaType": MANIFEST, "digest": desc["digest"],
                                     "size": len(manifest_bytes)})
                added.append(name)
            return added
        if "manifest.json" in names:
            added = []
            for entry in read_json("manifest.json"):
                cfg_bytes = read(entry["Config"])
                cfg = read_json(entry["Config"])
                cfg_digest, cfg_size = _put_checked(store, cfg_bytes)
                layers = []
                for name, diff_id in zip(entry["Layers"], cfg["rootfs"]["diff_ids"]):
                    data = read(name)
                    digest = "sha256:" + hashlib.sha256(data).hexdigest()
                    if digest != diff_id:
                        raise EmergenceError(f"{path}: layer {name} does not match the "
                                             "config's diff_id (compressed or corrupt)")
                    got, size = _put_checked(store, data, digest)
                    layers.append({"mediaType": LAYER, "digest": got, "size": size})
                manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                            "config": {"mediaType": CONFIG, "digest": cfg_digest,
                                       "size": cfg_size}, "layers": layers}
                man_digest, man_size = store.put(canonical(manifest))
                tags = entry.get("RepoTags") or [f"imported:{man_digest[7:19]}"]
                for t in ([ref] if ref else tags):
                    t = t[len("localhost/"):] if t.startswith("localhost/") else t
                    store.set_ref(t, {"mediaType": MANIFEST, "digest": man_digest,
                                      "size": man_size})
                    added.append(t)
            return added
    raise EmergenceError(f"{path}: neither an oci-archive (index.json) nor a "
                         "docker-archive (manifest.json)")
