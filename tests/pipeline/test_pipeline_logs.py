"""`pipeline run --cluster` shows each remote stage's output while it runs
(emergence/pipeline/logstream.py), on a real TLS etcd with RBAC, a worker
and a command node as in test_pipeline_cluster.py: a stage prints a line
and then waits for the test, which sees the line on the runner's terminal
first; a secret it prints is masked there; a chatty stage is capped on the
way, its whole log still in the reports.  The attacks on the log keys are in
tests/security/test_logs31.py."""

import contextlib
import glob
import json
import os
import queue
import subprocess
import threading
import types

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



@contextlib.contextmanager
def one_worker(ci, sec, tmp_path, name, extra=()):  # noqa: F811
    """A worker NAME (its own root and store) and a command node on the cluster,
    each with a share service; everything, runners too (W.runners), stopped at
    the end."""
    store, root = str(tmp_path / f"{name}-store"), str(tmp_path / f"{name}-root")
    shares, procs, logs, runners = [], [], [], []
    try:
        runner = ShareNode(ci.store, str(tmp_path / "runner-share"))
        shares.append(runner)
        worker = ShareNode(store, str(tmp_path / f"{name}-share"))
        shares.append(worker)
        for node, role, more, g in ((name, "worker", list(extra),
                                     ["--root", root, "--store", store]),
                                    (f"{name}cmd", "command", [], [])):
            p, log = join_node(sec, tmp_path, node, role, sec.url, 3, more, globals_=g)
            procs.append(p)
            logs.append(log)
        yield types.SimpleNamespace(runner=runner, worker=worker, procs=procs, logs=logs,
                                    store=store, root=root, runners=runners)
    finally:
        for r in runners:
            if r.poll() is None:
                r.kill()
                r.wait()
        stop_all(procs)
        for s in shares:
            s.stop()


@needs_nix
@pytest.mark.slow
def test_remote_output_streams_live_masked_and_capped(ci, sec, tmp_path):  # noqa: F811
    cluster = Cluster(sec.url, prefix=sec.prefix, material=sec.material)
    secret = "pl-s3cret-" + os.urandom(8).hex()
    ci.write("live.toml", LIVE)
    ci.write("tok.txt", secret + "\n")
    with one_worker(ci, sec, tmp_path, "lgw", ["--cpu", "2"]) as w:
        store, runner, worker, logs = w.store, w.runner, w.worker, w.logs
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
        w.runners.append(runner_proc)
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


WAITS = ('[stages.waits]\nimage = "image.nix"\ntimeout = 600\n'
         'command = "echo waiting; while true; do sleep 0.2; done"\n')


@needs_nix
@pytest.mark.slow
def test_a_worker_killed_mid_stage_leaves_no_container(ci, sec, tmp_path):  # noqa: F811
    """kill -9 of the worker while its stage runs: the stage's container and its
    scratch dir go (the watcher of pipeline/watch.py), not left running."""
    cluster = Cluster(sec.url, prefix=sec.prefix, material=sec.material)
    ci.write("waits.toml", WAITS)
    with one_worker(ci, sec, tmp_path, "kww") as w:
        store, root, runner, worker, procs = w.store, w.root, w.runner, w.worker, w.procs
        assert wait_for(lambda: len(cluster.items("members")) == 1
                        and cluster.get("leader") is not None, 60)
        runner_proc = subprocess.Popen(emergence_command() + [
            "--root", ci.root, "--store", ci.store, "pipeline", "run",
            str(ci.dir / "waits.toml"), "--id-prefix", "plkw-", "--config", "/dev/null",
            "--cluster", "--advertise", runner.url, "--peer", worker.url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            stdin=subprocess.DEVNULL)
        w.runners.append(runner_proc)
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
        # the watcher removes the scratch dir just after the container
        scratch = lambda: glob.glob(os.path.join(store, "pipeline", "tasks", "waits-*"))  # noqa: E731
        assert wait_for(lambda: scratch() == [], 30), scratch()
