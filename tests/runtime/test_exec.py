"""`exec`: a second process joins a running container."""

import json
import os
import time

import pytest


@pytest.fixture
def running(rt):
    """A running container that sleeps; yields its id."""
    def make(edit=None):
        b = rt.bundle(["sleep", "300"], edit=edit)
        cid = rt.new_id()
        rt("run", "--detach", "--bundle", b, cid, check=True)
        return cid
    return make


def ns_of(pid):
    return {t: os.readlink(f"/proc/{pid}/ns/{t}")
            for t in ("pid", "net", "ipc", "uts", "mnt", "cgroup")}


def test_exec_joins_every_namespace_and_the_cgroup(rt, running, tmp_path):
    cid = running()
    init = rt.state(cid)["pid"]
    pid_file = tmp_path / "exec.pid"
    p = rt("exec", "--pid-file", str(pid_file), cid, "sh", "-c",
           "for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done; "
           "cat /proc/self/cgroup | grep memory; echo $$")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:6] == [ns_of(init)[t] for t in ("pid", "net", "ipc", "uts", "mnt", "cgroup")]
    assert lines[6].endswith(":memory:/")  # inside the cgroup namespace: its root
    assert lines[7] != "1" and int(lines[7]) > 1
    assert int(pid_file.read_text()) > 0


def test_exec_exit_code_and_signal(rt, running):
    cid = running()
    assert rt("exec", cid, "sh", "-c", "exit 9").returncode == 9
    assert rt("exec", cid, "sh", "-c", "kill -TERM $$").returncode == 128 + 15


def test_exec_flags(rt, running):
    cid = running()
    p = rt("exec", "--user", "1000:2000", "--additional-gids", "33", "--env", "A=1",
           "-e", "PATH=/bin", "--cwd", "/tmp", cid, "sh", "-c",
           "id -u; id -g; id -G; echo $A; echo $PATH; pwd")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "1000" and lines[1] == "2000"
    assert sorted(lines[2].split()) == ["2000", "33"]
    assert lines[3:] == ["1", "/bin", "/tmp"]


def test_exec_inherits_capabilities_and_can_add(rt, running):
    cid = running()
    p = rt("exec", cid, "grep", "CapEff", "/proc/self/status")
    base = int(p.stdout.split()[1], 16)
    p = rt("exec", "--cap", "CAP_CHOWN", cid, "grep", "CapEff", "/proc/self/status")
    assert int(p.stdout.split()[1], 16) == base | 1  # CAP_CHOWN is bit 0


def test_exec_gets_the_seccomp_profile_and_rlimits(rt, running):
    def edit(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30}]}
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 111, "hard": 222}]
    cid = running(edit)
    p = rt("exec", cid, "sh", "-c", "ulimit -n; mkdir /dev/shm/x")
    assert p.stdout.split() == ["111"]
    assert "Read-only file system" in p.stderr


def test_exec_with_process_json(rt, running, tmp_path):
    cid = running()
    proc = {"args": ["sh", "-c", "echo $X; id -u"], "cwd": "/etc", "env": ["X=fromjson"],
            "user": {"uid": 7, "gid": 7}, "terminal": False}
    f = tmp_path / "process.json"
    f.write_text(json.dumps(proc))
    p = rt("exec", "--process", str(f), cid)
    assert p.stdout.split() == ["fromjson", "7"], p.stderr


def test_exec_with_bad_process_json(rt, running, tmp_path):
    cid = running()
    f = tmp_path / "process.json"
    f.write_text(json.dumps({"args": ["true"], "cwd": 5}))
    p = rt("exec", "--process", str(f), cid)
    assert p.returncode == 1 and "process.cwd: must be a string" in p.stderr
    assert "\n" not in p.stderr.strip()


def test_exec_detach(rt, running, tmp_path):
    cid = running()
    pid_file = tmp_path / "p"
    p = rt("exec", "--detach", "--pid-file", str(pid_file), cid, "sleep", "30")
    assert p.returncode == 0, p.stderr
    pid = int(pid_file.read_text())
    # the pid is the process's from the start; as with runc, exec returns once it
    # is set up, and the execve itself may come a moment later
    deadline = time.monotonic() + 10
    while "sleep" not in open(f"/proc/{pid}/cmdline").read():
        assert time.monotonic() < deadline, open(f"/proc/{pid}/cmdline").read()
        time.sleep(0.01)
    with open(f"/sys/fs/cgroup/pids/emergence/{cid}/cgroup.procs") as f:
        assert str(pid) in f.read().split()


def test_exec_into_stopped_container_is_refused(rt):
    b = rt.bundle(["true"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    for _ in range(100):
        if rt.state(cid)["status"] == "stopped":
            break
        time.sleep(0.02)
    p = rt("exec", cid, "true")
    assert p.returncode == 1 and "stopped" in p.stderr


def test_exec_missing_program(rt, running):
    cid = running()
    p = rt("exec", cid, "no-such-program")
    assert p.returncode == 1 and "no-such-program" in p.stderr


def test_exec_in_user_namespace(rt, running, tmp_path):
    from test_namespaces import _open_path_to
    _open_path_to(rt.rootfs)
    _open_path_to(str(tmp_path))

    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        for m in c["mounts"]:
            if m["destination"] == "/dev/pts":
                m["options"].remove("gid=5")
    cid = running(edit)
    p = rt("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "0" and lines[1].split() == ["0", "200000", "65536"]
