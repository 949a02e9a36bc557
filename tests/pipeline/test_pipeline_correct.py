"""Issue 31's correctness on one node: concurrent runs, keys that follow the
upstream's actual outputs, the runner's death by any signal, streamed cache
entries, a tampered entry, every validation problem at once."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from cihelp import ci_fixture
from conftest import emergence_command

pytestmark = pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0,
                                reason="needs root and nix-build")


@pytest.fixture
def ci(tmp_path):
    yield from ci_fixture(tmp_path)


SLOW2 = """
[stages.a]
image = "image.nix"
command = "sleep 1; echo a > /out/a"
outputs = ["a"]

[stages.b]
image = "image.nix"
command = "sleep 1; cat /in/a/a"
inputs = ["@a"]
"""


def test_two_concurrent_runs_of_one_pipeline_both_pass(ci):
    ci.write("c2.toml", SLOW2)
    procs = [subprocess.Popen(emergence_command() + [
        "--root", ci.root, "--store", ci.store, "pipeline", "run", str(ci.dir / "c2.toml"),
        "--no-cache", "--id-prefix", "plci-", "--logs", str(ci.tmp / f"l{i}"),
        "--json", str(ci.tmp / f"c{i}.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    for i in range(2):
        doc = json.loads((ci.tmp / f"c{i}.json").read_text())
        assert [s["state"] for s in doc["stages"]] == ["passed", "passed"]
        assert (ci.tmp / f"l{i}" / "b.log").read_text() == "a\n"


UNCACHED = """
[stages.gen]
image = "image.nix"
command = "cat /proc/sys/kernel/random/uuid > /out/v"
outputs = ["v"]
cache = false

[stages.use]
image = "image.nix"
command = "cat /in/gen/v"
inputs = ["@gen"]
"""


def test_downstream_key_follows_the_upstream_actual_outputs(ci):
    """gen is never cached and leaves a new value each run: use must run
    again on it, never hit with the first run's value."""
    ci.write("u.toml", UNCACHED)
    _, one, _ = ci.run(file="u.toml")
    _, two, _ = ci.run(file="u.toml")
    v1 = (ci.tmp / "logs1" / "use.log").read_text()
    v2 = (ci.tmp / "logs2" / "use.log").read_text()
    assert v1 != v2 and len(v2.strip()) == 36
    assert not two["by"]["use"]["cache_hit"]
    assert two["by"]["use"]["key"] != one["by"]["use"]["key"]


def _cgroups_named(prefix):
    found = []
    for top in ("/sys/fs/cgroup",):
        for d, dirs, _ in os.walk(top):
            for name in dirs:
                if name.startswith(prefix):
                    found.append(os.path.join(d, name))
    return found


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGHUP"])
def test_killed_runner_leaves_no_container_cgroup_or_secret(ci, sig):
    secret = f"plci-{sig.lower()}-secret-8675309"
    prefix = f"plci-{sig.lower()}-"
    ci.write("k.toml", '[secrets]\nTOKEN = { env = "PLCI_TOKEN" }\n\n[stages.s]\n'
             'image = "image.nix"\ncommand = "sleep 60"\nsecrets = ["TOKEN"]\n')
    ci.cli("build", str(ci.dir / "image.nix"), check=0)
    env = dict(os.environ, EMERGENCE_PLANNER_SOCKET="off", PLCI_TOKEN=secret)
    p = subprocess.Popen(emergence_command() + ["--root", ci.root, "--store", ci.store,
                                                "pipeline", "run", str(ci.dir / "k.toml"),
                                                "--id-prefix", prefix],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                         start_new_session=True)
    try:
        for _ in range(600):
            if any(c.startswith(prefix) for c in ci.containers(prefix)) \
                    and _cgroups_named(prefix):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the stage never started")
        assert _secret_files(ci, secret), "the test should see the secrets file first"
        p.send_signal(getattr(signal, sig))
        p.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not ci.containers(prefix) and not _cgroups_named(prefix) \
                    and not _secret_files(ci, secret):
                break
            time.sleep(0.2)
        assert ci.containers(prefix) == []
        assert _cgroups_named(prefix) == []
        assert _secret_files(ci, secret) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for c in ci.containers(prefix):
            ci.cli("delete", "--force", c)


