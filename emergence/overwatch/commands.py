"""Overwatch's verbs: `stats` (one shot, podman stats' numbers) and `top` (live)."""

import os
import sys

from ..command import FLAG, VALUE, Option, UsageError, Verb

TITLE = "Telemetry (cAdvisor's metrics, podman stats' numbers)"

JSON = Option(FLAG, "print JSON instead of a table")
INTERVAL = Option(VALUE, "seconds between the two samples a rate is taken over (default 1)",
                  "SECONDS")


def _seconds(opts, default=1.0):
    try:
        s = float(opts.get("interval", default))
    except ValueError:
        raise UsageError("--interval needs a number of seconds, e.g. 0.5") from None
    if not 0.05 <= s <= 3600:
        raise UsageError("--interval must be between 0.05 and 3600 seconds")
    return s


def _stats(ctx, opts, args):
    from .. import fastjson
    from ..errors import NotFound
    from ..runtime import state
    from .views import measure, table
    if not args:
        raise UsageError("`stats` takes one or more container ids")
    for cid in args:
        state.check_id(cid)
        if cid not in state.list_ids(ctx.root):
            raise NotFound(f"container {cid!r} does not exist")
    found = measure(ctx.root, set(args), _seconds(opts))
    running = {r["id"] for r in found}
    stopped = [cid for cid in args if cid not in running]
    if stopped:
        from ..errors import StateError
        raise StateError(f"container {stopped[0]!r} is not running; stats needs a running "
                         "container")
    found.sort(key=lambda r: args.index(r["id"]))
    sys.stdout.write(fastjson.dumps(found, indent=2) + "\n" if opts.get("json")
                     else table(found))
    return 0


def _top(ctx, opts, args):
    from .. import fastjson
    from .collector import Collector
    from .views import SORT_KEYS, measure, sort, table
    if args:
        raise UsageError("`top` takes no arguments")
    key = opts.get("sort", "cpu")
    if key not in SORT_KEYS:
        raise UsageError(f"--sort must be one of {', '.join(SORT_KEYS)}")
    seconds = _seconds(opts)
    if opts.get("once"):
        found = sort(measure(ctx.root, None, seconds), key)
        sys.stdout.write(fastjson.dumps(found, indent=2) + "\n" if opts.get("json")
                         else table(found))
        return 0
    if opts.get("json"):
        raise UsageError("--json needs --once (a live view is for people)")
    from .views import Keyboard
    c = Collector(ctx.root)
    try:
        with Keyboard(0, sys.stdout) as keys:
            while True:
                found = measure(ctx.root, None, seconds, collector=c, wait=keys.wait)
                if found is None:
                    return 0
                sys.stdout.write("\x1b[H\x1b[2J" + f"emergence top  (sorted by {key}; "
                                 "q or Ctrl-C to quit)\n" + table(sort(found, key)))
                sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        c.close()


def _netns_of(root, where):
    """A container id (its init's netns, entered through a checked pidfd), or a
    netns name, path or pid, which root may name here: opened O_PATH and checked
    to be a network namespace first, so a FIFO or a device is never opened."""
    from ..runtime import state
    from .targets import Container, Path
    if state.valid_id(where) and os.path.isdir(os.path.join(root, where)):
        return Container(root, where)
    return Path(where)


def _probe(ctx, opts, args):
    """RTT (or, with --throughput, one TCP stream) from SRC to ADDR, once, in this
    process (root's own; the node's route takes container ids only)."""
    from .. import fastjson
    from ..errors import EmergenceError
    from .qos import percentile, rtt, throughput
    if len(args) != 3:
        raise UsageError("usage: emergence probe SRC DST ADDR [--count N] "
                         "[--throughput [--seconds S]] [--json]")
    src, dst = (_netns_of(ctx.root, a) for a in args[:2])
    addr = args[2]
    try:
        count = int(opts.get("count", 20))
        seconds = float(opts.get("seconds", 1.0))
    except ValueError:
        raise UsageError("--count takes a whole number, --seconds a number") from None
    if not (1 <= count <= 1000 and 0.1 <= seconds <= 60):
        raise UsageError("--count must be 1..1000 and --seconds 0.1..60")
    try:
        if opts.get("throughput"):
            result = {"kind": "throughput", "src": args[0], "dst": args[1],
                      "bytes_per_second": throughput(src, dst, addr, seconds)}
        else:
            got = rtt(src, addr, count)
            if not got:
                raise EmergenceError(f"no echo reply from {addr} seen from {args[0]} "
                                     f"({count} sent)")
            result = {"kind": "rtt", "src": args[0], "dst": args[1], "sent": count,
                      "received": len(got), "p50": percentile(got, 0.5),
                      "p99": percentile(got, 0.99)}
    except (ConnectionError, OSError) as e:
        raise EmergenceError(f"probe from {args[0]} to {addr}: {e}") from None
    except EmergenceError as e:
        raise EmergenceError(f"probe from {args[0]} to {addr}: {e}") from None
    if opts.get("json"):
        sys.stdout.write(fastjson.dumps(result) + "\n")
    elif result["kind"] == "rtt":
        sys.stdout.write(f"{args[0]} -> {args[1]} ({addr}): rtt p50 "
                         f"{result['p50'] * 1000:.3f} ms, p99 {result['p99'] * 1000:.3f} ms, "
                         f"{result['received']}/{count} replies\n")
    else:
        sys.stdout.write(f"{args[0]} -> {args[1]} ({addr}): "
                         f"{result['bytes_per_second'] * 8 / 1e6:.1f} Mbit/s\n")
    return 0


VERBS = [
    Verb("stats", "CPU %, memory / limit, net and block I/O, pids of running containers "
         "(podman stats' numbers)", "[--json] [--interval S] ID...",
         {"json": JSON, "interval": INTERVAL}, _stats),
    Verb("top", "a live view of the node's containers, sortable", "[--sort cpu|mem|net|io|"
         "pids|id] [--interval S] [--once [--json]]",
         {"json": JSON, "interval": INTERVAL,
          "sort": Option(VALUE, "column to sort by (default cpu)", "KEY"),
          "once": Option(FLAG, "print one view and exit")}, _top),
    Verb("probe", "round-trip time (or throughput) between two containers (by id) or netns "
         "(root's names, paths or pids), once, in this process",
         "SRC DST ADDR [--count N] [--throughput [--seconds S]] [--json]",
         {"json": JSON, "count": Option(VALUE, "echo requests to send (default 20)", "N"),
          "throughput": Option(FLAG, "measure one TCP stream instead of the RTT"),
          "seconds": Option(VALUE, "how long the stream runs (default 1)", "S")}, _probe),
]
