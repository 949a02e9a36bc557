"""`build`: a Nix expression becomes an OCI image in the store.

Real Nix evaluates and realises the expression, which (through nix/lib.nix's
buildImage) yields a small description: the image config, the content roots
and their closure graph.  Here the closure is grouped into layers by
popularity (paths many others depend on get layers of their own, so images
share them), each layer is written as a byte-reproducible tar (fixed mtime,
owner and order) straight into the store, and manifest, config and tag are
recorded.  A layer already built for the same store paths is reused.
"""

import os
import stat
import sys

from . import fastjson
from .errors import EmergenceError
from .store import CONFIG, LAYER, MANIFEST, Store, canonical

EPOCH = 1  # mtime of every entry, and the image's creation time (1970-01-01T00:00:01Z)
CREATED = "1970-01-01T00:00:01Z"
LAYER_FORMAT = "emergence-layer-v2"  # bump to invalidate the layer cache
ANNOTATION_PATHS = "io.github.emergence.nix.store-paths"
ANNOTATION_CONTENTS = "io.github.emergence.nix.contents"


# ---- Nix -----------------------------------------------------------------------

def _offline():
    """No substituters when the binary cache cannot be reached (the usual case here)."""
    if os.environ.get("EMERGENCE_NIX_OFFLINE") in ("0", "no"):
        return False
    return True


def realise(expr_file, attr=None, args=(), argstrs=(), progress=False):
    """nix-build the expression; return the description directory."""
    import subprocess  # here: `run --image` imports this module for farm_entries
    cmd = ["nix-build", expr_file, "--no-out-link"]
    if attr:
        cmd += ["-A", attr]
    for name, value in args:
        cmd += ["--arg", name, value]
    for name, value in argstrs:
        cmd += ["--argstr", name, value]
    if _offline():
        cmd += ["--option", "substituters", ""]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if progress else
                           subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise EmergenceError("nix-build is not installed (apt-get install nix-bin)") from None
    if p.returncode != 0:
        if not progress and p.stderr:
            sys.stderr.write(p.stderr)  # as Nix printed it
        last = [line for line in (p.stderr or "").splitlines() if line.startswith("error")]
        summary = last[-1] if last else f"nix-build exited with status {p.returncode}"
        raise EmergenceError(f"building {expr_file} failed: {summary}")
    out = p.stdout.strip().splitlines()
    if not out:
        raise EmergenceError(f"nix-build {expr_file} printed no store path")
    desc_dir = out[-1]
    if not os.path.exists(os.path.join(desc_dir, "image.json")):
        raise EmergenceError(f"{expr_file} did not build an image description (use "
                             "buildImage from nix/lib.nix); got {desc_dir}")
    return desc_dir


def parse_closure(text):
    """exportReferencesGraph's format -> {path: [references]}."""
    lines = text.splitlines()
    graph = {}
    i = 0
    while i < len(lines):
        path = lines[i]
        if not path:
            i += 1
            continue
        count = int(lines[i + 2])
        graph[path] = [r for r in lines[i + 3:i + 3 + count] if r != path]
        i += 3 + count
    return graph


# ---- layering --------------------------------------------------------------------

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


# ---- reproducible tar ------------------------------------------------------------

class TarWriter:
    """Writes a POSIX ustar archive with every entry owned by 0:0 at mtime EPOCH,
    no hardlinks (each layer stands alone).  Hand-rolled because tarfile builds
    each header through several copies: that was a third of a build's time.
    Names longer than ustar holds use a GNU long-name record, as tar does."""

    BLOCK = 512

    def __init__(self, out):
        self.out = out

    @staticmethod
    def _num(value, width):
        return b"%0*o\0" % (width - 1, value)

    def _header(self, name, kind, mode, size=0, linkname=b""):
        prefix = b""
        if len(name) > 100:
            cut = name.rfind(b"/", 0, 156)
            if 0 < cut and len(name) - cut - 1 <= 100 and cut <= 155:
                prefix, name = name[:cut], name[cut + 1:]
            else:
                self._longname(b"././@LongLink", b"L", name + b"\0")
                name = name[:100]
        if len(linkname) > 100:
            self._longname(b"././@LongLink", b"K", linkname + b"\0")
            linkname = linkname[:100]
        h = bytearray(self.BLOCK)
        h[0:len(name)] = name
        h[100:108] = self._num(mode, 8)
        h[108:116] = self._num(0, 8)
        h[116:124] = self._num(0, 8)
        h[124:136] = self._num(size, 12)
        h[136:148] = self._num(EPOCH, 12)
        h[148:156] = b" " * 8
        h[156:157] = kind
        h[157:157 + len(linkname)] = linkname
        h[257:265] = b"ustar\x0000"
        h[345:345 + len(prefix)] = prefix
        h[148:156] = b"%06o\0 " % sum(h)
        self.out.write(bytes(h))

    def _longname(self, marker, kind, data):
        self._header(marker, kind, 0o644, len(data))
        self._data(data)

    def _data(self, data):
        self.out.write(data)
        pad = -len(data) % self.BLOCK
        if pad:
            self.out.write(b"\0" * pad)

    def dir(self, name, mode=0o755):
        self._header(name.encode() + b"/", b"5", mode)

    def symlink(self, name, target):
        self._header(name.encode(), b"2", 0o777, linkname=target.encode())

    def file(self, name, mode, path, size):
        self._header(name.encode(), b"0", mode, size)
        written = 0
        with open(path, "rb", buffering=0) as f:
            while written < size:
                chunk = f.read(min(1 << 20, size - written))
                if not chunk:
                    raise EmergenceError(f"{path} shrank while being archived")
                self.out.write(chunk)
                written += len(chunk)
        pad = -size % self.BLOCK
        if pad:
            self.out.write(b"\0" * pad)

    def close(self):
        self.out.write(b"\0" * (2 * self.BLOCK))


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


