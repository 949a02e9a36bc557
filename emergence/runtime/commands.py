"""The runtime's verbs: runc's command line, option for option.

Engines call create/start/state/kill/delete constantly, so this module
imports nothing heavy; each handler loads its verb's module when called.
"""

import sys

from ..command import FLAG, MULTI, VALUE, Option, UsageError, Verb

TITLE = "Containers (runc's command line; OCI bundles)"


def _one_id(args, verb):
    if len(args) != 1:
        raise UsageError(f"`{verb}` takes exactly one container id"
                         + (f", got {len(args)}" if args else ""))
    return args[0]


def _preserve_fds(opts):
    try:
        n = int(opts.get("preserve-fds", 0))
    except ValueError:
        raise UsageError("--preserve-fds needs a number") from None
    if n < 0:
        raise UsageError("--preserve-fds must not be negative")
    return n


def _format(opts):
    fmt = opts.get("format", "table")
    if fmt not in ("table", "json"):
        raise UsageError("--format must be table or json")
    return fmt


# ---- handlers ---------------------------------------------------------------------

def _state(ctx, opts, args):
    from .. import fastjson
    from .state import Container
    with Container.open(ctx.root, _one_id(args, "state"), lock=False) as c:
        sys.stdout.write(fastjson.dumps(c.oci_state(), indent=2) + "\n")
    return 0


def _start(ctx, opts, args):
    from .start import start
    start(ctx.root, _one_id(args, "start"))
    return 0


def _create(ctx, opts, args):
    from .create import create
    create(ctx.root, _one_id(args, "create"), opts.get("bundle", "."),
           pid_file=opts.get("pid-file"), no_pivot=opts.get("no-pivot", False),
           preserve_fds=_preserve_fds(opts), debug=ctx.debug,
           console_socket=opts.get("console-socket"), nets=opts.get("net", ()),
           publish=opts.get("publish", ()))
    return 0


def _run(ctx, opts, args):
    from .run import run
    return run(ctx.root, _one_id(args, "run"), opts.get("bundle", "."),
               pid_file=opts.get("pid-file"), no_pivot=opts.get("no-pivot", False),
               detach=opts.get("detach", False), preserve_fds=_preserve_fds(opts),
               debug=ctx.debug, console_socket=opts.get("console-socket"),
               keep=opts.get("keep", False), nets=opts.get("net", ()),
               publish=opts.get("publish", ()))


def _exec(ctx, opts, args):
    from .execute import exec_command
    if not args:
        raise UsageError("usage: emergence exec [options] ID [COMMAND [ARG...]]")
    return exec_command(ctx.root, args[0], args[1:], opts, _preserve_fds(opts),
                        debug=ctx.debug)


def _pause(ctx, opts, args):
    from .pause import pause
    pause(ctx.root, _one_id(args, "pause"))
    return 0


def _resume(ctx, opts, args):
    from .pause import resume
    resume(ctx.root, _one_id(args, "resume"))
    return 0


def _ps(ctx, opts, args):
    from .ps import ps
    if not args:
        raise UsageError("usage: emergence ps [--format table|json] ID [PS ARGS...]")
    sys.stdout.write(ps(ctx.root, args[0], _format(opts), args[1:]))
    return 0


def _events(ctx, opts, args):
    from .events import events
    try:
        interval = float(str(opts.get("interval", "5")).rstrip("s"))
    except ValueError:
        raise UsageError("--interval takes seconds, like 5 or 5s") from None
    if interval <= 0:
        raise UsageError("--interval must be positive")
    return events(ctx.root, _one_id(args, "events"), stats_once=opts.get("stats", False),
                  interval=interval)


def _update(ctx, opts, args):
    from .update import resources_from_file, resources_from_flags, update
    cid = _one_id(args, "update")
    for unsupported in ("l3-cache-schema", "mem-bw-schema"):
        if unsupported in opts:
            raise UsageError(f"--{unsupported}: Intel RDT is not supported")
    res = resources_from_file(opts["resources"]) if "resources" in opts else {}
    res.update(resources_from_flags(opts))
    update(ctx.root, cid, res)
    return 0


