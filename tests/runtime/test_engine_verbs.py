"""The verbs engines call besides the lifecycle: pause/resume, ps, events,
update, features, and --systemd-cgroup."""

import json
import os
import subprocess
import time

import pytest
from conftest import spec_validator


def test_pause_and_resume_freeze_the_processes(rt, running, tmp_path):
    out = tmp_path / "ticks"
    out.touch()
    cid = running(["sh", "-c", "while true; do echo t >> /out/ticks; sleep 0.02; done"],
                  edit=lambda c: c["mounts"].append({"destination": "/out", "type": "bind",
                                                     "source": str(tmp_path),
                                                     "options": ["rbind"]}))
    time.sleep(0.2)
    rt("pause", cid, check=True)
    assert rt.state(cid)["status"] == "paused"
    size = out.stat().st_size
    time.sleep(0.3)
    assert out.stat().st_size == size, "processes kept running while paused"
    p = rt("pause", cid)
    assert p.returncode == 1 and "paused" in p.stderr
    p = rt("exec", cid, "true")
    assert p.returncode == 1 and "paused" in p.stderr
    p = rt("exec", "--ignore-paused", cid, "true")
    assert p.returncode == 1 and "resume the container first" in p.stderr
    rt("resume", cid, check=True)
    assert rt.state(cid)["status"] == "running"
    time.sleep(0.3)
    assert out.stat().st_size > size
    p = rt("resume", cid)
    assert p.returncode == 1 and "not paused" in p.stderr


def test_delete_force_of_a_paused_container(rt, running):
    cid = running()
    rt("pause", cid, check=True)
    rt("delete", "--force", cid, check=True)
    assert rt("state", cid).returncode == 1


def test_ps_lists_the_containers_processes(rt, running):
    cid = running(["sh", "-c", "sleep 300 & sleep 301 & wait"])
    time.sleep(0.3)
    pids = json.loads(rt("ps", "--format", "json", cid, check=True).stdout)
    assert len(pids) == 3 and rt.state(cid)["pid"] in pids
    table = rt("ps", cid, check=True).stdout.splitlines()
    assert table[0].split()[:2] == ["UID", "PID"]
    assert len(table) == 4
    assert any("sleep 301" in line for line in table)
    custom = rt("ps", cid, "-o", "pid,comm", check=True).stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"] and len(custom) == 4


def test_events_stats_once(rt, running):
    cid = running(edit=lambda c: c["linux"]["resources"].update(
        memory={"limit": 64 << 20}, pids={"limit": 50}))
    p = rt("events", "--stats", cid, check=True)
    event = json.loads(p.stdout)
    assert event["type"] == "stats" and event["id"] == cid
    data = event["data"]
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["memory"]["usage"]["usage"] > 0
    assert data["pids"] == {"current": 1, "limit": 50}
    assert data["cpu"]["usage"]["total"] > 0


def test_events_stream_reports_oom(rt, running):
    cid = running(["sh", "-c", "sleep 1; while true; do a=$(head -c 64m /dev/zero | "
                               "tr '\\0' x); done"],
                  edit=lambda c: (c["linux"]["resources"].update(
                      memory={"limit": 16 << 20, "swap": 16 << 20}),
                      c["linux"]["namespaces"].remove({"type": "pid"})))
    p = subprocess.Popen(rt.cmd + ["--root", rt.root, "events", "--interval", "1s", cid],
                         stdout=subprocess.PIPE, text=True)
    kinds = set()
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and "oom" not in kinds:
            line = p.stdout.readline()
            if not line:
                break
            kinds.add(json.loads(line)["type"])
    finally:
        p.kill()
        p.wait()
    assert {"stats", "oom"} <= kinds


def test_update_changes_limits_live(rt, running, tmp_path):
    cid = running()
    rel = f"/sys/fs/cgroup/memory/emergence/{cid}"
    rt("update", "--memory", "48m", "--pids-limit", "77", "--cpu-shares", "256", cid,
       check=True)
    with open(f"{rel}/memory.limit_in_bytes") as f:
        assert int(f.read()) == 48 << 20
    with open(f"/sys/fs/cgroup/pids/emergence/{cid}/pids.max") as f:
        assert f.read().strip() == "77"
    with open(f"/sys/fs/cgroup/cpu/emergence/{cid}/cpu.shares") as f:
        assert f.read().strip() == "256"
    res = tmp_path / "res.json"
    res.write_text(json.dumps({"memory": {"limit": 32 << 20}}))
    rt("update", "-r", str(res), cid, check=True)
    with open(f"{rel}/memory.limit_in_bytes") as f:
        assert int(f.read()) == 32 << 20
    p = rt("update", "--memory", "lots", cid)
    assert p.returncode == 1 and "not a size" in p.stderr
    res.write_text(json.dumps({"pids": {"limit": "x"}}))
    p = rt("update", "-r", str(res), cid)
    assert p.returncode == 1 and "linux.resources.pids.limit" in p.stderr


def test_features_is_valid_and_truthful(rt):
    p = rt("features", check=True)
    f = json.loads(p.stdout)
    spec_validator("runtime-spec", "features-schema.json").validate(f)
    assert set(f["linux"]["namespaces"]) == {"mount", "cgroup", "uts", "ipc", "user", "pid",
                                             "network", "time"}
    assert f["linux"]["seccomp"]["enabled"] is True
    assert "SCMP_ACT_NOTIFY" in f["linux"]["seccomp"]["actions"]  # listenerPath works now
    assert "SCMP_ARCH_X86_64" in f["linux"]["seccomp"]["archs"]
    assert "rbind" in f["mountOptions"] and "idmap" not in f["mountOptions"]


def test_systemd_cgroup_flag_without_systemd(rt):
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here")
    cid = rt.new_id()
    b = rt.bundle(["cat", "/proc/self/cgroup"], edit=lambda c: (
        c["linux"].update(cgroupsPath=f"emtest.slice:emergence:{cid}"),
        c["linux"]["namespaces"].remove({"type": "cgroup"})))
    p = rt("--systemd-cgroup", "run", "--bundle", b, cid)
    assert p.returncode == 0, p.stderr
    assert "systemd is not running" in p.stderr
    assert f"memory:/emtest.slice/emergence-{cid}.scope" in p.stdout
    for h in os.listdir("/sys/fs/cgroup"):
        d = f"/sys/fs/cgroup/{h}/emtest.slice"
        if os.path.isdir(d):
            os.rmdir(d)
