"""The sharing verbs: pull from peers, push to a node or registry, list the
peers.  They work without a running node: the peers come from the node's
config file (/etc/emergence/node.toml, [share]) and --peer."""

import sys

from ..command import JSON, MULTI, VALUE, Option, UsageError, Verb
from ..errors import EmergenceError

TITLE = "Sharing (peers from [share] in /etc/emergence/node.toml, or --peer URL)"
STATE = "/var/lib/emergence/share"


def _config(opts):
    """[share] of the node's config, checked as the node checks it, then
    updated by the command line."""
    from .. import nodefile
    from .service import Service
    from .signing import public_keys
    file, data = nodefile.read(opts.get("config"))
    cfg = nodefile.section(file, "share", Service.DEFAULTS, data.get("share", {}))
    public_keys(cfg["trusted_keys"], f"{file}: [share] trusted_keys:")
    if opts.get("peer"):
        cfg["peers"] = list(cfg["peers"]) + opts["peer"]
    if opts.get("upstream"):
        cfg["upstream"] = opts["upstream"]
    if opts.get("trusted-key"):
        cfg["trusted_keys"] = list(cfg["trusted_keys"]) + public_keys(opts["trusted-key"],
                                                                      "--trusted-key")
    for p in cfg["peers"]:
        if not p.startswith(("http://", "https://")):
            raise EmergenceError(f"peer {p!r} is not an http(s):// URL")
    return cfg


class _Progress:
    """A tqdm bar on a terminal (imported only then); nothing otherwise."""

    def __init__(self, desc, quiet):
        self.bar = None
        self.quiet = quiet or not sys.stderr.isatty()
        self.desc = desc

    def __call__(self, n, total=None):
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=self.desc, file=sys.stderr, leave=False)
        if n:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _finish(go, bar, opts, line):
    """Run the transfer GO with its progress BAR; print its result as JSON
    (--json) or as LINE(result)."""
    import asyncio

    from .. import fastjson
    try:
        result = asyncio.run(go())
    finally:
        bar.close()
    sys.stdout.write(fastjson.dumps(result) + "\n" if opts.get("json") else line(result) + "\n")
    return 0


def _pull(ctx, opts, args):
    import asyncio

    from ..image.store import Store
    from .fetch import Puller
    if len(args) != 1:
        raise UsageError("usage: emergence pull NAME[:TAG|@DIGEST] [--peer URL]... [--json]")
    cfg = _config(opts)
    try:
        stall = float(opts.get("stall") or 5)
        if stall <= 0:
            raise ValueError
    except ValueError:
        raise UsageError("--stall takes a positive number of seconds") from None
    bar = _Progress(args[0], opts.get("json"))
    puller = Puller(Store(ctx.store), opts.get("state") or STATE, cfg["peers"],
                    cfg["upstream"], cfg["trusted_keys"], stall, progress=bar)

    async def go():
        import aiohttp
        try:
            return await puller.pull(args[0])
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise EmergenceError(f"pull of {args[0]} failed: {type(e).__name__} {e}; "
                                 "run it again to resume") from None
    return _finish(go, bar, opts, lambda r: r["digest"])


def _push(ctx, opts, args):

    from ..image.store import Store
    from .client import push
    if len(args) != 2:
        raise UsageError("usage: emergence push IMAGE http(s)://HOST[:PORT]/NAME:TAG "
                         "[--token-file FILE]")
    auth = None
    if opts.get("token-file"):
        try:
            with open(opts["token-file"]) as f:
                auth = "Bearer " + f.read().strip()
        except OSError as e:
            raise EmergenceError(f"cannot read the token file: {e.strerror}") from None
    bar = _Progress(args[0], opts.get("json"))

    async def go():
        import aiohttp
        async with aiohttp.ClientSession() as s:
            try:
                return await push(s, Store(ctx.store, create=False), args[0], args[1], auth,
                                  bar)
            except aiohttp.ClientError as e:
                raise EmergenceError(f"cannot push to {args[1]}: {e}") from None
    return _finish(go, bar, opts, lambda r: f"{r['digest']} -> {r['destination']}")


def _peers(ctx, opts, args):
    import asyncio

    from .. import fastjson
    if args:
        raise UsageError("usage: emergence peers [--peer URL]... [--trusted-key KEY]... "
                         "[--json]")
    cfg = _config(opts)

    async def go():
        import time

        import aiohttp

        from .peers import discover
        async with aiohttp.ClientSession() as s:
            found = await discover(s, cfg["peers"], trusted_keys=cfg["trusted_keys"])
            static = {p.rstrip("/") for p in cfg["peers"]}

            async def one(peer):
                t = time.monotonic()
                try:
                    async with s.get(peer + "/v2/_catalog",
                                     timeout=aiohttp.ClientTimeout(total=3)) as r:
                        repos = (await r.json()).get("repositories", [])
                    async with s.get(peer + "/share/v1/info",
                                     timeout=aiohttp.ClientTimeout(total=3)) as r:
                        key = (await r.json()).get("public_key")
                    return {"peer": peer, "up": True, "repositories": repos, "key": key,
                            "latency_ms": round((time.monotonic() - t) * 1000, 1),
                            "learned": peer not in static}
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError):
                    return {"peer": peer, "up": False, "learned": peer not in static}
            return await asyncio.gather(*(one(p) for p in found))
    rows = asyncio.run(go())
    if opts.get("json"):
        sys.stdout.write(fastjson.dumps(rows) + "\n")
    else:
        for r in rows:
            sys.stdout.write(f"{r['peer']}  " + ("learned  " if r["learned"] else "") + (
                f"{r['latency_ms']} ms  {' '.join(r['repositories']) or '-'}" if r["up"]
                else "down") + "\n")
    return 0


_PEER = Option(MULTI, "a peer node's URL (added to [share] peers)", "URL")
_CONFIG = Option(VALUE, "the node's config file (default /etc/emergence/node.toml)", "FILE")
_TRUSTED = Option(MULTI, "a node key (NAME:BASE64) whose piece lists, tag statements and "
                         "member records to trust", "KEY")

VERBS = [
    Verb("pull", "fetch an image from many peers at once, every piece verified",
         "NAME[:TAG|@DIGEST] [--peer URL]... [--upstream URL] [--json]",
         {"peer": _PEER, "config": _CONFIG,
          "upstream": Option(VALUE, "a registry for what no peer has", "URL"),
          "trusted-key": _TRUSTED,
          "state": Option(VALUE, f"where partial downloads wait (default {STATE})", "DIR"),
          "stall": Option(VALUE, "seconds without a byte before a peer is dropped "
                                 "(default 5)", "SECONDS"),
          "json": JSON}, _pull),
    Verb("push", "send an image to a node or registry",
         "IMAGE http(s)://HOST[:PORT]/NAME:TAG [--token-file FILE] [--json]",
         {"token-file": Option(VALUE, "the node's token (its state dir's root-only node.token)",
                               "FILE"),
          "json": JSON}, _push),
    Verb("peers", "the peers (static and learned), their latency and what they hold",
         "[--peer URL]... [--trusted-key KEY]... [--json]",
         {"peer": _PEER, "config": _CONFIG, "trusted-key": _TRUSTED, "json": JSON}, _peers),
]
