"""`emergence pipeline` end to end: real images built by Nix, real containers,
the real store.  Container ids start with plci-."""

import json
import os
import shutil
import stat
import subprocess

import pytest
from cihelp import ci_fixture
from conftest import emergence_command

pytestmark = pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0,
                                reason="needs root and nix-build")


@pytest.fixture
def ci(tmp_path):
    yield from ci_fixture(tmp_path)


def junit_matches(junit, doc):
    """junitparser reads the file back; every count and message agrees with JSON."""
    from junitparser import Failure, JUnitXml, Skipped
    xml = JUnitXml.fromfile(junit)
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    cases = {c.name: c for c in suite}
    assert set(cases) == set(doc["by"])
    failed = [s for s in doc["stages"] if s["state"] == "failed"]
    skipped = [s for s in doc["stages"] if s["state"] == "skipped" or s["cache_hit"]]
    assert suite.tests == len(doc["stages"])
    assert suite.failures == len(failed)
    assert suite.skipped == len(skipped)
    for s in doc["stages"]:
        res = cases[s["name"]].result
        kinds = [type(r) for r in res]
        if s["state"] == "failed":
            assert kinds == [Failure]
            assert res[0].message == f"stage {s['name']} {s['message']}"
        elif s["cache_hit"]:
            assert kinds == [Skipped] and res[0].message == f"cache hit: {s['key']}"
        elif s["state"] == "skipped":
            assert kinds == [Skipped] and res[0].message == s["message"]
        else:
            assert kinds == []
        assert abs(cases[s["name"]].time - s["duration"]) < 0.01
    return cases


def test_example_runs_green_then_from_cache(ci):
    p, doc, junit = ci.run("--out", str(ci.tmp / "artifacts"))
    assert doc["exit_code"] == 0
    assert {s["state"] for s in doc["stages"]} == {"passed"}
    assert not any(s["cache_hit"] for s in doc["stages"])
    junit_matches(junit, doc)
    pkg = doc["by"]["package"]
    assert set(pkg["output_digests"]) == {"greet.tar.gz"}
    assert (ci.tmp / "artifacts" / "package" / "greet.tar.gz").exists()
    assert "ok 2 greet with no name" in (ci.tmp / "logs1" / "test.log").read_text()

    p, warm, junit = ci.run()
    missed = [(s["name"], s["state"], s["cache_hit"], s.get("message"))
              for s in warm["stages"] if not (s["cache_hit"] and s["state"] == "passed")]
    assert not missed, (missed, [(s["name"], s["key"] == doc["by"][s["name"]]["key"])
                                 for s in warm["stages"]], (p.stderr or "")[-2000:])
    assert all(s["attempts"] == 0 for s in warm["stages"])  # no container started
    assert [s["key"] for s in warm["stages"]] == [s["key"] for s in doc["stages"]]
    assert warm["by"]["package"]["output_digests"] == pkg["output_digests"]
    # the log comes back from the store, not from a run
    assert "ok 2 greet with no name" in (ci.tmp / "logs2" / "test.log").read_text()
    cases = junit_matches(junit, warm)
    assert len(cases) == 5
    p, cold, _ = ci.run("--no-cache")
    assert not any(s["cache_hit"] for s in cold["stages"])


def test_one_changed_file_reruns_only_its_downstream(ci):
    ci.run()
    ci.write("docs/README.txt", "greet: says hello.\n")
    _, doc, _ = ci.run()
    ran = {s["name"] for s in doc["stages"] if not s["cache_hit"]}
    assert ran == {"docs", "package"}
    ci.write("test/test_greet.sh", (ci.dir / "test/test_greet.sh").read_text() + "echo ok 3\n")
    _, doc, _ = ci.run()
    ran = {s["name"] for s in doc["stages"] if not s["cache_hit"]}
    assert ran == {"lint", "test", "package"}  # build and docs do not read the tests
    # touching a file without changing it costs a stat and a re-hash, not a run
    os.utime(ci.dir / "src" / "main.sh")
    _, doc, _ = ci.run()
    assert all(s["cache_hit"] for s in doc["stages"])


