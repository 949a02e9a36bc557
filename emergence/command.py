"""How every part declares its verbs, and the one option parser they share.

Each part (runtime/, image/, ...) lists its verbs in its own `commands.py`
as `Verb`s: name, one-line summary, usage, options, and a handler that
imports the code it runs only when called.  The options every verb shares
are defined once, here.

The parser is hand-written rather than argparse: engines call the runtime
verbs constantly, and importing argparse (with re, gettext, shutil) costs
more than parsing runc's syntax by hand.  It accepts what runc's Go flag
parser accepts: `--flag value`, `--flag=value`, single-dash long forms
(`-bundle`), `--flag=false` for booleans, and `--` to end the options.
"""

from .errors import EmergenceError, cut

# option kinds
FLAG = "flag"    # no value; `--x=false` turns it off
VALUE = "value"  # one value
MULTI = "multi"  # one value, repeatable: collected in a list
PAIR = "pair"    # two values, repeatable (--argstr NAME VALUE): a list of pairs


class UsageError(EmergenceError):
    """The command line itself is wrong: exit 2, as runc does."""

    exit_code = 2


class Option:
    __slots__ = ("kind", "help", "metavar", "aliases")

    def __init__(self, kind, help, metavar=None, aliases=()):
        self.kind = kind
        self.help = help
        self.metavar = metavar
        self.aliases = aliases  # other spellings, usually one letter


class Verb:
    """One verb of the command line.  RUN(ctx, opts, args) returns the exit code."""

    __slots__ = ("name", "summary", "usage", "options", "run", "stop_at_positional")

    def __init__(self, name, summary, usage, options, run, stop_at_positional=False):
        self.name = name
        self.summary = summary
        self.usage = usage
        self.options = options
        self.run = run
        # exec's command and ps's arguments keep their own options
        self.stop_at_positional = stop_at_positional


HELP = Option(FLAG, "show this help", aliases=("h",))
JSON = Option(FLAG, "print JSON instead of text")

# Given before the verb, as in runc.  Defined once for every part.
GLOBAL_OPTIONS = {
    "root": Option(VALUE, "container state directory (default /run/emergence)", "DIR"),
    "store": Option(VALUE, "image store, an OCI image layout (default /var/lib/emergence, "
                           "or $EMERGENCE_STORE)", "DIR"),
    "log": Option(VALUE, "also write errors to FILE", "FILE"),
    "log-format": Option(VALUE, "text or json (for --log)", "FORMAT"),
    "debug": Option(FLAG, "show the plan, and a traceback for internal errors"),
    "systemd-cgroup": Option(FLAG, "accepted; emergence manages cgroupfs directly"),
    "rootless": Option(VALUE, "accepted for runc compatibility; rootless mode is not "
                              "supported", "BOOL"),
    "criu": Option(VALUE, "accepted for runc compatibility; checkpointing is not supported",
                   "PATH"),
    "no-planner": Option(FLAG, "run this call in a process of its own, without a warm "
                               "planner (as EMERGENCE_PLANNER_SOCKET=off)"),
    "version": Option(FLAG, "print the version", aliases=("v",)),
    "help": HELP,
}


class Context:
    """What a verb's handler gets from the global options."""

    __slots__ = ("globals",)

    def __init__(self, global_opts):
        self.globals = global_opts

    @property
    def root(self):
        from . import default_root
        return self.globals.get("root") or default_root()

    @property
    def store(self):
        from . import default_store
        return self.globals.get("store") or default_store()

    @property
    def debug(self):
        return self.globals.get("debug", False)


def _lookup(table, name):
    opt = table.get(name)
    if opt is not None:
        return name, opt
    for full, o in table.items():
        if name in o.aliases:
            return full, o
    return name, None


def parse(argv, table, stop_at_positional):
    """Parse options from ARGV by TABLE; return (options dict, positional args)."""
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
        name, opt = _lookup(table, name)
        if opt is None:
            raise UsageError(f"unknown option {cut(arg)}; see `emergence --help`")
        kind = opt.kind
        if kind is PAIR:
            if eq or i + 2 >= len(argv):
                raise UsageError(f"option {cut(arg)} needs a name and a value")
            opts.setdefault(name, []).append((argv[i + 1], argv[i + 2]))
            i += 3
            continue
        if kind is VALUE or kind is MULTI:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"option {cut(arg)} needs a value")
                value = argv[i]
            if kind is MULTI:
                opts.setdefault(name, []).append(value)
            else:
                opts[name] = value
        else:
            opts[name] = value.lower() not in ("false", "0") if eq else True
        i += 1
    return opts, rest


# ---- help -------------------------------------------------------------------------

WIDTH = 100  # help is wrapped to this many columns


def _dash(name):
    """How a user types NAME: -h for one letter, --help for more."""
    return ("-" if len(name) == 1 else "--") + name


def _option_lines(table):
    import textwrap
    lines = []
    for name, o in table.items():
        names = sorted([name, *o.aliases], key=lambda n: len(n) > 1)  # -A, --attr
        spell = ", ".join(_dash(n) for n in names)
        if o.kind is PAIR:
            spell += " NAME VALUE"
        elif o.kind is not FLAG:
            spell += f" {o.metavar or 'VALUE'}"
        lines.append((spell, o.help + (" (repeatable)" if o.kind in (MULTI, PAIR) else "")))
    width = max((len(s) for s, _ in lines), default=0)
    out = []
    for s, h in lines:
        indent = " " * (width + 4)
        out.append(textwrap.fill(h, WIDTH, initial_indent=f"  {s.ljust(width)}  ",
                                 subsequent_indent=indent, break_on_hyphens=False,
                                 break_long_words=False) + "\n")
    return "".join(out)


def _wrap_usage(text, indent):
    """TEXT wrapped to WIDTH between words, never inside a [...] group."""
    groups, depth = [], 0
    for word in text.split():
        if depth > 0:
            groups[-1] += " " + word
        else:
            groups.append(word)
        depth += word.count("[") - word.count("]")
    lines = [groups[0]]
    for g in groups[1:]:
        if len(lines[-1]) + 1 + len(g) > WIDTH:
            lines.append(" " * indent + g)
        else:
            lines[-1] += " " + g
    return "\n".join(lines)


def verb_help(verb):
    table = dict(verb.options)
    table["help"] = HELP
    usage = f"usage: emergence {verb.name} {verb.usage}"
    if "\n" not in usage:  # a usage laid out by hand (net's) stays as it is
        usage = _wrap_usage(usage, len(f"usage: emergence {verb.name} "))
    import textwrap
    summary = textwrap.fill(verb.summary, WIDTH, break_on_hyphens=False)
    return f"{usage}\n\n{summary}\n\nOptions:\n{_option_lines(table)}"


def global_help():
    return _option_lines(GLOBAL_OPTIONS)
