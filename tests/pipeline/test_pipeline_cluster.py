"""`pipeline run --cluster`: stages as signed placement tasks on three simulated
worker nodes (each a `cluster join --role worker` process with its own --root
and --store, and the share service over that store, on loopback; a real TLS
etcd with RBAC), inputs and results moving by digest through share.  A second
run from another node is all cache hits fetched from the workers, verified.
The attacks on the new task kind (secrets, host network, outputs outside
/out, an unsigned task, a result for another key) are refused beside it."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET

import pytest
from cihelp import ShareNode, ci_fixture, six_stages
from conftest import emergence_command

from emergence.pipeline import dispatch
from emergence.pipeline.spec import PipelineError, load

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from place.conftest import SecureEtcd, join_node, stop_all, wait_for  # noqa: E402

needs_nix = pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0,
                               reason="needs root and nix-build")

SIX = six_stages("; sleep 1")
Share = ShareNode


# -- what keeps a pipeline, or a task, off the cluster (fast) --

def test_cluster_mode_refuses_secrets_and_host_networks(tmp_path):
    (tmp_path / "p.toml").write_text(
        'cluster = true\n[secrets]\nT = { env = "X" }\n'
        '[stages.a]\nimage = "i"\ncommand = "true"\nsecrets = ["T"]\n'
        '[stages.b]\nimage = "i"\ncommand = "true"\nnetwork = "host"\n'
        '[stages.c]\nimage = "i"\ncommand = "true"\n')
    p = load(str(tmp_path / "p.toml"))
    assert p.cluster is True
    problems = dispatch.check(p)
    assert len(problems) == 2 and "secrets are not sent" in problems[0], problems
    assert "network 'host'" in problems[1]
    (tmp_path / "q.toml").write_text('cluster = "yes"\n[stages.a]\nimage = "i"\n'
                                     'command = "true"\n')
    with pytest.raises(PipelineError, match="cluster"):
        load(str(tmp_path / "q.toml"))


def _stage(**kw):
    d = "sha256:" + "a" * 64
    st = {"name": "s", "key": d, "image": d, "argv": ["/bin/sh", "-c", "true"], "env": {},
          "outputs": ["o"], "limits": {}, "timeout": 10.0, "src": d, "in": {"gen": d},
          "peers": ["http://127.0.0.1:1"]}
    st.update(kw)
    return {"kind": "stage", "id": "t1", "stage": st}


@pytest.mark.parametrize("bad, why", [
    ({"secrets": {"T": "x"}}, "secrets"),
    ({"network": "host"}, "may not ask for 'network'"),
    ({"mounts": [{"source": "/"}]}, "may not ask for 'mounts'"),
    ({"outputs": ["../../etc"]}, "under /out"),
    ({"outputs": ["/etc"]}, "under /out"),
    ({"image": "busybox"}, "'image' is not a sha256"),
    ({"in": {"../x": "sha256:" + "a" * 64}}, "'in'"),
    ({"peers": ["file:///etc"]}, "peers"),
    ({"env": {"A=B": "c"}}, "'env'"),
])
def test_the_worker_policy_refuses_what_a_stage_task_may_not_ask(bad, why):
    from emergence.cluster import policy
    assert policy.check_task(_stage(), {}) == (None, None)  # the legitimate one runs
    config, reason = policy.check_task(_stage(**bad), {})
    assert config is None and why in reason, reason


# -- the cluster (slow) --

@pytest.fixture
def ci(tmp_path):
    yield from ci_fixture(tmp_path)


@pytest.fixture
def sec(monkeypatch):
    s = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), f"/pl-{uuid.uuid4().hex[:8]}/")
    monkeypatch.setenv("EMERGENCE_CLUSTER_DIR", s.material.dir)
    try:
        yield s
    finally:
        s.stop()


def _run(ci, store, root, tag, *extra):
    rep, junit = ci.tmp / f"{tag}.json", ci.tmp / f"{tag}.xml"
    p = subprocess.run(emergence_command() + [
        "--root", root, "--store", store, "pipeline", "run", str(ci.dir / "six.toml"),
        "--id-prefix", "plci-", "--json", str(rep), "--junit", str(junit),
        "--logs", str(ci.tmp / f"logs-{tag}"), "--config", "/dev/null", *extra],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    doc = json.loads(rep.read_text())
    return {s["name"]: s for s in doc["stages"]}, doc, ET.parse(junit).getroot()


@needs_nix
@pytest.mark.slow
def test_six_stages_across_three_workers_then_all_hits_from_another_node(ci, sec, tmp_path):
    from emergence.place import tasks
    from emergence.place.state import Cluster
    cluster = Cluster(sec.url, prefix=sec.prefix, material=sec.material)
    ci.write("six.toml", SIX)
    shares, procs, logs = [], [], []
    text = lambda: "".join(open(p).read() for p in logs)  # noqa: E731
    names = [f"plw{i}" for i in range(3)]
    try:
        runner = Share(ci.store, str(tmp_path / "runner-share"))
        shares.append(runner)
        workers = {}
        for n in names:
            store, root = str(tmp_path / f"{n}-store"), str(tmp_path / f"{n}-root")
            workers[n] = Share(store, str(tmp_path / f"{n}-share"))
            shares.append(workers[n])
            p, log = join_node(sec, tmp_path, n, "worker", sec.url, 3, ["--cpu", "1"],
                               globals_=["--root", root, "--store", store])
            procs.append(p)
            logs.append(log)
        p, log = join_node(sec, tmp_path, "plcmd", "command", sec.url, 3)
        procs.append(p)
        logs.append(log)
        assert wait_for(lambda: len(cluster.items("members")) == 3
                        and cluster.get("leader") is not None, 60), text()
        peers = [x for w in workers.values() for x in ("--peer", w.url)]

        # a worker's credentials may not submit: one line, exit 3, nothing submitted
        env = dict(os.environ, EMERGENCE_CLUSTER_DIR=sec.issue("plx", ["worker"]).dir)
        p = subprocess.run(emergence_command() + [
            "--root", ci.root, "--store", ci.store, "pipeline", "run", str(ci.dir / "six.toml"),
            "--config", "/dev/null", "--cluster", "--advertise", runner.url, *peers],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)
        assert p.returncode == 3 and "is not a command node" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and cluster.items("tasks") == {}

        # the run on the cluster: every stage a task, spread, the same reports
        first, doc, junit = _run(ci, ci.store, ci.root, "c1", "--cluster",
                                 "--advertise", runner.url, *peers)
        assert {s["state"] for s in first.values()} == {"passed"}, first
        assert not any(s["cache_hit"] for s in first.values())
        hosts = {s["name"]: s["attempt_log"][0]["host"] for s in first.values()}
        assert set(hosts.values()) <= set(names) and len(set(hosts.values())) >= 2, hosts
        assert len(junit.findall(".//testcase")) == 6
        assert "tested" in (ci.tmp / "logs-c1" / "test.log").read_text()  # the log came back
        snap = tasks.listing(cluster.snapshot())
        assert len(snap) == 6 and {r["state"] for r in snap} == {"done"}, snap
        # as a local run: the same report fields, the same outputs
        local, ldoc, ljunit = _run(ci, ci.store, ci.root, "local", "--no-cache")
        assert set(ldoc) == set(doc) and all(set(local[n]) == set(first[n]) for n in first)
        assert {n: s["output_digests"] for n, s in local.items()} == \
            {n: s["output_digests"] for n, s in first.items()}
        assert len(ljunit.findall(".//testcase")) == 6

        # another node (its own store; trusts the workers' keys): all hits from peers
        other = str(tmp_path / "other-store")
        keys = [x for w in workers.values() for x in ("--trusted-key", w.key)]
        second, _, _ = _run(ci, other, str(tmp_path / "other-root"), "c2", "--cluster",
                            "--share", *peers, *keys)
        assert all(s["cache_hit"] for s in second.values()), second
        urls = {w.url for w in workers.values()}
        for n, s in second.items():  # from the workers (any that holds its blobs), verified
            assert any(u in s["message"] for u in urls), (n, s["message"])
        assert {n: s["output_digests"] for n, s in second.items()} == \
            {n: s["output_digests"] for n, s in first.items()}
        assert len(cluster.items("tasks")) == 6  # nothing was dispatched

        # attacks on the task kind, beside the legitimate runs above
        from emergence.image.store import Store
        from emergence.pipeline.cache import Cache
        from emergence.pipeline.shared import Shared
        d = tmp_path / "attacker-store"
        sh = Shared(Cache(str(d)), [w.url for w in workers.values()], [], str(tmp_path / "s"))
        pkg = Store(workers[hosts["package"]].store).resolve(
            "emergence-ci-result:" + first["package"]["key"][7:])["digest"]
        assert sh.fetch_digest(first["docs"]["key"], pkg) is None  # a result for another key
        assert sh.fetch_digest(first["package"]["key"], pkg) is not None
        good = _stage(key=first["gen"]["key"])["stage"]
        bad = {"pl-bad-secret": dict(good, secrets={"T": "x"}),
               "pl-bad-out": dict(good, outputs=["../../../../etc/pl-owned"])}
        for tid, st in bad.items():
            tasks.submit(cluster, {"kind": "stage", "id": tid, "stage": st})
        cluster.put({"kind": "stage", "id": "pl-unsigned", "stage": good, "submitted": 0},
                    "tasks", "pl-unsigned")
        done = lambda: all(cluster.get("results", t) for t in [*bad, "pl-unsigned"])  # noqa
        assert wait_for(done, 60), text()
        why = {t: cluster.get("results", t).get("refused") for t in [*bad, "pl-unsigned"]}
        assert "secrets" in why["pl-bad-secret"], why
        assert "under /out" in why["pl-bad-out"], why
        assert "not signed" in why["pl-unsigned"], why
        assert not os.path.exists("/etc/pl-owned")

        # a failing stage: its exit and log come back; fail-fast withdraws the other
        ci.write("fail.toml", '[stages.slow]\nimage = "image.nix"\ncommand = "sleep 120"\n'
                 '[stages.bad]\nimage = "image.nix"\ncommand = "sleep 2; echo boom; exit 3"\n')
        rep = ci.tmp / "fail.json"
        t0 = time.monotonic()
        p = subprocess.run(emergence_command() + [
            "--root", ci.root, "--store", ci.store, "pipeline", "run", str(ci.dir / "fail.toml"),
            "--json", str(rep), "--logs", str(ci.tmp / "logs-fail"), "--config", "/dev/null",
            "--cluster", "--advertise", runner.url, *peers], capture_output=True, text=True,
            timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stdout + p.stderr
        assert time.monotonic() - t0 < 60
        got = {s["name"]: s for s in json.loads(rep.read_text())["stages"]}
        assert got["bad"]["state"] == "failed" and got["bad"]["exit_code"] == 3, got
        assert "exited with 3 on plw" in got["bad"]["message"]
        assert "boom" in (ci.tmp / "logs-fail" / "bad.log").read_text()
        assert got["slow"]["state"] == "skipped", got["slow"]
        # it had started on a worker, which removed its container when the task ended
        assert wait_for(lambda: "-slow-1 attempt 1 on plw" in text(), 30), text()
        assert wait_for(lambda: not any("-slow-" in c for c in _containers(tmp_path, names)),
                        30)
    finally:
        stop_all(procs)
        for s in shares:
            s.stop()
    assert _containers(tmp_path, names) == []  # no container left on any worker


def _containers(tmp_path, names):
    roots = [tmp_path / f"{n}-root" for n in names]
    return [c for r in roots if r.is_dir() for c in os.listdir(r) if c.startswith("pl-")]