def _secret_files(ci, secret):
    """Regular files under the test's own dirs holding SECRET (never opens a
    FIFO or anything outside them)."""
    import stat
    hits = []
    for d, _, files in os.walk(ci.tmp):
        for f in files:
            path = os.path.join(d, f)
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
                    continue
                with open(path, "rb") as fh:
                    if secret.encode() in fh.read():
                        hits.append(path)
            except OSError:
                continue
    return hits


BIG = """
[stages.big]
image = "image.nix"
command = "head -c {size} /dev/zero > /out/big; echo wrote"
outputs = ["big"]
"""


def _maxrss_mib(argv):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, EMERGENCE_PLANNER_SOCKET="off"))
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0
    return usage.ru_maxrss / 1024  # KiB on Linux


@pytest.mark.slow
def test_cache_entries_are_streamed_not_held_in_memory(ci):
    """A 256 MiB output is cached and restored with the runner's RSS far below
    its size; a tampered entry is refused and the stage runs again."""
    size = 256 << 20
    ci.write("big.toml", BIG.format(size=size))
    argv = emergence_command() + ["--root", ci.root, "--store", ci.store, "pipeline", "run",
                                  str(ci.dir / "big.toml"), "--id-prefix", "plci-",
                                  "--out", str(ci.tmp / "o")]
    assert _maxrss_mib(argv) < 160   # cached: packed into the store as a stream
    shutil.rmtree(ci.tmp / "o")
    assert _maxrss_mib(argv) < 160   # hit: unpacked from the store as a stream
    assert os.path.getsize(ci.tmp / "o" / "big" / "big") == size
    # tamper with the cached tar: the next run refuses it, reruns, passes
    entries = os.listdir(os.path.join(ci.store, "pipeline", "cache"))
    entry = json.loads(open(os.path.join(ci.store, "pipeline", "cache", entries[0])).read())
    blob = os.path.join(ci.store, "blobs", "sha256", entry["outputs"][7:])
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(size // 2)
        f.write(b"x")
    _, doc, _ = ci.run(file="big.toml")
    assert not doc["by"]["big"]["cache_hit"] and doc["by"]["big"]["state"] == "passed"


def test_validate_lists_every_problem_at_once(ci):
    ci.write("bad.toml", """
bogus = 1
[stages.a]
image = "nope.nix"
command = ""
timeout = -1
network = "not a network"
[stages.b]
image = "image.nix"
command = "true"
needs = ["ghost"]
secrets = ["S"]
""")
    p = ci.cli("pipeline", "validate", str(ci.dir / "bad.toml"), check=2)
    lines = p.stderr.strip().splitlines()
    for where in ("field 'bogus'", "stage 'a', field 'image'", "stage 'a', field 'command'",
                  "stage 'a', field 'timeout'", "stage 'a', field 'network'",
                  "stage 'b', field 'needs'", "stage 'b', field 'secrets'"):
        assert sum(where in ln for ln in lines) == 1, (where, lines)
    assert lines[-1].endswith("7 problems (above); nothing ran")
    assert all(ln.startswith("emergence: pipeline: ") for ln in lines)


def test_next_run_sweeps_run_dirs_nobody_holds(ci):
    """A run dir whose runner and watcher both died (its lock free) goes with
    the next run; one whose lock is held (a live run) stays."""
    import fcntl
    runs = os.path.join(ci.store, "pipeline", "runs")
    os.makedirs(os.path.join(runs, "deadbeef", "s.1", "secrets"))
    (ci.tmp / "store" / "pipeline" / "runs" / "deadbeef" / "s.1" / "secrets" / "T").write_text(
        "plci-stale-secret")
    open(os.path.join(runs, "deadbeef.lock"), "w").close()
    os.makedirs(os.path.join(runs, "0badcafe"))
    live = os.open(os.path.join(runs, "0badcafe.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        ci.write("one.toml", '[stages.a]\nimage = "image.nix"\ncommand = "true"\n')
        ci.run(file="one.toml")
        assert sorted(os.listdir(runs)) == ["0badcafe", "0badcafe.lock"]
    finally:
        os.close(live)