def test_failing_test_stage_exit_1_junit_and_keep_going(ci):
    ci.write("test/test_greet.sh", "printf '\\033[31mred\\033[0m\\001\\n'; "
             "echo checking; echo 'FAIL: greet is wrong'; exit 1\n")
    env = dict(os.environ, GITHUB_ACTIONS="true",
               GITHUB_STEP_SUMMARY=str(ci.tmp / "summary.md"))
    p, doc, junit = ci.run("--keep-going", "--jobs", "1", code=1, env=env)
    by = doc["by"]
    assert by["test"]["state"] == "failed" and by["test"]["exit_code"] == 1
    assert by["package"]["state"] == "skipped"
    assert "'test'" in by["package"]["message"]
    # what did not depend on the failure still finished, even after it (jobs=1)
    assert by["docs"]["state"] == "passed" and by["lint"]["state"] == "passed"
    cases = junit_matches(junit, doc)
    failure = cases["test"].result[0]
    assert "FAIL: greet is wrong" in failure.text
    assert "[31mred" in failure.text  # colour codes dropped, the text kept
    assert "\x1b" in (ci.tmp / "logs1" / "test.log").read_text()  # the log file is as printed
    assert "failed: test" in p.stdout
    assert "::error title=stage test failed::exited with 1" in p.stdout
    assert "| test | failed |" in (ci.tmp / "summary.md").read_text()
    # under GitLab the failed stage's log is a collapsible section
    p, _, _ = ci.run("--keep-going", code=1, env=dict(os.environ, GITLAB_CI="true"))
    assert "section_start:" in p.stdout and "stage_test[collapsed=true]" in p.stdout
    assert "section_end:" in p.stdout
    # without --keep-going the pipeline stops launching after the failure
    p, doc, _ = ci.run("--jobs", "1", "--no-cache", code=1)
    assert doc["by"]["package"]["state"] == "skipped"
    assert any("fail-fast" in s["message"] for s in doc["stages"])


TIMEOUT = """
[stages.slow]
image = "image.nix"
command = "echo started; sleep 60"
timeout = 1

[stages.flaky]
image = "image.nix"
command = "echo try; exit 75"
retries = { count = 2, exit_codes = [75] }

[stages.broken]
image = "image.nix"
command = "exit 3"
retries = { count = 2, exit_codes = [75] }
"""


def test_timeout_kills_and_retries_are_reported(ci):
    ci.write("t.toml", TIMEOUT)
    p, doc, junit = ci.run("--keep-going", file="t.toml", code=1)
    slow = doc["by"]["slow"]
    assert slow["state"] == "failed" and "timed out after 1 s" in slow["message"]
    assert slow["duration"] < 15
    assert slow["attempt_log"][0]["timed_out"] is True
    flaky = doc["by"]["flaky"]
    assert flaky["attempts"] == 3 and flaky["retried"] == 2
    assert [a["exit_code"] for a in flaky["attempt_log"]] == [75, 75, 75]
    assert doc["by"]["broken"]["attempts"] == 1  # 3 is not a retryable code
    assert p.stdout.count("flaky: attempt") == 2
    cases = junit_matches(junit, doc)
    assert cases["slow"].result[0].type == "timeout"
    assert ci.containers() == []


