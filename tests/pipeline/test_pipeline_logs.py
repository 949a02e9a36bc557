"""`pipeline run --cluster` shows each remote stage's output while it runs
(emergence/pipeline/logstream.py), on a real TLS etcd with RBAC, a worker
and a command node as in test_pipeline_cluster.py: a stage prints a line
and then waits for the test, which sees the line on the runner's terminal
first; a secret it prints is masked there; a chatty stage is capped on the
way, its whole log still in the reports.  The attacks on the log keys are in
tests/security/test_logs31.py."""

import glob
import json
import os
import queue
import subprocess
import threading

import pytest
from cihelp import ShareNode
from conftest import emergence_command
from place.conftest import join_node, stop_all, wait_for
from test_pipeline_cluster import ci, needs_nix, sec  # noqa: F401 (fixtures)

from emergence.pipeline import logstream
from emergence.place.state import Cluster

X = "x" * 38
LIVE = (
    '[secrets]\nTOK = { env = "PL_LOG_SECRET" }\n'
    '[stages.live]\nimage = "image.nix"\ninputs = ["tok.txt"]\ntimeout = 600\n'
    'command = "echo first-line; cat /src/tok.txt; '
    'while [ ! -e /src/go ]; do sleep 0.2; done; echo second-line"\n'
    '[stages.chatty]\nimage = "image.nix"\nneeds = ["live"]\n'
    f'command = "i=0; while [ $i -lt 12000 ]; do echo chatty line $i {X}; i=$((i+1)); done"\n')


