"""The stage cache: KEY -> the outputs (one tar blob) and the log (one blob),
in the image store's blobs, named by a small index file per key under
STORE/pipeline/cache/.  Only passing runs are kept.  A key whose blobs the
store's GC has pruned is simply a miss.  Nothing here is ever a secret:
the runner masks logs and refuses to cache outputs that contain one.
"""

import hashlib
import io
import os
import tarfile

from .. import fastjson
from ..image.store import Store


def stage_key(image_digest, command, env, tree, need_keys, network, secret_names, outputs,
              limits):
    """The content address of a stage: what it runs, in what, on what."""
    doc = {"v": 1, "image": image_digest, "command": command, "env": sorted(env.items()),
           "inputs": tree, "needs": sorted(need_keys.items()), "network": network,
           "secrets": sorted(secret_names), "outputs": sorted(outputs),
           "limits": sorted(limits.items())}
    import json
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pack(directory):
    """A byte-reproducible tar of DIRECTORY (sorted, zero times and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, dirs, files in os.walk(directory):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                full = os.path.join(d, name)
                info = tar.gettarinfo(full, os.path.relpath(full, directory))
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def unpack(data, directory):
    """Our own tars from the verified store; still, no member may leave DIRECTORY."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.11.4+, and Debian's backport
            tar.extractall(directory, filter="data")
            return
        for m in tar.getmembers():
            if m.name.startswith("/") or ".." in m.name.split("/") or m.islnk() or m.isdev():
                raise ValueError(f"unsafe member {m.name!r} in a cached output")
        tar.extractall(directory)


def output_digests(directory, outputs):
    """{declared output: digest} (a directory's digest covers its files)."""
    from .inputs import StatCache, tree_digest
    sc = StatCache(os.devnull)
    out = {}
    for o in outputs:
        full = os.path.join(directory, o)
        if os.path.isdir(full):
            files = sorted(os.path.relpath(os.path.join(d, f), full)
                           for d, _, fs in os.walk(full) for f in fs)
            out[o] = tree_digest(full, files, sc)[0]
        else:
            out[o] = sc.digest(full)[0]
    return out


class Cache:
    def __init__(self, store_root):
        self.store = Store(store_root)
        self.dir = os.path.join(self.store.root, "pipeline", "cache")
        os.makedirs(self.dir, exist_ok=True)

    def _index(self, key):
        return os.path.join(self.dir, key.partition(":")[2] + ".json")

    def get(self, key):
        """The entry for KEY if it and its blobs are all there, else None."""
        try:
            with open(self._index(key), "rb") as f:
                entry = fastjson.loads(f.read())
        except (OSError, ValueError):
            return None
        if not all(self.store.has(entry[k]) for k in ("outputs", "log")):
            return None
        return entry

    def restore(self, entry, out_dir):
        """Outputs into OUT_DIR; the log's bytes are returned."""
        unpack(self.store.read(entry["outputs"]), out_dir)
        return self.store.read(entry["log"])

    def put(self, key, out_dir, log, meta):
        outputs, _ = self.store.put(pack(out_dir))
        log_digest, _ = self.store.put(log)
        self.store.sync_dir()
        entry = {**meta, "key": key, "outputs": outputs, "log": log_digest}
        tmp = self._index(key) + f".{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(fastjson.dumps(entry).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._index(key))
        return entry
