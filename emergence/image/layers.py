"""A closure grouped into layers by popularity (paths many others depend on
get layers of their own, so images share them), each written as a
byte-reproducible tar (fixed mtime, owner and order) straight into the store.
A layer already built for the same store paths is reused by digest."""

import os
import stat

from .. import fastjson
from ..errors import EmergenceError
from .store import canonical
from .tarwriter import TarWriter

LAYER_FORMAT = "emergence-layer-v2"  # bump to invalidate the layer cache


def popularity(graph):
    """How many store paths (transitively) depend on each path."""
    dependents = {p: set() for p in graph}
    memo = {}

    def closure(p):
        if p not in memo:
            memo[p] = set()
            for r in graph.get(p, ()):
                memo[p] |= {r} | closure(r)
        return memo[p]

    for p in graph:
        for dep in closure(p):
            dependents.setdefault(dep, set()).add(p)
    return {p: len(d) for p, d in dependents.items()}


def group_layers(graph, max_layers):
    """Store paths per layer: the most popular get their own layer, the rest share
    the last store layer; one more layer is kept for the image's own files."""
    budget = max(1, max_layers - 1)
    pop = popularity(graph)
    order = sorted(graph, key=lambda p: (-pop.get(p, 0), p))
    if len(order) <= budget:
        return [[p] for p in order]
    return [[p] for p in order[:budget - 1]] + [sorted(order[budget - 1:])]


def _add_tree(tar, path):
    """PATH (a store path) and everything below it, in sorted order."""
    def add(full):
        st = os.lstat(full)
        name = full.lstrip("/")
        if stat.S_ISDIR(st.st_mode):
            tar.dir(name, st.st_mode & 0o7777)
            for entry in sorted(os.listdir(full)):
                add(full + "/" + entry)
        elif stat.S_ISLNK(st.st_mode):
            tar.symlink(name, os.readlink(full))
        elif stat.S_ISREG(st.st_mode):
            tar.file(name, st.st_mode & 0o7777, full, st.st_size)
        else:
            raise EmergenceError(f"{full}: unsupported file type in the Nix store")
    add(path)


def write_layer(store, paths=(), extra=None):
    """One layer blob; returns (digest, size).  EXTRA(tar) adds non-store entries."""
    w = store.writer()
    try:
        tar = TarWriter(w)
        if paths:
            tar.dir("nix")
            tar.dir("nix/store")
            for p in sorted(paths):
                _add_tree(tar, p)
        if extra:
            extra(tar)
        tar.close()
        return w.commit()
    except BaseException:
        w.abort()
        raise


def _cache_key(paths):
    import hashlib
    h = hashlib.sha256(LAYER_FORMAT.encode())
    for p in sorted(paths):
        h.update(b"\0" + p.encode())
    return h.hexdigest()


def cached_layer(store, paths):
    """(digest, size, reused): a store-path layer, re-tarred only if not in the store."""
    key = os.path.join(store.root, "cache", _cache_key(paths))
    try:
        with open(key, "rb") as f:
            entry = fastjson.loads(f.read())
        if store.has(entry["digest"]):
            return entry["digest"], entry["size"], True
    except (OSError, ValueError, KeyError):
        pass
    digest, size = write_layer(store, paths)
    tmp = f"{key}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(canonical({"digest": digest, "size": size, "paths": sorted(paths)}))
    os.replace(tmp, key)
    return digest, size, False
