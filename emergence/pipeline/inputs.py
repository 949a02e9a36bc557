"""A stage's work-tree inputs as a Merkle tree of file digests.

A file's digest is remembered with its stat (dev, inode, size, mtime_ns,
ctime_ns); while those match, the file is not read again, so an unchanged
tree costs one stat per file.  Directory digests hash their entries' names,
modes and digests, so the root digest changes exactly when some input does.
"""

import hashlib
import os

from .. import fastjson
from .spec import expand


class StatCache:
    """path -> (stat signature, digest), kept in one JSON file between runs."""

    def __init__(self, path):
        self.path = path
        self.dirty = False
        try:
            with open(path, "rb") as f:
                self.entries = fastjson.loads(f.read())
        except (OSError, ValueError):
            self.entries = {}

    def digest(self, path):
        st = os.stat(path)
        sig = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]
        hit = self.entries.get(path)
        if hit and hit[0] == sig:
            return hit[1], st.st_mode
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        d = "sha256:" + h.hexdigest()
        # A file written in the same clock tick as this read could change again
        # without its stat changing ("racy git"): remember only settled files.
        import time
        if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
            self.entries[path] = [sig, d]
            self.dirty = True
        return d, st.st_mode

    def save(self):
        if not self.dirty:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(fastjson.dumps(self.entries).encode())
        os.replace(tmp, self.path)
        self.dirty = False


def files_of(base, patterns):
    """Every relative path the patterns name, once, sorted."""
    out = set()
    for p in patterns:
        out.update(expand(base, p))
    return sorted(out)


def tree_digest(base, files, stat_cache):
    """(root digest, {relpath: digest}) for FILES under BASE."""
    leaves = {}
    tree = {}
    for rel in files:
        d, mode = stat_cache.digest(os.path.join(base, rel))
        leaves[rel] = d
        node = tree
        parts = rel.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = f"{'x' if mode & 0o111 else 'f'} {d}"

    def dig(node):
        lines = []
        for name in sorted(node):
            v = node[name]
            lines.append(f"{name}\0{v if isinstance(v, str) else 'd ' + dig(v)}")
        return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return dig(tree), leaves