@needs_nix
@pytest.mark.slow
def test_remote_output_streams_live_masked_and_capped(ci, sec, tmp_path):  # noqa: F811
    cluster = Cluster(sec.url, prefix=sec.prefix, material=sec.material)
    secret = "pl-s3cret-" + os.urandom(8).hex()
    ci.write("live.toml", LIVE)
    ci.write("tok.txt", secret + "\n")
    store, root = str(tmp_path / "lgw-store"), str(tmp_path / "lgw-root")
    shares, procs, logs = [], [], []
    runner_proc = None
    try:
        runner = ShareNode(ci.store, str(tmp_path / "runner-share"))
        shares.append(runner)
        worker = ShareNode(store, str(tmp_path / "lgw-share"))
        shares.append(worker)
        for name, role, extra, g in (("lgw", "worker", ["--cpu", "2"],
                                      ["--root", root, "--store", store]),
                                     ("lgcmd", "command", [], [])):
            p, log = join_node(sec, tmp_path, name, role, sec.url, 3, extra, globals_=g)
            procs.append(p)
            logs.append(log)
        text = lambda: "".join(open(p).read() for p in logs)  # noqa: E731
        assert wait_for(lambda: len(cluster.items("members")) == 1
                        and cluster.get("leader") is not None, 60), text()

        rep = tmp_path / "live.json"
        runner_proc = subprocess.Popen(emergence_command() + [
            "--root", ci.root, "--store", ci.store, "pipeline", "run",
            str(ci.dir / "live.toml"), "--id-prefix", "plci-", "--json", str(rep),
            "--logs", str(tmp_path / "logs"), "--config", "/dev/null", "--cluster",
            "--advertise", runner.url, "--peer", worker.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL, env=dict(os.environ, PL_LOG_SECRET=secret))
        lines = queue.Queue()
        seen = []
        threading.Thread(target=lambda: [lines.put(x.rstrip("\n"))
                                         for x in runner_proc.stdout] + [lines.put(None)],
                         daemon=True).start()

        def until(pred, timeout=300):
            while True:
                x = lines.get(timeout=timeout)
                if x is None:
                    return False
                seen.append(x)
                if pred(x):
                    return True

        # the first line shows while the stage still waits for us (it cannot end before)
        assert until(lambda x: x == "live | first-line"), seen
        assert not any(x.startswith("live: ") and "started" not in x for x in seen), seen
        go = glob.glob(os.path.join(store, "**", "tasks", "live-*", "src"), recursive=True)
        assert len(go) == 1, go
        assert until(lambda x: x.startswith("live | ") and x != "live | first-line"), seen
        assert seen[-1] == "live | ***", seen  # the secret it printed, masked
        open(os.path.join(go[0], "go"), "w").close()  # now it may finish
        assert until(lambda x: x == "live | second-line"), seen
        until(lambda x: False)
        assert runner_proc.wait(timeout=120) == 0, \
            "\n".join(seen[:9]) + runner_proc.stderr.read()
        out = "\n".join(seen)
        assert secret not in out and "Traceback" not in out
        i = seen.index("live | second-line")
        assert any(x.startswith("live: passed") for x in seen[i:]), seen[i:]

        # chatty: capped on the way, said so, and whole in the reports
        chatty = [x for x in seen if x.startswith("chatty | chatty line")]
        assert chatty and chatty[0] == f"chatty | chatty line 0 {X}", chatty[:1]
        shown = sum(len(x) - len("chatty | ") + 1 for x in chatty)  # the bytes it printed
        assert shown <= logstream.MAX_CHUNKS * logstream.CHUNK
        assert len(chatty) < 12000
        dropped = [x for x in seen if x.startswith("chatty | ") and "bytes dropped" in x]
        assert len(dropped) == 1, seen[-10:]
        full = (tmp_path / "logs" / "chatty.log").read_text().splitlines()
        assert len(full) == 12000 and full[-1].startswith("chatty line 11999")
        live_log = (tmp_path / "logs" / "live.log").read_text()
        assert "first-line" in live_log and secret not in live_log and "***" in live_log
        stages = {s["name"]: s for s in json.loads(rep.read_text())["stages"]}
        assert {s["state"] for s in stages.values()} == {"passed"}, stages
        assert cluster.items("logs") == {}  # read, then deleted: nothing left in etcd
    finally:
        if runner_proc is not None and runner_proc.poll() is None:
            runner_proc.kill()
            runner_proc.wait()
        stop_all(procs)
        for s in shares:
            s.stop()


WAITS = ('[stages.waits]\nimage = "image.nix"\ntimeout = 600\n'
         'command = "echo waiting; while true; do sleep 0.2; done"\n')


@needs_nix
@pytest.mark.slow
def test_a_worker_killed_mid_stage_leaves_no_container(ci, sec, tmp_path):  # noqa: F811
    """kill -9 of the worker while its stage runs: the stage's container and its
    scratch dir go (the watcher of pipeline/watch.py), not left running."""
    cluster = Cluster(sec.url, prefix=sec.prefix, material=sec.material)
    ci.write("waits.toml", WAITS)
    store, root = str(tmp_path / "kw-store"), str(tmp_path / "kw-root")
    shares, procs, logs = [], [], []
    runner_proc = None
    try:
        runner = ShareNode(ci.store, str(tmp_path / "runner-share"))
        shares.append(runner)
        worker = ShareNode(store, str(tmp_path / "kw-share"))
        shares.append(worker)
        for name, role, g in (("kww", "worker", ["--root", root, "--store", store]),
                              ("kwcmd", "command", [])):
            p, log = join_node(sec, tmp_path, name, role, sec.url, 3, [], globals_=g)
            procs.append(p)
            logs.append(log)
        assert wait_for(lambda: len(cluster.items("members")) == 1
                        and cluster.get("leader") is not None, 60)
        runner_proc = subprocess.Popen(emergence_command() + [
            "--root", ci.root, "--store", ci.store, "pipeline", "run",
            str(ci.dir / "waits.toml"), "--id-prefix", "plkw-", "--config", "/dev/null",
            "--cluster", "--advertise", runner.url, "--peer", worker.url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            stdin=subprocess.DEVNULL)
        for line in runner_proc.stdout:
            if line.strip() == "waits | waiting":
                break
        listed = lambda: json.loads(subprocess.run(  # noqa: E731
            emergence_command() + ["--root", root, "list", "--format", "json"],
            capture_output=True, text=True).stdout or "[]")
        running = listed()
        assert [c["status"] for c in running] == ["running"], running
        cg = [f"/sys/fs/cgroup/{h}/emergence/{running[0]['id']}"
              for h in os.listdir("/sys/fs/cgroup")]
        procs[0].kill()
        procs[0].wait()
        assert wait_for(lambda: listed() == [] and not any(map(os.path.exists, cg)), 60), \
            listed()
        assert glob.glob(os.path.join(store, "pipeline", "tasks", "waits-*")) == []
    finally:
        if runner_proc is not None and runner_proc.poll() is None:
            runner_proc.kill()
            runner_proc.wait()
        stop_all(procs)
        for s in shares:
            s.stop()