def farm_entries(contents):
    """The links that put the content roots at / (as buildEnv would): a top-level
    directory that one root alone provides is linked whole (/lib -> .../lib); one
    that several provide becomes a directory of links to their entries.
    Returns [(name, target or None for a directory)], sorted."""
    providers = {}
    for root in contents:
        for top in sorted(os.listdir(root)):
            providers.setdefault(top, []).append(os.path.join(root, top))
    out = []
    for top in sorted(providers):
        srcs = providers[top]
        dirs = [s for s in srcs if os.path.isdir(s) and not os.path.islink(s)]
        if len(srcs) == 1 or len(dirs) < 2:
            out.append((top, srcs[0]))
            continue
        out.append((top, None))
        seen = set()
        for src in dirs:
            for leaf in sorted(os.listdir(src)):
                if leaf not in seen:
                    seen.add(leaf)
                    out.append((f"{top}/{leaf}", os.path.join(src, leaf)))
    return out


def symlink_farm(contents):
    """The image's own layer: the farm_entries links, plus /tmp."""
    def extra(tar):
        names = set()
        for name, target in farm_entries(contents):
            names.add(name)
            if target is None:
                tar.dir(name)
            else:
                tar.symlink(name, target)
        if "tmp" not in names:
            tar.dir("tmp", 0o1777)
    return extra


# ---- the image -------------------------------------------------------------------

def build(store_root, expr_file, attr=None, args=(), argstrs=(), tag=None, progress=None):
    """Build EXPR_FILE into the store; return a result dict (printed as --json)."""
    if not os.path.exists(expr_file):
        raise EmergenceError(f"{expr_file}: no such Nix expression")
    if progress is None:
        progress = sys.stderr.isatty()
    desc_dir = realise(expr_file, attr, args, argstrs, progress)
    with open(os.path.join(desc_dir, "image.json"), "rb") as f:
        desc = fastjson.loads(f.read())
    with open(os.path.join(desc_dir, "closure")) as f:
        graph = parse_closure(f.read())
    store = Store(store_root)
    groups = group_layers(graph, int(desc.get("maxLayers", 100)))
    layers = []
    reused = 0
    for i, group in enumerate(groups):
        if progress:
            sys.stderr.write(f"\remergence: layer {i + 1}/{len(groups) + 1}")
        digest, size, hit = cached_layer(store, group)
        reused += hit
        layers.append({"mediaType": LAYER, "digest": digest, "size": size})
    digest, size = write_layer(store, extra=symlink_farm(desc.get("contents", [])))
    layers.append({"mediaType": LAYER, "digest": digest, "size": size})
    if progress:
        sys.stderr.write("\n")
    config = {
        "created": CREATED,
        "architecture": _arch(),
        "os": "linux",
        "config": desc.get("config", {}),
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        "history": [{"created": CREATED, "created_by": "emergence build: " + " ".join(g)}
                    for g in groups] + [{"created": CREATED,
                                         "created_by": "emergence build: links to contents"}],
    }
    cfg_digest, cfg_size = store.put(canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": layers,
        "annotations": {
            ANNOTATION_PATHS: " ".join(sorted(graph)),
            ANNOTATION_CONTENTS: " ".join(desc.get("contents", [])),
        },
    }
    man_digest, man_size = store.put(canonical(manifest))
    ref = tag or f"{desc['name']}:{desc.get('tag', 'latest')}"
    if ":" not in ref:
        ref += ":latest"
    store.set_ref(ref, {"mediaType": MANIFEST, "digest": man_digest, "size": man_size})
    return {"digest": man_digest, "ref": ref, "config": cfg_digest,
            "layers": len(layers), "layersReused": reused, "storePaths": len(graph),
            "store": store.root}


def _arch():
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
