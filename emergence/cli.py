"""The `emergence` command: global options, then hand the verb to the part
that serves it, importing only that part.

Options follow runc's: global ones before the verb, `--flag value`,
`--flag=value`, single-dash long forms.  Every error is one line on stderr
(and a JSON line in --log when asked) with a non-zero exit: 2 for a wrong
command line, 1 for anything else.
"""

import os
import sys

from .command import GLOBAL_OPTIONS, Context, UsageError, parse
from .errors import EmergenceError, one_line, shown

# The part (package) that serves each verb.  Kept here, not discovered, so a
# verb imports its own part alone; tests check it against each part's VERBS.
# One line a part: the verbs it serves (a part's `commands.VERBS` must match).
_VERBS_OF = {
    "runtime": "spec create start run state kill delete list exec pause resume ps events update "
               "features",
    "image": "build images inspect tag rmi gc verify export import bundle",
    "node": "node",
    "relay": "net",
    "share": "pull push peers",
    "place": "cluster submit tasks place",
    "pipeline": "pipeline",
    "overwatch": "stats top probe",
}
PARTS = tuple(_VERBS_OF)
VERB_PART = {verb: part for part in PARTS for verb in _VERBS_OF[part].split()}
# `run --image IMAGE` is the image part's run; a bundle's run is the runtime's.
SHARED_VERBS = {"run": ("runtime", "image")}


def _part_for(verb, argv):
    if verb == "run":
        for arg in argv:
            if arg == "--" or not arg.startswith("-"):
                continue
            if arg.lstrip("-").partition("=")[0] == "image":
                return "image"
    return VERB_PART[verb]


def _commands(part):
    """The part's commands module (emergence.<part>.commands), imported now."""
    if part not in PARTS:
        raise UsageError(f"unknown part {part!r}")
    return __import__(f"emergence.{part}.commands", fromlist=["VERBS"])


def _verb(part, name):
    for v in _commands(part).VERBS:
        if v.name == name:
            return v
    raise UsageError(f"unknown command {name!r}; see `emergence --help`")


def usage():
    from .command import global_help
    out = ["usage: emergence [global options] COMMAND [options] [args]\n"
           "       emergence COMMAND --help     a command's own options\n"]
    for part in PARTS:
        mod = _commands(part)
        out.append(f"\n{mod.TITLE}:\n")
        width = max(len(v.name) for v in mod.VERBS)
        for v in mod.VERBS:
            name = "run --image" if (part == "image" and v.name == "run") else v.name
            out.append(f"  {name.ljust(max(width, 11))}  {v.summary}\n")
    out.append("\nGlobal options (before the command):\n" + global_help())
    return "".join(out)


def verb_usage(name):
    from .command import verb_help
    parts = SHARED_VERBS.get(name, (VERB_PART[name],))
    return "\n".join(verb_help(_verb(p, name)) for p in parts)


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


def dispatch(g, name, argv):
    if name not in VERB_PART:
        raise UsageError(f"unknown command {shown(name)}; see `emergence --help`")
    verb = _verb(_part_for(name, argv), name)
    table = verb.options
    if "help" not in table:
        from .command import HELP
        table = dict(table, help=HELP)
    opts, args = parse(argv, table, verb.stop_at_positional)
    if opts.get("help"):
        sys.stdout.write(verb_usage(name))
        return 0
    if os.geteuid() != 0:
        raise EmergenceError("emergence must run as root (rootless mode is not supported)")
    if g.get("debug"):
        from . import errors
        errors.DEBUG = True
    return verb.run(Context(g), opts, args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    g = {}
    try:
        g, rest = parse(argv, GLOBAL_OPTIONS, stop_at_positional=True)
        if g.get("version"):
            from . import OCI_VERSION, __version__
            sys.stdout.write(f"emergence version {__version__}\nspec: {OCI_VERSION}\n")
            return 0
        if g.get("help") or not rest or rest[0] in ("help", "--help"):
            if len(rest) == 2 and rest[0] == "help" and rest[1] in VERB_PART:
                sys.stdout.write(verb_usage(rest[1]))
                return 0
            sys.stdout.write(usage())
            if rest or g.get("help"):
                return 0
            raise UsageError("no command given; see the usage above")
        if g.get("log-format") not in (None, "text", "json"):
            raise UsageError("--log-format must be text or json")
        log_dir = os.path.dirname(os.path.abspath(g["log"])) if g.get("log") else None
        if log_dir and not os.path.isdir(log_dir):
            log, g["log"] = g["log"], None
            raise EmergenceError(f"--log {log}: the directory {log_dir} does not exist; "
                                 "create it or log elsewhere")
        if g.get("systemd-cgroup") and rest[0] in ("create", "run") \
                and not os.path.isdir("/run/systemd/system"):
            sys.stderr.write("emergence: warning: --systemd-cgroup: systemd is not running "
                             "here; the cgroup is made directly in cgroupfs at the path "
                             "systemd would use\n")
        return dispatch(g, rest[0], rest[1:])
    except EmergenceError as e:
        msg = one_line(str(e))
        sys.stderr.write(f"emergence: {msg}\n")
        log_error(g, msg)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        # Anything the code above did not foresee still gets one line, not a traceback.
        msg = one_line(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        sys.stderr.write(f"emergence: unexpected error: {msg}\n")
        log_error(g, msg)
        return 1
    except Exception as e:  # a bug: still one line; the traceback with --debug
        if g.get("debug"):
            import traceback
            traceback.print_exc()
        msg = one_line(f"internal error: {type(e).__name__}: {e} (a bug; rerun with --debug "
                       "for details)")
        sys.stderr.write(f"emergence: {msg}\n")
        log_error(g, msg)
        return 1
