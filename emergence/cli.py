"""The runc-compatible command line.

Engines call create/start/state/kill/delete constantly, so this module
imports only what every command needs; each verb's module loads on use.
Options follow runc's: global ones before the command, `--flag value`,
`--flag=value`, and single-dash long forms (`-bundle`) as Go's flag parser
accepts them.  Every error is one line on stderr (and a JSON line in --log
when asked) with a non-zero exit.
"""

import os
import sys

from .errors import EmergenceError

USAGE = """usage: emergence [global options] COMMAND [options] [args]

Commands:
  spec     write a default config.json (--bundle DIR, --rootless)
  create   create a container: create [--bundle DIR] [--pid-file F] [--no-pivot] ID
  start    start a created container: start ID
  run      create, start and wait: run [--bundle DIR] [--detach] [--pid-file F] ID
  state    print a container's state as JSON: state ID
  kill     signal a container: kill [--all] ID [SIGNAL]
  delete   delete a container: delete [--force] ID
  list     list containers: list [--format table|json] [-q]
  exec     run a process in a container: exec [--tty] [--user U[:G]] [--env K=V]...
           [--cwd D] [--cap CAP]... [--detach] [--pid-file F] [--process FILE] ID [CMD...]
  pause    freeze a running container: pause ID
  resume   thaw a paused container: resume ID
  ps       its processes: ps [--format table|json] ID [PS ARGS...]
  events   resource usage and OOM events: events [--stats] [--interval 5s] ID
  update   change limits live: update [-r FILE] [--memory 100m] [--pids-limit N] ... ID
  features what this runtime supports, as JSON

Artifacts (--store DIR, default /var/lib/emergence, an OCI image layout):
  build    build FILE.nix [-A ATTR] [--arg N EXPR] [--argstr N V] [-t NAME:TAG] [--json]
  images   list images [--json]          inspect IMAGE    tag IMAGE NAME:TAG    rmi NAME:TAG
  gc       remove unreferenced blobs     verify   re-hash the store, report corruption
  bundle   bundle IMAGE DIR [CMD...]: unpack an image into a runtime bundle
  export   export IMAGE -o FILE.tar [--format oci-archive|docker-archive]
  import   import FILE.tar [-t NAME:TAG]
  run --image IMAGE ID [-- CMD...]: run a Nix-built image straight from /nix/store

Global options:
  --root DIR            state directory (default /run/emergence)
  --log FILE            also write errors to FILE
  --log-format FORMAT   text or json (for --log)
  --debug               show the plan and more detail
  --systemd-cgroup      accepted; emergence manages cgroupfs directly
  --version             print the version
"""

# option name -> True (takes a value), False (a flag), MULTI (a value, repeatable:
# collected in a list) or another option's name (an alias)
MULTI = object()
PAIR = object()  # two values, repeatable (--argstr NAME VALUE)
GLOBAL_OPTIONS = {
    "root": True, "log": True, "log-format": True, "debug": False, "systemd-cgroup": False,
    "rootless": True, "criu": True, "version": False, "help": False, "h": False, "v": False,
    "store": True,
}
COMMAND_OPTIONS = {
    "spec": {"bundle": True, "b": "bundle", "rootless": False},
    "create": {"bundle": True, "b": "bundle", "pid-file": True, "no-pivot": False,
               "console-socket": True, "preserve-fds": True, "no-new-keyring": False},
    "run": {"bundle": True, "b": "bundle", "pid-file": True, "no-pivot": False,
            "detach": False, "d": "detach", "console-socket": True, "preserve-fds": True,
            "no-new-keyring": False, "keep": False, "image": True},
    "build": {"A": True, "attr": "A", "arg": PAIR, "argstr": PAIR, "t": True, "tag": "t",
              "json": False},
    "images": {"format": True, "json": False},
    "inspect": {},
    "tag": {},
    "rmi": {},
    "gc": {"json": False},
    "verify": {"json": False},
    "exec": {"process": True, "p": "process", "tty": False, "t": "tty", "cwd": True,
             "env": MULTI, "e": "env", "user": True, "u": "user", "additional-gids": MULTI,
             "g": "additional-gids", "cap": MULTI, "c": "cap", "no-new-privs": False,
             "apparmor": True, "process-label": True, "detach": False, "d": "detach",
             "pid-file": True, "console-socket": True, "preserve-fds": True,
             "ignore-paused": False, "cgroup": True},
    "start": {},
    "state": {},
    "kill": {"all": False, "a": "all"},
    "pause": {},
    "resume": {},
    "ps": {"format": True, "f": "format"},
    "events": {"stats": False, "interval": True},
    "bundle": {},
    "export": {"format": True, "o": True, "output": "o"},
    "import": {"t": True, "tag": "t"},
    "features": {},
    "update": {"resources": True, "r": "resources", **{k: True for k in (
        "memory", "memory-reservation", "memory-swap", "kernel-memory", "kernel-memory-tcp",
        "cpu-shares", "cpu-quota", "cpu-period", "cpu-rt-period", "cpu-rt-runtime",
        "cpuset-cpus", "cpuset-mems", "pids-limit", "blkio-weight", "l3-cache-schema",
        "mem-bw-schema")}},
    "delete": {"force": False, "f": "force"},
    "list": {"format": True, "f": "format", "quiet": False, "q": "quiet"},
}