def _features(ctx, opts, args):
    from .. import fastjson
    from .features import features
    if args:
        raise UsageError("`features` takes no arguments")
    sys.stdout.write(fastjson.dumps(features(), indent=2) + "\n")
    return 0


def _kill(ctx, opts, args):
    from .kill import kill, parse_signal
    if not 1 <= len(args) <= 2:
        raise UsageError("usage: emergence kill [--all] ID [SIGNAL]")
    sig = parse_signal(args[1]) if len(args) == 2 else 15
    kill(ctx.root, args[0], sig, all_processes=opts.get("all", False))
    return 0


def _delete(ctx, opts, args):
    from .delete import delete
    delete(ctx.root, _one_id(args, "delete"), force=opts.get("force", False))
    return 0


def _list(ctx, opts, args):
    from .listing import list_containers
    sys.stdout.write(list_containers(ctx.root, _format(opts), opts.get("quiet", False)))
    return 0


def _spec(ctx, opts, args):
    from .spec import write_spec
    if args:
        raise UsageError("`spec` takes no arguments (use --bundle DIR)")
    write_spec(opts.get("bundle", "."), rootless=opts.get("rootless", False))
    return 0


# ---- the verbs ----------------------------------------------------------------------

BUNDLE = Option(VALUE, "the bundle directory (default: the current one)", "DIR", ("b",))
PID_FILE = Option(VALUE, "write the container's (or process's) pid to FILE", "FILE")
CONSOLE_SOCKET = Option(VALUE, "send the pty master of a terminal process to this unix "
                               "socket (SCM_RIGHTS)", "PATH")
PRESERVE_FDS = Option(VALUE, "pass N more fds (3..3+N-1) to the process", "N")
NO_PIVOT = Option(FLAG, "chroot instead of pivot_root (for a rootfs on ramfs)")
NO_NEW_KEYRING = Option(FLAG, "accepted; the session keyring is left as it is")
DETACH = Option(FLAG, "return once the process has started", aliases=("d",))
FORMAT = Option(VALUE, "table or json", "FORMAT", ("f",))
_RESOURCE_FLAGS = {
    "memory": "memory limit (bytes, or with k/m/g)",
    "memory-reservation": "memory soft limit",
    "memory-swap": "memory+swap limit (-1: unlimited)",
    "kernel-memory": "kernel memory limit (v1 only)",
    "kernel-memory-tcp": "kernel TCP buffer limit (v1 only)",
    "cpu-share": "relative CPU weight (also --cpu-shares)",
    "cpu-quota": "CFS quota in microseconds per period",
    "cpu-period": "CFS period in microseconds",
    "cpu-rt-period": "realtime period in microseconds",
    "cpu-rt-runtime": "realtime runtime in microseconds",
    "cpuset-cpus": "CPUs to run on (0-3,5)",
    "cpuset-mems": "memory nodes to use",
    "pids-limit": "maximum number of processes",
    "blkio-weight": "block I/O weight (10-1000)",
    "l3-cache-schema": "Intel RDT: refused, not supported",
    "mem-bw-schema": "Intel RDT: refused, not supported",
}

# attach to Relay networks through OCI hooks (`emergence net hook`)
NET = Option(MULTI, "attach to network NAME (eth0, eth1, ...), optionally at a fixed address",
             "NAME[:ip=IP]")
PUBLISH = Option(MULTI, "forward a host port to the container (on the first --net)",
                 "HOST:CONT[/PROTO]", aliases=("p",))

