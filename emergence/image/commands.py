"""The image verbs: build from Nix, the store's images, archives, bundles,
and `run --image`.  Each handler loads its module when called."""

import sys

from ..command import FLAG, JSON, MULTI, PAIR, VALUE, Option, UsageError, Verb
from ..errors import EmergenceError

TITLE = "Images (--store DIR, an OCI image layout; default /var/lib/emergence)"


def _one(args, verb):
    if len(args) != 1:
        raise UsageError(f"`{verb}` takes exactly one image")
    return args[0]


def _build(ctx, opts, args):
    from .. import fastjson
    from .build import build
    if len(args) != 1:
        raise UsageError("usage: emergence build FILE.nix [-A ATTR] [--arg N EXPR] "
                         "[--argstr N VALUE] [-t NAME:TAG] [--json]")
    result = build(ctx.store, args[0], attr=opts.get("A"), args=opts.get("arg", []),
                   argstrs=opts.get("argstr", []), tag=opts.get("t"),
                   peers=opts.get("peer", ()), trusted_keys=opts.get("trusted-key", ()),
                   config=opts.get("config"))
    sys.stdout.write(fastjson.dumps(result) + "\n" if opts.get("json")
                     else f"{result['digest']}\n")
    return 0


def _images(ctx, opts, args):
    from .images import images
    fmt = "json" if opts.get("json") else opts.get("format", "table")
    sys.stdout.write(images(ctx.store, fmt))
    return 0


def _inspect(ctx, opts, args):
    from .. import fastjson
    from .images import inspect
    sys.stdout.write(fastjson.dumps(inspect(ctx.store, _one(args, "inspect")), indent=2)
                     + "\n")
    return 0


def _tag(ctx, opts, args):
    from .images import tag
    if len(args) != 2:
        raise UsageError("usage: emergence tag IMAGE NAME:TAG")
    tag(ctx.store, args[0], args[1])
    return 0


def _rmi(ctx, opts, args):
    from .images import rmi
    rmi(ctx.store, _one(args, "rmi"))
    return 0


def _gc(ctx, opts, args):
    from .. import fastjson
    from .images import gc
    removed, freed = gc(ctx.store, pipeline=opts.get("pipeline", False))
    sys.stdout.write(fastjson.dumps({"removed": removed, "bytes": freed}) + "\n"
                     if opts.get("json") else f"removed {removed} blobs, {freed} bytes\n")
    return 0


def _verify(ctx, opts, args):
    from .. import fastjson
    from .images import verify
    problems = verify(ctx.store)
    if opts.get("json"):
        sys.stdout.write(fastjson.dumps([{"digest": d, "problem": p}
                                         for d, p in problems]) + "\n")
    else:
        for d, p in problems:
            sys.stdout.write(f"{d}: {p}\n")
    if problems:
        raise EmergenceError(f"{len(problems)} problem(s) in the store {ctx.store}; "
                             "rebuild or re-import the affected images, then `gc`")
    return 0


def _export(ctx, opts, args):
    from .archive import export
    if len(args) != 1 or not opts.get("o"):
        raise UsageError("usage: emergence export IMAGE -o FILE.tar "
                         "[--format oci-archive|docker-archive]")
    export(ctx.store, args[0], opts["o"], opts.get("format", "oci-archive"))
    return 0


def _import(ctx, opts, args):
    from .archive import import_archive
    if len(args) != 1:
        raise UsageError("usage: emergence import FILE.tar [-t NAME:TAG]")
    for ref in import_archive(ctx.store, args[0], opts.get("t")):
        sys.stdout.write(ref + "\n")
    return 0


def _bundle(ctx, opts, args):
    from .unpack import make_bundle
    if len(args) < 2:
        raise UsageError("usage: emergence bundle IMAGE DIR [COMMAND...]")
    make_bundle(ctx.store, args[0], args[1], args[2:] or None)
    return 0


def _run_image(ctx, opts, args):
    from .run_image import run_image
    if not opts.get("image") or not args:
        raise UsageError("usage: emergence run --image IMAGE ID [-- COMMAND...]")
    return run_image(ctx.root, ctx.store, opts["image"], args[0], args[1:] or None,
                     detach=opts.get("detach", False), peers=opts.get("peer", ()),
                     trusted_keys=opts.get("trusted-key", ()), config=opts.get("config"))


TAG = Option(VALUE, "name the image NAME:TAG in the store", "NAME:TAG", ("tag",))
PEERS = {  # where a miss is fetched from: share's peers ([share] in the node's config)
    "peer": Option(MULTI, "a peer node's URL (added to [share] peers)", "URL"),
    "trusted-key": Option(MULTI, "a node key (NAME:BASE64) whose signatures to trust", "KEY"),
    "config": Option(VALUE, "the node's config file (default /etc/emergence/node.toml)",
                     "FILE"),
}

VERBS = [
    Verb("build", "build a Nix expression into a reproducible OCI image in the store",
         "FILE.nix [-A ATTR] [--arg N EXPR] [--argstr N V] [-t NAME:TAG] [--json]",
         {"A": Option(VALUE, "the attribute to build", "ATTR", ("attr",)),
          "arg": Option(PAIR, "pass a Nix expression as a function argument"),
          "argstr": Option(PAIR, "pass a string as a function argument"),
          "t": TAG, "json": JSON, **PEERS}, _build),
    Verb("images", "list the images in the store", "[--json]",
         {"format": Option(VALUE, "table or json", "FORMAT"), "json": JSON}, _images),
    Verb("inspect", "an image's digest, manifest and config, as JSON", "IMAGE", {}, _inspect),
    Verb("tag", "give an image another name", "IMAGE NAME:TAG", {}, _tag),
    Verb("rmi", "remove a name (the blobs go with `gc`)", "NAME:TAG", {}, _rmi),
    Verb("gc", "remove the blobs no image (nor a pipeline's cached result) references",
         "[--pipeline] [--json]",
         {"json": JSON,
          "pipeline": Option(FLAG, "also remove the pipeline's cached stage results")}, _gc),
    Verb("verify", "re-hash the store and report corruption", "[--json]", {"json": JSON},
         _verify),
    Verb("export", "write an image as an archive",
         "IMAGE -o FILE.tar [--format oci-archive|docker-archive]",
         {"o": Option(VALUE, "the archive to write", "FILE", ("output",)),
          "format": Option(VALUE, "oci-archive (default) or docker-archive", "FORMAT")},
         _export),
    Verb("import", "read an archive into the store, verifying every blob",
         "FILE.tar [-t NAME:TAG]", {"t": TAG}, _import),
    Verb("bundle", "unpack an image into a runtime bundle (rootfs + config.json)",
         "IMAGE DIR [COMMAND...]", {}, _bundle),
    Verb("run", "run a Nix-built image straight from /nix/store, nothing unpacked",
         "--image IMAGE [--detach] ID [-- COMMAND...]",
         {"image": Option(VALUE, "the image to run", "IMAGE"),
          "detach": Option(FLAG, "return once the process has started", aliases=("d",)),
          **PEERS}, _run_image),
]