HERMETIC = """
[secrets]
TOKEN = { env = "PLCI_TOKEN" }
KEY = { file = "../secret-key.txt" }

[stages.look]
image = "image.nix"
command = '''
set -e
ls /src/src
test ! -e /src/docs
touch /src/x 2>/dev/null && exit 9
echo "env: $(env | sort | tr '\\n' ' ')"
echo "links: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')"
echo "token $TOKEN in env, $(cat /run/secrets/TOKEN) in file, key $(cat /run/secrets/KEY)"
echo "$TOKEN" > /out/not-declared
mkdir -p /out/o && echo fine > /out/o/f
'''
inputs = ["src/*.sh"]
outputs = ["o"]
secrets = ["TOKEN", "KEY"]

[stages.leak]
image = "image.nix"
command = 'echo "$TOKEN" > /out/leak'
outputs = ["leak"]
secrets = ["TOKEN"]
"""


def test_hermetic_run_and_secrets_leave_no_trace(ci):
    secret = "plci-s3cr3t-value-31337"
    ci.write("h.toml", HERMETIC)
    key = "plci-file-key-271828"
    (ci.tree / "examples" / "secret-key.txt").write_text(key + "\n")
    env = dict(os.environ, PLCI_TOKEN=secret, PLCI_HOST_ONLY="visible",
               GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(ci.tmp / "summary.md"))
    p, doc, junit = ci.run(file="h.toml", env=env)
    log = (ci.tmp / "logs1" / "look.log").read_text()
    assert "greet.sh" in log and "main.sh" in log
    assert "PLCI_HOST_ONLY" not in log and "env: " in log
    assert "links: lo " in log and "links: lo \n" in log  # only loopback
    assert "token *** in env, *** in file, key ***" in log
    # the leaking stage passed but its outputs were not cached
    _, again, _ = ci.run(file="h.toml", env=env)
    assert again["by"]["look"]["cache_hit"] and not again["by"]["leak"]["cache_hit"]
    hits = []
    for top in (ci.store, str(ci.tmp)):
        for d, _, files in os.walk(top):
            for f in files:
                path = os.path.join(d, f)
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # links; the state root's planner socket, fifos
                if path.endswith("secret-key.txt"):
                    continue  # where the file secret comes from
                with open(path, "rb") as fh:
                    data = fh.read()
                    if secret.encode() in data or key.encode() in data:
                        hits.append(path)
    assert hits == []
    # a missing secret is refused before anything runs
    env.pop("PLCI_TOKEN")
    p = ci.cli("pipeline", "run", str(ci.dir / "h.toml"), env=env, check=2)
    assert "PLCI_TOKEN" in p.stderr


@pytest.mark.parametrize("body,where", [
    ('[stages.a]\nimage="image.nix"\ncommand="true"\nneeds=["b"]\n'
     '[stages.b]\nimage="image.nix"\ncommand="true"\nneeds=["a"]\n', "field 'needs': cycle"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\nneeds=["nope"]\n',
     "stage 'a', field 'needs': unknown stage 'nope'"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\ninputs=["@ghost"]\n',
     "stage 'a', field 'inputs': unknown stage 'ghost'"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\ninputs=["missing/*.c"]\n',
     "stage 'a', field 'inputs': 'missing/*.c' matches no file"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\ninputs=["src/[a.sh"]\n',
     "stage 'a', field 'inputs': 'src/[a.sh' has an unbalanced"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\ninputs=["../x"]\n',
     "stage 'a', field 'inputs'"),
    ('[stages.a]\nimage="nope.nix"\ncommand="true"\n', "stage 'a', field 'image'"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\ntimeout=-1\n',
     "stage 'a', field 'timeout'"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\nretries={count=1, exit_codes="x"}\n',
     "stage 'a', field 'retries'"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\nsecrets=["S"]\n',
     "stage 'a', field 'secrets'"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\ncomand="true"\n',
     "stage 'a', field 'comand'"),
    ('[stages.a]\nimage="image.nix"\ncommand="true"\nlimits={memory="lots"}\n',
     "stage 'a', field 'limits': memory 'lots'"),
    ('[stages.a\n', "not valid TOML"),
])
def test_invalid_pipeline_is_one_line_and_exit_2(ci, body, where):
    ci.write("bad.toml", body)
    for verb in ("validate", "run"):
        p = ci.cli("pipeline", verb, str(ci.dir / "bad.toml"), check=2)
        assert where in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not os.path.exists(ci.root) or ci.containers() == []


