"""The `emergence` entry: verbs reach their part, every verb has help, the
command line keeps runc's syntax, and parts import only what they may."""

import subprocess
import sys

import pytest
from conftest import emergence_command

from emergence import cli
from emergence.command import FLAG, MULTI, VALUE, Option, UsageError, parse

EM = emergence_command()


def _run(*argv):
    return subprocess.run(EM + list(argv), capture_output=True, text=True)


def test_every_verb_is_served_by_the_part_the_entry_names():
    declared = {}
    for part in cli.PARTS:
        for verb in cli._commands(part).VERBS:
            declared.setdefault(verb.name, set()).add(part)
    assert set(declared) == set(cli.VERB_PART)
    for name, parts in declared.items():
        assert parts == set(cli.SHARED_VERBS.get(name, (cli.VERB_PART[name],))), name


def test_help_lists_every_verb_grouped_by_part():
    p = _run("--help")
    assert p.returncode == 0 and p.stderr == ""
    out = p.stdout
    runtime_at, image_at = out.index("Containers"), out.index("Images")
    for part, at in (("runtime", runtime_at), ("image", image_at)):
        for verb in cli._commands(part).VERBS:
            pos = out.index(f"\n  {verb.name}", at)
            assert pos > at
    assert "--root DIR" in out and "--store DIR" in out
    assert _run().returncode == 2  # no verb at all: usage, and a usage error


@pytest.mark.parametrize("verb", sorted(cli.VERB_PART))
def test_every_verb_has_its_own_help(verb):
    for argv in ([verb, "--help"], [verb, "-h"], ["help", verb]):
        p = _run(*argv)
        assert p.returncode == 0, (argv, p.stderr)
        assert p.stdout.startswith((f"usage: emergence {verb} ", f"usage: emergence {verb}\n")), \
            p.stdout
        assert "Options:" in p.stdout and p.stderr == ""


def test_run_help_shows_both_bundle_and_image_forms():
    out = _run("run", "--help").stdout
    assert "--bundle" in out and "--image IMAGE" in out


@pytest.mark.parametrize("argv, fragment", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["state", "--bogus", "x"], "unknown option --bogus"),
    (["--bogus", "state", "x"], "unknown option --bogus"),
    (["create", "--bundle"], "option --bundle needs a value"),
])
def test_command_line_errors_are_one_line_and_exit_2(argv, fragment):
    p = _run(*argv)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and fragment in p.stderr


def test_runc_option_syntax():
    table = {"bundle": Option(VALUE, "", aliases=("b",)), "detach": Option(FLAG, ""),
             "env": Option(MULTI, "", aliases=("e",))}
    opts, rest = parse(["-bundle", "/b", "--detach=false", "-e", "A=1", "--env=B=2", "id"],
                       table, stop_at_positional=False)
    assert opts == {"bundle": "/b", "detach": False, "env": ["A=1", "B=2"]}
    assert rest == ["id"]
    opts, rest = parse(["-b=/x", "id", "--detach"], table, stop_at_positional=True)
    assert opts == {"bundle": "/x"} and rest == ["id", "--detach"]
    assert parse(["--", "-b"], table, False) == ({}, ["-b"])
    with pytest.raises(UsageError):
        parse(["--nope"], table, False)


def _imported_after(code):
    p = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                        "print(' '.join(sorted(m for m in sys.modules "
                        "if m.startswith('emergence'))))"],
                       capture_output=True, text=True, check=True)
    return set(p.stdout.split())


def test_runtime_imports_no_other_part():
    import pkgutil

    import emergence.runtime
    names = [m.name for m in pkgutil.walk_packages(emergence.runtime.__path__,
                                                    "emergence.runtime.")
             if not m.name.endswith(("_native", "_build_native"))]
    mods = _imported_after("\n".join(f"import {n}" for n in names))
    assert {m for m in mods if m.startswith("emergence.")
            and not m.startswith("emergence.runtime")} <= {
        "emergence.errors", "emergence.fastjson", "emergence.command"}


def test_a_runtime_verb_loads_only_the_runtime():
    mods = _imported_after("from emergence import cli\n"
                           "cli.main(['--root', '/nonexistent-emergence-root', 'state', 'x'])")
    assert "emergence.runtime.commands" in mods
    assert not any(m.startswith("emergence.image") for m in mods)