class UsageError(EmergenceError):
    exit_code = 2


def parse_options(argv, table, stop_at_positional):
    """Parse leading options; return (options dict, remaining args)."""
    opts = {}
    rest = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            if stop_at_positional:
                rest.extend(argv[i:])
                break
            rest.append(arg)
            i += 1
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        spec = table.get(name)
        if isinstance(spec, str):  # an alias
            name, spec = spec, table[spec]
        if spec is None:
            raise UsageError(f"unknown option {arg}; see `emergence --help`")
        if spec is PAIR:
            if eq or i + 2 >= len(argv):
                raise UsageError(f"option {arg} needs a name and a value")
            opts.setdefault(name, []).append((argv[i + 1], argv[i + 2]))
            i += 3
            continue
        if spec is True or spec is MULTI:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"option {arg} needs a value")
                value = argv[i]
            if spec is MULTI:
                opts.setdefault(name, []).append(value)
            else:
                opts[name] = value
        else:
            opts[name] = value.lower() not in ("false", "0") if eq else True
        i += 1
    return opts, rest


def _one_id(args, command):
    if len(args) != 1:
        raise UsageError(f"`{command}` takes exactly one container id"
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


def dispatch(g, command, argv):
    table = COMMAND_OPTIONS.get(command)
    if table is None:
        raise UsageError(f"unknown command {command!r}; see `emergence --help`")
    # exec's command keeps its own options: stop at the first word after the id
    # exec's command and ps's arguments keep their own options
    opts, args = parse_options(argv, table, stop_at_positional=command in ("exec", "ps"))
    from . import DEFAULT_ROOT, default_store
    root = g.get("root") or DEFAULT_ROOT
    store = g.get("store") or default_store()
    if command == "state":
        from . import fastjson
        from .state import Container
        cid = _one_id(args, command)
        with Container.open(root, cid, lock=False) as c:
            sys.stdout.write(fastjson.dumps(c.oci_state(), indent=2) + "\n")
        return 0
    if command == "start":
        from .start import start
        start(root, _one_id(args, command))
        return 0
    if command == "create":
        from .create import create
        create(root, _one_id(args, command), opts.get("bundle", "."),
               pid_file=opts.get("pid-file"), no_pivot=opts.get("no-pivot", False),
               preserve_fds=_preserve_fds(opts), debug=g.get("debug", False),
               console_socket=opts.get("console-socket"))
        return 0
    if command == "run" and opts.get("image"):
        from .images import run_image
        if not args:
            raise UsageError("usage: emergence run --image IMAGE ID [-- COMMAND...]")
        return run_image(root, store, opts["image"], args[0], args[1:] or None,
                         detach=opts.get("detach", False))
    if command in ("build", "images", "inspect", "tag", "rmi", "gc", "verify", "bundle",
                   "export", "import"):
        return image_command(command, opts, args, store)
    if command == "run":
        from .run import run
        return run(root, _one_id(args, command), opts.get("bundle", "."),
                   pid_file=opts.get("pid-file"), no_pivot=opts.get("no-pivot", False),
                   detach=opts.get("detach", False), preserve_fds=_preserve_fds(opts),
                   debug=g.get("debug", False), console_socket=opts.get("console-socket"))
    if command == "exec":
        from .execute import exec_command
        if not args:
            raise UsageError("usage: emergence exec [options] ID [COMMAND [ARG...]]")
        return exec_command(root, args[0], args[1:], opts, _preserve_fds(opts),
                            debug=g.get("debug", False))
    if command in ("pause", "resume"):
        from . import pause
        getattr(pause, command)(root, _one_id(args, command))
        return 0
    if command == "ps":
        from .ps import ps
        if not args:
            raise UsageError("usage: emergence ps [--format table|json] ID [PS ARGS...]")
        fmt = opts.get("format", "table")
        if fmt not in ("table", "json"):
            raise UsageError("--format must be table or json")
        sys.stdout.write(ps(root, args[0], fmt, args[1:]))
        return 0
    if command == "events":
        from .events import events
        try:
            interval = float(str(opts.get("interval", "5")).rstrip("s"))
        except ValueError:
            raise UsageError("--interval takes seconds, like 5 or 5s") from None
        if interval <= 0:
            raise UsageError("--interval must be positive")
        return events(root, _one_id(args, command), stats_once=opts.get("stats", False),
                      interval=interval)
    if command == "update":
        from .update import resources_from_file, resources_from_flags, update
        cid = _one_id(args, command)
        for unsupported in ("l3-cache-schema", "mem-bw-schema"):
            if unsupported in opts:
                raise UsageError(f"--{unsupported}: Intel RDT is not supported")
        res = resources_from_file(opts["resources"]) if "resources" in opts else {}
        res.update(resources_from_flags(opts))
        update(root, cid, res)
        return 0
    if command == "features":
        from . import fastjson
        from .features import features
        if args:
            raise UsageError("`features` takes no arguments")
        sys.stdout.write(fastjson.dumps(features(), indent=2) + "\n")
        return 0
    if command == "kill":
        from .kill import kill, parse_signal
        if not 1 <= len(args) <= 2:
            raise UsageError("usage: emergence kill [--all] ID [SIGNAL]")
        sig = parse_signal(args[1]) if len(args) == 2 else 15
        kill(root, args[0], sig, all_processes=opts.get("all", False))
        return 0
    if command == "delete":
        from .delete import delete
        delete(root, _one_id(args, command), force=opts.get("force", False))
        return 0
    if command == "list":
        from .listing import list_containers
        fmt = opts.get("format", "table")
        if fmt not in ("table", "json"):
            raise UsageError("--format must be table or json")
        sys.stdout.write(list_containers(root, fmt, opts.get("quiet", False)))
        return 0
    if command == "spec":
        from .spec import write_spec
        if args:
            raise UsageError("`spec` takes no arguments (use --bundle DIR)")
        write_spec(opts.get("bundle", "."), rootless=opts.get("rootless", False))
        return 0
    raise UsageError(f"unknown command {command!r}")


def image_command(command, opts, args, store):
    """The artifact side: build, images, inspect, tag, rmi, gc, verify, bundle."""
    from . import fastjson
    if command == "build":
        from .nixbuild import build
        if len(args) != 1:
            raise UsageError("usage: emergence build FILE.nix [-A ATTR] [--arg N EXPR] "
                             "[--argstr N VALUE] [-t NAME:TAG] [--json]")
        result = build(store, args[0], attr=opts.get("A"), args=opts.get("arg", []),
                       argstrs=opts.get("argstr", []), tag=opts.get("t"))
        sys.stdout.write(fastjson.dumps(result) + "\n" if opts.get("json")
                         else f"{result['digest']}\n")
        return 0
    if command == "images":
        from .images import images
        fmt = "json" if opts.get("json") else opts.get("format", "table")
        sys.stdout.write(images(store, fmt))
        return 0
    if command == "inspect":
        from .images import inspect
        sys.stdout.write(fastjson.dumps(inspect(store, _one(args, "inspect")), indent=2) + "\n")
        return 0
    if command == "tag":
        from .images import tag
        if len(args) != 2:
            raise UsageError("usage: emergence tag IMAGE NAME:TAG")
        tag(store, args[0], args[1])
        return 0
    if command == "rmi":
        from .images import rmi
        rmi(store, _one(args, "rmi"))
        return 0
    if command == "gc":
        from .images import gc
        removed, freed = gc(store)
        sys.stdout.write(fastjson.dumps({"removed": removed, "bytes": freed}) + "\n"
                         if opts.get("json") else f"removed {removed} blobs, {freed} bytes\n")
        return 0
    if command == "verify":
        from .images import verify
        problems = verify(store)
        if opts.get("json"):
            sys.stdout.write(fastjson.dumps([{"digest": d, "problem": p}
                                             for d, p in problems]) + "\n")
        else:
            for d, p in problems:
                sys.stdout.write(f"{d}: {p}\n")
        if problems:
            raise EmergenceError(f"{len(problems)} problem(s) in the store {store}; "
                                 "rebuild or re-import the affected images, then `gc`")
        return 0
    if command == "export":
        from .archive import export
        if len(args) != 1 or not opts.get("o"):
            raise UsageError("usage: emergence export IMAGE -o FILE.tar "
                             "[--format oci-archive|docker-archive]")
        export(store, args[0], opts["o"], opts.get("format", "oci-archive"))
        return 0
    if command == "import":
        from .archive import import_archive
        if len(args) != 1:
            raise UsageError("usage: emergence import FILE.tar [-t NAME:TAG]")
        for ref in import_archive(store, args[0], opts.get("t")):
            sys.stdout.write(ref + "\n")
        return 0
    if command == "bundle":
        from .unpack import make_bundle
        if len(args) < 2:
            raise UsageError("usage: emergence bundle IMAGE DIR [COMMAND...]")
        make_bundle(store, args[0], args[1], args[2:] or None)
        return 0
    raise UsageError(f"unknown command {command!r}")


def _one(args, command):
    if len(args) != 1:
        raise UsageError(f"`{command}` takes exactly one image")
    return args[0]


def log_error(g, message):
    path = g.get("log")
    if not path:
        return
    import time
    try:
        with open(path, "a") as f:
            if g.get("log-format") == "json":
                import json
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                f.write(json.dumps({"level": "error", "msg": message, "time": stamp}) + "\n")
            else:
                f.write(f"emergence: error: {message}\n")
    except OSError:
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    g = {}
    try:
        g, rest = parse_options(argv, GLOBAL_OPTIONS, stop_at_positional=True)
        if g.get("version") or g.get("v"):
            from . import OCI_VERSION, __version__
            sys.stdout.write(f"emergence version {__version__}\nspec: {OCI_VERSION}\n")
            return 0
        if g.get("help") or g.get("h") or not rest:
            sys.stdout.write(USAGE)
            return 0 if not rest and (g.get("help") or g.get("h")) else (2 if not rest else 0)
        if g.get("log-format") not in (None, "text", "json"):
            raise UsageError("--log-format must be text or json")
        if rest[0] in ("help", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if g.get("systemd-cgroup") and rest[0] in ("create", "run") \
                and not os.path.isdir("/run/systemd/system"):
            sys.stderr.write("emergence: warning: --systemd-cgroup: systemd is not running "
                             "here; the cgroup is made directly in cgroupfs at the path "
                             "systemd would use\n")
        if os.geteuid() != 0:
            raise EmergenceError("emergence must run as root (rootless mode is not supported)")
        return dispatch(g, rest[0], rest[1:])
    except EmergenceError as e:
        msg = str(e)
        sys.stderr.write(f"emergence: {msg}\n")
        log_error(g, msg)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        # Anything the code above did not foresee still gets one line, not a traceback.
        msg = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        sys.stderr.write(f"emergence: unexpected error: {msg}\n")
        log_error(g, msg)
        return 1
    except Exception as e:  # a bug: still one line; the traceback with --debug
        if g.get("debug"):
            import traceback
            traceback.print_exc()
        msg = f"internal error: {type(e).__name__}: {e} (a bug; rerun with --debug for details)"
        sys.stderr.write(f"emergence: {msg}\n")
        log_error(g, msg)
        return 1