def test_json_pipeline_and_graph(ci):
    (ci.dir / "p.json").write_text(json.dumps({"stages": {
        "a": {"image": "image.nix", "command": ["/bin/echo", "hi"]},
        "b": {"image": "image.nix", "command": "true", "needs": ["a"]}}}))
    p = ci.cli("pipeline", "graph", str(ci.dir / "pipeline.toml"), "--dot", check=0)
    assert '"build" -> "test";' in p.stdout and '"docs" -> "package";' in p.stdout
    assert p.stdout.startswith("digraph")
    p = ci.cli("pipeline", "graph", str(ci.dir / "p.json"), check=0)
    assert p.stdout == "a\nb  <- a\n"
    _, doc, _ = ci.run(file="p.json")
    assert doc["by"]["a"]["state"] == "passed"
    assert (ci.tmp / "logs1" / "a.log").read_text() == "hi\n"


FLAKY_NET = """
[stages.fetch]
image = "image.nix"
command = 'r=$(echo hi | nc -w 2 127.0.0.1 {port}); echo "got $r"; test "$r" = ok || exit 75'
network = "host"
retries = {{ count = 3, exit_codes = [75] }}

[stages.isolated]
image = "image.nix"
command = 'echo hi | nc -w 1 127.0.0.1 {port} && exit 1 || echo "no route to the host"'
"""


