"""`build`: a Nix expression becomes an OCI image in the store.

nix.py realises the expression into a description (config, content roots,
closure graph); layers.py groups the closure into reproducible layers in the
store; farm.py adds the links layer; here the config, manifest and tag are
recorded.
"""

import os
import sys

from .. import fastjson
from ..errors import EmergenceError
from .farm import symlink_farm
from .layers import cached_layer, group_layers, write_layer
from .nix import parse_closure, realise
from .store import CONFIG, LAYER, MANIFEST, Store, canonical

CREATED = "1970-01-01T00:00:01Z"  # the image's creation time: layers.EPOCH
ANNOTATION_PATHS = "io.github.emergence.nix.store-paths"
ANNOTATION_CONTENTS = "io.github.emergence.nix.contents"


def build(store_root, expr_file, attr=None, args=(), argstrs=(), tag=None, progress=None,
          peers=(), trusted_keys=(), config=None):
    """Build EXPR_FILE into the store; return a result dict (printed as --json).
    With peers (share's [share] config or PEERS) and trusted keys, their signed
    Nix caches are substituters: what a peer built is copied, not rebuilt."""
    if not os.path.exists(expr_file):
        raise EmergenceError(f"{expr_file}: no such Nix expression")
    if progress is None:
        progress = sys.stderr.isatty()
    desc_dir = realise(expr_file, attr, args, argstrs, progress,
                       _substituters(peers, trusted_keys, config))
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


def _substituters(peers, trusted_keys, config):
    """nix-build options for the peers' caches, if any peers are configured."""
    if not peers and not os.path.exists(config or "/etc/emergence/node.toml"):
        return []
    from .. import share
    from .nix import offline
    cfg = share.config(config, peers, trusted_keys)
    return share.substituter_options(cfg["peers"], cfg["trusted_keys"], offline())


def _arch():
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
