"""The content-addressed store: an OCI image layout (oci-layout, index.json,
blobs/sha256/...) that skopeo, umoci and podman read as it is.

Nothing is lost: a blob is written to a temp file, hashed while written,
fsynced and renamed to its digest, so a blob's name is always the hash of its
bytes. index.json changes under an flock and are replaced atomically.
Blobs are shared by every image that uses them; `gc` drops the rest.
"""

import os

from .. import default_store, fastjson
from ..errors import EmergenceError, NotFound

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
REF = "org.opencontainers.image.ref.name"


def canonical(obj):
    """Deterministic JSON bytes (sorted keys, no spaces): same content, same digest."""
    import json
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


ALGORITHMS = {"sha256": 64, "sha512": 128}  # digest algorithm -> hex length
TEMP_PREFIXES = (".tmp-", ".upload-")  # a blob being written (a build's; a push's)


def _mkstemp(directory, prefix=".tmp-"):
    """A new temp file in DIRECTORY (same file system: rename is atomic)."""
    import tempfile  # costs milliseconds; only the artifact verbs get here
    return tempfile.mkstemp(prefix=prefix, dir=directory)


class BlobWriter:
    """A file-like sink that hashes what it is given (with ALGORITHM: sha256,
    or sha512); commit() makes it a blob."""

    def __init__(self, store, algorithm="sha256", prefix=".tmp-"):
        import hashlib
        if algorithm not in ALGORITHMS:
            raise EmergenceError(f"unsupported digest algorithm {algorithm!r}")
        self.store = store
        self.algorithm = algorithm
        self.hash = hashlib.new(algorithm)
        self.size = 0
        fd, self.tmp = _mkstemp(store.blob_dir, prefix)
        self.f = os.fdopen(fd, "wb", buffering=1 << 20)

    def write(self, data):
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self):
        return self.size

    def mark(self):
        """Where the writer is now, to rewind() to (a chunk that fails midway)."""
        return self.size, self.hash.copy()

    def rewind(self, mark):
        self.f.flush()
        self.size, self.hash = mark[0], mark[1].copy()
        self.f.truncate(self.size)
        self.f.seek(self.size)

    def rehash(self, algorithm):
        """Hash what was written again with ALGORITHM (an upload that named
        another algorithm at its end than at its start)."""
        import hashlib
        if algorithm not in ALGORITHMS:
            raise EmergenceError(f"unsupported digest algorithm {algorithm!r}")
        self.f.flush()
        h = hashlib.new(algorithm)
        with open(self.tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.algorithm, self.hash = algorithm, h

    def digest(self):
        return f"{self.algorithm}:{self.hash.hexdigest()}"

    def commit(self):
        """Make the blob durable under its digest; return (digest, size).  The
        directory entry is synced once, by set_ref, before anything names it."""
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        digest = self.digest()
        os.chmod(self.tmp, 0o444)
        path = self.store.blob_path(digest)
        if self.algorithm != "sha256":
            os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(self.tmp, path)
        return digest, self.size

    def abort(self):
        self.f.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


class Store:
    def __init__(self, root=None, create=True):
        self.root = root = root or default_store()
        self.blob_dir = os.path.join(root, "blobs", "sha256")  # temp files go here too
        if create:
            self._ensure()
        elif not os.path.exists(os.path.join(root, "oci-layout")):
            raise EmergenceError(f"no image store at {root}; build or import an image first "
                                 "(or pass --store)")

    def _ensure(self):
        if os.path.exists(os.path.join(self.root, "index.json")):
            return
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(os.path.join(self.root, "cache"), exist_ok=True)
        self._write_file("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
        with self.locked():
            if not os.path.exists(os.path.join(self.root, "index.json")):
                self._write_file("index.json", canonical(
                    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                     "manifests": []}))

    def _write_file(self, name, data):
        path = os.path.join(self.root, name)
        fd, tmp = _mkstemp(self.root)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        self.sync_dir(self.root)

    def sync_dir(self, path=None):
        paths = [path] if path else [self.blob_dir] + [
            p for p in (self.algorithm_dir(a) for a in ALGORITHMS if a != "sha256")
            if os.path.isdir(p)]
        for p in paths:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- blobs --
    def algorithm_dir(self, algorithm):
        return os.path.join(self.root, "blobs", algorithm)

    def blob_path(self, digest):
        algo, _, hexpart = digest.partition(":")
        if len(hexpart) != ALGORITHMS.get(algo) or not all(c in "0123456789abcdef"
                                                           for c in hexpart):
            raise EmergenceError(f"{digest!r} is not a sha256 or sha512 digest")
        return os.path.join(self.root, "blobs", algo, hexpart)

    def blobs(self):
        """[(digest, path)] of every blob file (temp files left out)."""
        out = []
        for algo in ALGORITHMS:
            d = self.algorithm_dir(algo)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            out += [(f"{algo}:{n}", os.path.join(d, n)) for n in names
                    if not n.startswith(TEMP_PREFIXES)]
        return out

    def has(self, digest):
        return os.path.exists(self.blob_path(digest))

    def writer(self, algorithm="sha256", prefix=".tmp-"):
        return BlobWriter(self, algorithm, prefix)

    def adopt(self, path, digest):
        """Make the file PATH, whose bytes the caller hashed to DIGEST, that blob
        (a pull's verified partial file): synced, read-only and renamed in, no
        copy.  From another filesystem it is copied through a BlobWriter, which
        hashes again: False (and no blob) if that copy is not DIGEST."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            os.fchmod(fd, 0o444)
        finally:
            os.close(fd)
        try:
            os.replace(path, self.blob_path(digest))
            return True
        except OSError as e:
            import errno
            if e.errno != errno.EXDEV:
                raise
        w = self.writer()
        try:
            with open(path, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    w.write(b)
            if "sha256:" + w.hash.hexdigest() != digest:
                w.abort()
                return False
            w.commit()
            return True
        except BaseException:
            w.abort()
            raise

    def put(self, data, algorithm="sha256"):
        w = self.writer(algorithm)
        try:
            w.write(data)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    def read(self, digest, verify=True):
        try:
            with open(self.blob_path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise EmergenceError(f"blob {digest} is missing from the store {self.root}; "
                                 "run `emergence verify`") from None
        import hashlib
        algo = digest.partition(":")[0]
        if verify and f"{algo}:" + hashlib.new(algo, data).hexdigest() != digest:
            raise EmergenceError(f"blob {digest} is corrupt (its content does not match its "
                                 "digest); run `emergence verify` and rebuild the image")
        return data

    def read_json(self, digest):
        return fastjson.loads(self.read(digest))

    # -- index --
    def locked(self):
        return _Lock(os.path.join(self.root, ".lock"))

    def index(self):
        with open(os.path.join(self.root, "index.json"), "rb") as f:
            return fastjson.loads(f.read())

    def set_ref(self, ref, descriptor):
        """Point REF at a manifest descriptor (replacing what REF named before)."""
        self.set_refs([(ref, descriptor)])

    def set_refs(self, pairs):
        """Point each (REF, descriptor) of PAIRS, in one write of index.json."""
        self.sync_dir()  # the blobs' renames are durable before the index names them
        refs = {ref for ref, _ in pairs}
        with self.locked():
            idx = self.index()
            manifests = [m for m in idx.get("manifests", [])
                         if m.get("annotations", {}).get(REF) not in refs]
            manifests += [{**desc, "annotations": {REF: ref}} for ref, desc in pairs]
            idx["manifests"] = manifests
            self._write_file("index.json", canonical(idx))

    def remove_ref(self, ref):
        if not self.remove_refs([ref]):
            raise NotFound(f"no image {ref!r} in the store")

    def remove_refs(self, refs):
        """Drop REFS from index.json in one write; return how many were there."""
        refs = set(refs)
        with self.locked():
            idx = self.index()
            before = len(idx.get("manifests", []))
            idx["manifests"] = [m for m in idx.get("manifests", [])
                                if m.get("annotations", {}).get(REF) not in refs]
            gone = before - len(idx["manifests"])
            if gone:
                self._write_file("index.json", canonical(idx))
            return gone

    def images(self):
        """[(ref, manifest descriptor)] in index order."""
        return [(m.get("annotations", {}).get(REF, ""), m)
                for m in self.index().get("manifests", [])]

    def resolve(self, name):
        """A manifest descriptor by ref ('name:tag', 'name' meaning name:latest) or digest."""
        refs = self.images()
        candidates = [name] if ":" in name and not name.startswith("sha256:") else \
            [name, f"{name}:latest"]
        for ref, desc in refs:
            if ref in candidates:
                return desc
        if name.startswith("sha256:") or all(c in "0123456789abcdef" for c in name):
            want = name if name.startswith("sha256:") else "sha256:" + name
            # one image may have several refs: count digests, not refs
            hits = {d["digest"]: d for _, d in refs if d["digest"].startswith(want)}
            if len(hits) == 1:
                return next(iter(hits.values()))
        raise NotFound(f"no image {name!r} in the store {self.root} "
                       "(see `emergence images`)")

    # -- reachability --
    def referenced(self):
        """Every blob digest reachable from index.json: each manifest's config and
        layers, an index's manifests and theirs (a pushed multi-platform image;
        the referrers an index tagged sha256-HEX lists).  Untagged manifests a
        registry client pushed (signatures, SBOMs: refs NAME@DIGEST) are in
        index.json too, so their blobs stay as well."""
        keep = set()
        todo = [desc.get("digest") for _, desc in self.images()]
        while todo:
            digest = todo.pop()
            if not isinstance(digest, str) or digest in keep:
                continue
            keep.add(digest)
            try:
                manifest = self.read_json(digest)
            except (EmergenceError, ValueError):
                continue
            if not isinstance(manifest, dict):
                continue
            config = manifest.get("config")
            if isinstance(config, dict) and isinstance(config.get("digest"), str):
                keep.add(config["digest"])
            for key, walk in (("layers", False), ("blobs", False), ("manifests", True)):
                items = manifest.get(key)
                for d in items if isinstance(items, list) else ():
                    if isinstance(d, dict) and isinstance(d.get("digest"), str):
                        (todo.append if walk else keep.add)(d["digest"])
        return keep


class _Lock:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        import fcntl
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