VERBS = [
    Verb("spec", "write a starting config.json, like `runc spec`", "[--bundle DIR] [--rootless]",
         {"bundle": BUNDLE, "rootless": Option(FLAG, "a config for a user namespace")}, _spec),
    Verb("create", "create a container, waiting at the start barrier",
         "[--bundle DIR] [--pid-file F] [--console-socket S] ID",
         {"bundle": BUNDLE, "pid-file": PID_FILE, "no-pivot": NO_PIVOT,
          "console-socket": CONSOLE_SOCKET, "preserve-fds": PRESERVE_FDS,
          "no-new-keyring": NO_NEW_KEYRING, "net": NET, "publish": PUBLISH}, _create),
    Verb("start", "start a created container's process", "ID", {}, _start),
    Verb("run", "create, start and wait; exits with the container's status (128+N for "
         "signal N)", "[--bundle DIR] [--detach] [--pid-file F] ID",
         {"bundle": BUNDLE, "pid-file": PID_FILE, "no-pivot": NO_PIVOT, "detach": DETACH,
          "console-socket": CONSOLE_SOCKET, "preserve-fds": PRESERVE_FDS,
          "no-new-keyring": NO_NEW_KEYRING, "net": NET, "publish": PUBLISH,
          "keep": Option(FLAG, "keep the stopped container after its process exits "
                               "(remove it with `delete`)")}, _run),
    Verb("state", "print a container's state as JSON (the runtime-spec's state)", "ID", {},
         _state),
    Verb("kill", "send a signal (default TERM) to a container's init, or to all its "
         "processes", "[--all] ID [SIGNAL]",
         {"all": Option(FLAG, "signal every process in the container", aliases=("a",))}, _kill),
    Verb("delete", "delete a stopped container (--force: any container)", "[--force] ID",
         {"force": Option(FLAG, "kill a running container first", aliases=("f",))}, _delete),
    Verb("list", "list containers", "[--format table|json] [-q]",
         {"format": FORMAT, "quiet": Option(FLAG, "only the ids", aliases=("q",))}, _list),
    Verb("exec", "run another process in a running container",
         "[options] ID [COMMAND [ARG...]]  or  exec --process FILE ID",
         {"process": Option(VALUE, "the process as JSON (config.json's process)", "FILE",
                            ("p",)),
          "tty": Option(FLAG, "allocate a terminal", aliases=("t",)),
          "cwd": Option(VALUE, "working directory inside the container", "DIR"),
          "env": Option(MULTI, "set an environment variable", "K=V", ("e",)),
          "user": Option(VALUE, "run as UID[:GID]", "U[:G]", ("u",)),
          "additional-gids": Option(MULTI, "an additional group", "GID", ("g",)),
          "cap": Option(MULTI, "add a capability", "CAP", ("c",)),
          "no-new-privs": Option(FLAG, "set no_new_privs"),
          "apparmor": Option(VALUE, "AppArmor profile (refused where AppArmor is on)",
                             "PROFILE"),
          "process-label": Option(VALUE, "SELinux label (refused where SELinux is on)",
                                  "LABEL"),
          "detach": DETACH, "pid-file": PID_FILE, "console-socket": CONSOLE_SOCKET,
          "preserve-fds": PRESERVE_FDS,
          "ignore-paused": Option(FLAG, "refused: a process cannot start in a frozen "
                                        "cgroup"),
          "cgroup": Option(VALUE, "refused: the process joins the container's cgroup",
                           "PATH")},
         _exec, stop_at_positional=True),
    Verb("pause", "freeze a running container (v1 freezer or cgroup.freeze)", "ID", {}, _pause),
    Verb("resume", "thaw a paused container", "ID", {}, _resume),
    Verb("ps", "list a container's processes", "[--format table|json] ID [PS ARGS...]",
         {"format": FORMAT}, _ps, stop_at_positional=True),
    Verb("events", "resource usage and OOM events, as JSON lines",
         "[--stats] [--interval 5s] ID",
         {"stats": Option(FLAG, "print the usage once and exit"),
          "interval": Option(VALUE, "seconds between stats (default 5)", "SECONDS")},
         _events),
    Verb("update", "change a running container's limits",
         "[-r FILE] [--memory 100m] [--pids-limit N] ... ID",
         {"resources": Option(VALUE, "linux.resources as JSON ('-': stdin)", "FILE", ("r",)),
          **{k: Option(VALUE, h, aliases=("cpu-shares",) if k == "cpu-share" else ())
             for k, h in _RESOURCE_FLAGS.items()}}, _update),
    Verb("features", "what this runtime supports, as JSON (features-schema.json)", "", {},
         _features),
]