def test_retryable_failure_passes_on_a_later_attempt(ci):
    """A host-network stage asks a server on loopback that fails the first
    call: the stage is retried, passes, and the report says so."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(60)
    calls = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                calls.append(1)
                conn.sendall(b"fail\n" if len(calls) == 1 else b"ok\n")
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        ci.write("n.toml", FLAKY_NET.format(port=srv.getsockname()[1]))
        p, doc, junit = ci.run(file="n.toml")
    finally:
        srv.close()
    fetch = doc["by"]["fetch"]
    assert fetch["state"] == "passed" and fetch["attempts"] == 2
    assert [a["exit_code"] for a in fetch["attempt_log"]] == [75, 0]
    assert fetch["message"] == "passed on attempt 2"
    assert "fetch: attempt 1 exited with 75; retrying" in p.stdout
    log = (ci.tmp / "logs1" / "fetch.log").read_text()
    assert "got fail" in log and "--- attempt 2 ---\ngot ok" in log
    assert len(calls) == 2  # the isolated stage never reached the host's loopback
    assert "no route to the host" in (ci.tmp / "logs1" / "isolated.log").read_text()
    junit_matches(junit, doc)


def test_missing_image_is_an_infrastructure_error(ci):
    ci.write("i.toml", '[stages.a]\nimage = "plci-no-such-image:1"\ncommand = "true"\n')
    ci.cli("build", str(ci.dir / "image.nix"), check=0)  # the store exists
    p = ci.cli("pipeline", "run", str(ci.dir / "i.toml"), check=3)
    assert "stage 'a', field 'image'" in p.stderr and len(p.stderr.splitlines()) == 1


def test_nix_pipeline_is_the_same_pipeline(ci):
    """pipeline.nix (nix/lib.nix helpers) and pipeline.toml describe the same
    stages: after the TOML run, every stage of the Nix one is a cache hit."""
    _, toml, _ = ci.run()
    _, nix, _ = ci.run(file="pipeline.nix")
    assert all(s["cache_hit"] for s in nix["stages"])
    assert {s["name"]: s["key"] for s in nix["stages"]} == \
        {s["name"]: s["key"] for s in toml["stages"]}
    text = (ci.dir / "pipeline.nix").read_text().replace("timeout = 60;", "timeot = 60;")
    ci.write("typo.nix", text)
    p = ci.cli("pipeline", "validate", str(ci.dir / "typo.nix"), check=2)
    assert "does not evaluate" in p.stderr and "timeot" in p.stderr


def test_gc_keeps_pipeline_results_unless_asked(ci):
    """`gc` keeps the blobs cache entries name (they are results, not garbage);
    `gc --pipeline` drops them, and the next run is a miss that passes."""
    ci.run()
    ci.cli("gc", check=0)
    _, doc, _ = ci.run()
    assert all(s["cache_hit"] for s in doc["stages"])
    ci.cli("gc", "--pipeline", check=0)
    _, doc, _ = ci.run()
    assert not any(s["cache_hit"] for s in doc["stages"])
    assert {s["state"] for s in doc["stages"]} == {"passed"}


def test_limits_reach_the_cgroup_and_the_key(ci):
    files = ("memory/memory.limit_in_bytes memory.max pids/pids.max pids.max "
             "cpu/cpu.cfs_quota_us cpu.max")
    body = ('[stages.lim]\nimage = "image.nix"\n'
            f'command = "cd /sys/fs/cgroup && cat {files} 2>/dev/null; true"\n'
            'limits = {{ memory = "64M", cpus = 0.5, pids = {pids} }}\n')
    ci.write("l.toml", body.format(pids=64))
    _, doc, _ = ci.run(file="l.toml")
    seen = (ci.tmp / "logs1" / "lim.log").read_text().split()
    assert "67108864" in seen and "64" in seen
    assert "50000" in seen or "50000 100000" in " ".join(seen)
    ci.write("l.toml", body.format(pids=65))
    _, again, _ = ci.run(file="l.toml")
    assert not again["by"]["lim"]["cache_hit"]
    assert again["by"]["lim"]["key"] != doc["by"]["lim"]["key"]


def test_fail_fast_kills_the_stages_still_running(ci):
    ci.write("ff.toml", '[stages.long]\nimage = "image.nix"\ncommand = "echo up; sleep 60"\n\n'
             '[stages.quick]\nimage = "image.nix"\ncommand = "sleep 0.5; exit 4"\n')
    p, doc, junit = ci.run("--jobs", "2", file="ff.toml", code=1)
    assert doc["by"]["quick"]["state"] == "failed" and doc["by"]["quick"]["exit_code"] == 4
    long = doc["by"]["long"]
    assert long["state"] == "skipped" and long["message"].startswith("cancelled")
    assert long["duration"] < 15 and doc["duration"] < 20
    junit_matches(junit, doc)
    assert ci.containers() == []


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_no_container(ci, sig):
    import signal
    import time
    ci.write("c.toml", '[stages.s]\nimage = "image.nix"\ncommand = "sleep 60"\n')
    env = dict(os.environ, EMERGENCE_PLANNER_SOCKET="off")  # signals go to us, not a worker
    p = subprocess.Popen(emergence_command() + ["--root", ci.root, "--store", ci.store,
                                                "pipeline", "run", str(ci.dir / "c.toml"),
                                                "--id-prefix", "plci-"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(300):
            if os.path.isdir(ci.root) and ci.containers():
                break
            time.sleep(0.05)
        assert ci.containers(), "the stage never started"
        t0 = time.monotonic()
        p.send_signal(getattr(signal, sig))
        out, err = p.communicate(timeout=20)
        assert time.monotonic() - t0 < 10
        assert p.returncode != 0 and "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert ci.containers() == []


def test_a_command_that_cannot_start_says_why_and_is_not_retried(ci):
    ci.write("x.toml", '[stages.x]\nimage = "image.nix"\ncommand = ["/no/such/tool"]\n'
             'retries = 2\n')
    _, doc, junit = ci.run(file="x.toml", code=1)
    x = doc["by"]["x"]
    assert x["state"] == "failed" and x["attempts"] == 1
    assert x["message"].startswith("could not start: ") and "/no/such/tool" in x["message"]
    junit_matches(junit, doc)
