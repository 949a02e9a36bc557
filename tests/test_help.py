"""Every verb's and sub-verb's `--help`, read as a user reads it: a usage line
that names the verb once, each option spelled as it is typed (-A, --attr;
never --A), defaults shown as node.toml spells them, nothing wider than the
help's 100 columns."""

import contextlib
import io
import re
import subprocess

import pytest
from conftest import emergence_command

from emergence import cli

WIDTH = 100  # the help's columns (command.WIDTH)

DOUBLED = re.compile(r"(?<![\w-])([A-Za-z][\w-]*) \1(?![\w-])")
ONE_LETTER_LONG = re.compile(r"(?<![\w-])--[A-Za-z](?![\w-])")


def _subverbs(verb):
    """The sub-verbs a usage names: `start|stop|status`, or net's indented list."""
    usage = verb.usage
    if "\n" in usage:
        return sorted({line.split()[0] for line in usage.splitlines()[1:]
                       if line.startswith("  ") and not line.startswith("   ")})
    first = usage.split()[0] if usage.split() else ""
    if re.fullmatch(r"[a-z]+(\|[a-z]+)+", first):
        return first.split("|")
    return []


def _cases():
    for part in cli.PARTS:
        for verb in cli._commands(part).VERBS:
            pre = ["--image", "x"] if (part == "image" and verb.name == "run") else []
            yield pytest.param(verb, pre, [], id=f"{part}-{verb.name}")
            for sub in _subverbs(verb):
                yield pytest.param(verb, pre, [sub], id=f"{part}-{verb.name}-{sub}")


def _help(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(argv)
    return rc, out.getvalue()


@pytest.mark.parametrize("verb,pre,sub", list(_cases()))
def test_help_reads_as_a_user_reads_it(verb, pre, sub):
    rc, text = _help([verb.name, *sub, *pre, "--help"])
    assert rc == 0, text
    assert re.match(rf"usage: emergence {verb.name}[ \n]", text), text[:200]
    usage = text.split("\n\n")[0]
    assert not DOUBLED.search(usage), f"doubled word in {usage!r}"
    assert not usage.startswith(f"usage: emergence {verb.name} {verb.name} ")
    assert not ONE_LETTER_LONG.search(text), ONE_LETTER_LONG.findall(text)
    for bad in ("(default )", "(default None)", "(default True)", "(default False)"):
        assert bad not in text, bad
    options = text.split("\nOptions:\n", 1)[1]
    table = dict(verb.options)
    for name, opt in table.items():
        for spelling in [name, *opt.aliases]:
            want = ("-" if len(spelling) == 1 else "--") + spelling
            assert re.search(rf"(?m)^  (?:-[\w-]+, )*{re.escape(want)}(?![\w-])", options), \
                f"{want} not shown as an option line"
    assert re.search(r"(?m)^  -h, --help +show this help$", options)
    for line in text.splitlines():
        assert len(line) <= WIDTH, f"{len(line)} columns: {line!r}"
        if line.startswith("  -") and not line.startswith("  --") and \
                not re.match(r"  -\w[, ]", line):
            pytest.fail(f"a long option with one dash: {line!r}")


def test_the_commands_help_as_typed():
    """Through the installed command, as a user types it."""
    for argv, first in ((["node", "--help"], "usage: emergence node start|stop|status|run "),
                        (["build", "--help"], "usage: emergence build FILE.nix ")):
        p = subprocess.run(emergence_command() + argv, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and p.stderr == "", p.stderr
        assert p.stdout.startswith(first), p.stdout[:200]
    p = subprocess.run(emergence_command() + ["build", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert "  -A, --attr ATTR" in p.stdout and "  -t, --tag NAME:TAG" in p.stdout
    p = subprocess.run(emergence_command() + ["node", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert "--node-planner VALUE" in p.stdout and "(default true)" in p.stdout
