"""The stage cache: KEY -> the outputs (one tar blob) and the log (one blob),
in the image store's blobs, named by a small index file per key under
STORE/pipeline/cache/.  Only passing runs are kept.  A key whose blobs the
store's GC has pruned is simply a miss.  Nothing here is ever a secret:
the runner masks logs and refuses to cache outputs that contain one.
"""

import hashlib
import os
import tarfile

from .. import fastjson
from ..errors import EmergenceError
from ..image.store import Store


def _digest(doc):
    import json
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stage_key(image_digest, command, env, tree, need_keys, network, secret_names, outputs,
              limits):
    """What a stage runs, in what, on what: known before anything runs.  The
    key it is cached under also takes its needs' actual outputs (final_key)."""
    return _digest({"v": 2, "image": image_digest, "command": command,
                    "env": sorted(env.items()), "inputs": tree,
                    "needs": sorted(need_keys.items()), "network": network,
                    "secrets": sorted(secret_names), "outputs": sorted(outputs),
                    "limits": sorted(limits.items())})


def final_key(base_key, need_outputs):
    """BASE_KEY and the digests of what each stage it needs actually left, once
    they finished: an upstream with `cache = false`, or one another run
    changed meanwhile, can never feed a stale hit downstream."""
    if not need_outputs:
        return base_key
    return _digest({"base": base_key,
                    "upstream": sorted((n, sorted(d.items())) for n, d in need_outputs.items())})


def pack(directory, sink):
    """A byte-reproducible tar of DIRECTORY (sorted, zero times and owners),
    streamed into SINK (a file-like with write): memory does not grow with it."""
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
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


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n=-1):
        data = self.f.read(n)
        self.h.update(data)
        return data

    def rest(self):
        for chunk in iter(lambda: self.f.read(1 << 20), b""):
            self.h.update(chunk)
        return "sha256:" + self.h.hexdigest()


class Corrupt(Exception):
    """A cached blob that does not hash to its digest."""


def unpack(path, digest, directory):
    """Extract the tar at PATH into DIRECTORY as a stream, hashing it on the
    way; raises Corrupt (DIRECTORY emptied) unless it hashes to DIGEST.  Even
    from the verified store, no member may leave DIRECTORY."""
    with open(path, "rb") as raw:
        src = _Hashing(raw)
        try:
            with tarfile.open(fileobj=src, mode="r|") as tar:
                if hasattr(tarfile, "data_filter"):  # 3.11.4+, and Debian's backport
                    tar.extractall(directory, filter="data")
                else:
                    for m in tar:
                        if m.name.startswith("/") or ".." in m.name.split("/") \
                                or m.islnk() or m.isdev():
                            raise ValueError(f"unsafe member {m.name!r} in a cached output")
                        tar.extract(m, directory)
        except (tarfile.TarError, ValueError) as e:
            if src.rest() == digest:
                raise
            err = e
        else:
            err = None
        if src.rest() != digest:
            import shutil
            shutil.rmtree(directory, ignore_errors=True)
            raise Corrupt(f"blob {digest} does not match its digest") from err


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
        """Outputs into OUT_DIR, streamed and verified; the log's bytes are
        returned.  A corrupt blob is removed and the entry is a miss (None)."""
        try:
            unpack(self.store.blob_path(entry["outputs"]), entry["outputs"], out_dir)
            return self.store.read(entry["log"])
        except (Corrupt, EmergenceError, OSError):
            for k in ("outputs", "log"):
                try:
                    os.unlink(self.store.blob_path(entry[k]))
                except OSError:
                    pass
            return None

    def put(self, key, out_dir, log, meta):
        w = self.store.writer()
        try:
            pack(out_dir, w)
            outputs, _ = w.commit()
        except BaseException:
            w.abort()
            raise
        log_digest, _ = self.store.put(log)
        self.store.sync_dir()
        return self.write_index(key, {**meta, "key": key, "outputs": outputs,
                                      "log": log_digest})

    def write_index(self, key, entry):
        tmp = self._index(key) + f".{os.getpid()}.{id(entry)}.tmp"
        with open(tmp, "wb") as f:
            f.write(fastjson.dumps(entry).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._index(key))
        return entry
