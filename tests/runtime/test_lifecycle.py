"""The runc command line and the container lifecycle (runtime.md), on real containers."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from conftest import spec_validator


def test_run_prints_output_and_exits_zero(rt):
    p = rt.run(["echo", "hello"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello\n"


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_run_propagates_exit_code(rt, code):
    assert rt.run(["sh", "-c", f"exit {code}"]).returncode == code


def test_run_reports_death_by_signal_as_128_plus_signal(rt):
    # Without a pid namespace: the init of one ignores SIGKILL from inside.
    p = rt.run(["sh", "-c", "kill -KILL $$"],
               edit=lambda c: c["linux"]["namespaces"].remove({"type": "pid"}))
    assert p.returncode == 128 + 9


def test_run_forwards_signals_to_the_container(rt):
    b = rt.bundle(["sh", "-c", "trap 'echo got-term; exit 7' TERM; "
                               "echo up; while true; do sleep 0.05; done"])
    p = subprocess.Popen(rt.cmd + ["--root", rt.root, "run", "--bundle", b, rt.new_id()],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "up\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 7
    assert p.stdout.read() == "got-term\n"


def _validate_state(state):
    spec_validator("runtime-spec", "state-schema.json").validate(state)


def test_create_start_state_kill_delete(rt, tmp_path):
    b = rt.bundle(["sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.05; done"])
    cid = rt.new_id()
    pid_file = tmp_path / "pid"
    rt("create", "--bundle", b, "--pid-file", str(pid_file), cid, check=True)
    st = rt.state(cid)
    _validate_state(st)
    assert st["status"] == "created"
    assert st["id"] == cid and st["bundle"] == b
    assert int(pid_file.read_text()) == st["pid"] > 0
    # Blocked at the start barrier: the init is the sealed shim, not the program.
    assert os.readlink(f"/proc/{st['pid']}/exe").startswith("/memfd:emergence-shim")

    rt("start", cid, check=True)
    st = rt.state(cid)
    _validate_state(st)
    assert st["status"] == "running"
    assert "sh" in open(f"/proc/{st['pid']}/cmdline").read()

    p = rt("start", cid)
    assert p.returncode != 0 and "only a created container" in p.stderr

    p = rt("delete", cid)
    assert p.returncode != 0 and "running" in p.stderr and "--force" in p.stderr

    rt("kill", cid, "TERM", check=True)
    for _ in range(200):
        if rt.state(cid)["status"] == "stopped":
            break
        time.sleep(0.02)
    st = rt.state(cid)
    _validate_state(st)
    assert st["status"] == "stopped"
    p = rt("kill", cid, "KILL")
    assert p.returncode != 0 and "stopped" in p.stderr
    rt("delete", cid, check=True)
    p = rt("state", cid)
    assert p.returncode == 1 and "does not exist" in p.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))


@pytest.mark.parametrize("sig", ["KILL", "SIGKILL", "9", "kill"])
def test_kill_accepts_signal_names_and_numbers(rt, sig):
    b = rt.bundle(["sleep", "100"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    pid = rt.state(cid)["pid"]
    rt("kill", cid, sig, check=True)
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}") or rt.state(cid)["status"] == "stopped":
            break
        time.sleep(0.02)
    assert rt.state(cid)["status"] == "stopped"


def test_kill_rejects_unknown_signal(rt):
    b = rt.bundle(["sleep", "100"])
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    p = rt("kill", cid, "NOPE")
    assert p.returncode != 0 and "unknown signal" in p.stderr


def test_kill_all_signals_every_process(rt):
    b = rt.bundle(["sh", "-c", "sleep 100 & sleep 100 & wait"],
                  edit=lambda c: c["linux"]["namespaces"].remove({"type": "pid"}))
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    time.sleep(0.3)
    rel = f"emergence/{cid}"
    with open(f"/sys/fs/cgroup/pids/{rel}/cgroup.procs") as f:
        assert len(f.read().split()) == 3
    rt("kill", "--all", cid, "KILL", check=True)
    for _ in range(200):
        with open(f"/sys/fs/cgroup/pids/{rel}/cgroup.procs") as f:
            if not f.read().split():
                break
        time.sleep(0.02)
    with open(f"/sys/fs/cgroup/pids/{rel}/cgroup.procs") as f:
        assert f.read().split() == []


def test_delete_force_removes_a_running_container(rt):
    b = rt.bundle(["sleep", "100"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    pid = rt.state(cid)["pid"]
    rt("delete", "--force", cid, check=True)
    assert not os.path.exists(os.path.join(rt.root, cid))
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("init still running after delete --force")


def test_delete_of_created_container_kills_the_waiting_init(rt):
    cid = rt.new_id()
    rt("create", "--bundle", rt.bundle(["true"]), cid, check=True)
    pid = rt.state(cid)["pid"]
    # runc and crun delete a created container without --force (issue 9); only a
    # running one needs it
    rt("delete", cid, check=True)
    time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}/exe") or not os.readlink(
        f"/proc/{pid}/exe").startswith("/memfd:emergence")


def test_list_formats(rt):
    cid = rt.new_id()
    rt("create", "--bundle", rt.bundle(["true"]), cid, check=True)
    table = rt("list", check=True).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert any(line.split()[0] == cid and "created" in line for line in table.splitlines())
    assert rt("list", "-q", check=True).stdout.split() == [cid]
    js = json.loads(rt("list", "--format", "json", check=True).stdout)
    assert [s["id"] for s in js] == [cid] and js[0]["status"] == "created"


def test_duplicate_id_is_refused_and_leaves_the_first_alone(rt):
    cid = rt.new_id()
    b = rt.bundle(["true"])
    rt("create", "--bundle", b, cid, check=True)
    p = rt("create", "--bundle", b, cid)
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0 and "already exists" in p.stderr
    assert rt.state(cid)["status"] == "created"


def test_concurrent_creates_of_one_id_yield_exactly_one_container(rt):
    cid = rt.new_id()
    b = rt.bundle(["true"])
    results = []

    def go():
        results.append(rt("create", "--bundle", b, cid).returncode)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 1, 1]
    assert rt.state(cid)["status"] == "created"


def test_unknown_id_gives_one_line(rt):
    for args in (["state", "nope"], ["start", "nope"], ["kill", "nope"], ["delete", "nope"]):
        p = rt(*args)
        assert p.returncode == 1, args
        assert p.stderr.strip() == "emergence: container 'nope' does not exist", args
    assert rt("delete", "--force", "nope").returncode == 0


@pytest.mark.parametrize("cid", ["../escape", "a/b", "a\x01b", "a b", "x" * 256, ".hidden"])
def test_invalid_id_is_refused(rt, cid):
    p = rt("create", "--bundle", rt.bundle(["true"]), cid)
    assert p.returncode == 1 and p.stderr.startswith("emergence: invalid container id"), p.stderr
    assert p.stderr.count("\n") == 1 and len(p.stderr) < 300
    assert rt("list", "-q").stdout.strip() == ""


def test_invalid_id_is_named_before_the_config(rt, tmp_path):
    p = rt("create", "--bundle", str(tmp_path / "no-such-bundle"), "a/b")
    assert "invalid container id" in p.stderr


def test_spec_writes_a_config_that_validates_and_runs(rt, tmp_path):
    d = tmp_path / "specbundle"
    d.mkdir()
    rt("spec", "--bundle", str(d), check=True)
    with open(d / "config.json") as f:
        config = json.load(f)
    spec_validator("runtime-spec", "config-schema.json").validate(config)
    assert config["process"]["terminal"] is True  # as runc spec writes it
    p = rt("spec", "--bundle", str(d))
    assert p.returncode == 1 and "already exists" in p.stderr
    os.symlink(rt.rootfs, d / "rootfs")
    config["process"]["terminal"] = False
    config["process"]["args"] = ["echo", "from-spec"]
    (d / "config.json").write_text(json.dumps(config))
    p = rt("run", "--bundle", str(d), rt.new_id())
    assert p.returncode == 0, p.stderr
    assert p.stdout == "from-spec\n"


def test_rootless_spec_has_a_user_namespace(rt, tmp_path):
    rt("spec", "--rootless", "--bundle", str(tmp_path), check=True)
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    types = [n["type"] for n in config["linux"]["namespaces"]]
    assert "user" in types and config["linux"]["uidMappings"]


def test_usage_errors_exit_2(rt):
    assert rt("frobnicate").returncode == 2
    assert rt("create").returncode == 2
    assert rt("kill").returncode == 2
    assert rt("--log-format", "xml", "list").returncode == 2


def test_json_log_gets_the_error(rt, tmp_path):
    log = tmp_path / "log.json"
    p = rt("--log", str(log), "--log-format", "json", "state", "missing")
    assert p.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "does not exist" in entry["msg"]


def test_create_without_process_then_start_fails(rt):
    b = rt.bundle(["true"], edit=lambda c: c.pop("process"))
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    p = rt("start", cid)
    assert p.returncode == 1 and "no process" in p.stderr
    assert rt.state(cid)["status"] == "stopped"


def test_without_mount_namespace_only_the_root_changes(rt):
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "mount"]
    with open("/proc/self/mountinfo") as f:
        before = f.read().count("\n")
    p = rt.run(["sh", "-c", "ls /bin/busybox; readlink /proc/1/ns/mnt || true"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert "/bin/busybox" in p.stdout and "no mount namespace" in p.stderr
    with open("/proc/self/mountinfo") as f:
        assert f.read().count("\n") == before  # nothing was mounted on the host


def test_no_pivot_runs_in_a_chroot(rt):
    b = rt.bundle(["sh", "-c", "ls /bin/busybox && cat /proc/self/mountinfo | head -1"])
    p = rt("run", "--no-pivot", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert "/bin/busybox" in p.stdout


def test_debug_shows_the_plan(rt):
    b = rt.bundle(["true"])
    p = rt("--debug", "run", "--bundle", b, rt.new_id())
    assert p.returncode == 0
    lines = [x for x in p.stderr.splitlines() if x.startswith("emergence: plan: ")]
    assert any("PIVOT_ROOT" in x for x in lines) and lines[-1].startswith(
        "emergence: plan: EXEC")
