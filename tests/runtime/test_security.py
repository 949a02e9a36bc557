"""seccomp, and the attacks of the three famous runc escapes, tried for real."""

import hashlib
import os
import subprocess
import time


def test_seccomp_rule_returns_its_errno(rt):
    def edit(c):
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 30}],
        }
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    p = rt.run(["sh", "-c", "mkdir /tmp/x; touch /tmp/y && echo touched"], edit=edit)
    assert "Read-only file system" in p.stderr  # EROFS = 30, from the filter
    assert "touched" in p.stdout


def test_seccomp_argument_conditions(rt):
    # kill(pid, 0) is refused; kill with any other signal passes.
    def edit(c):
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                          "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]}],
        }
    p = rt.run(["sh", "-c", "kill -0 $$ || echo blocked; kill -CONT $$ && echo cont-ok"],
               edit=edit)
    assert p.stdout.split() == ["blocked", "cont-ok"], p.stderr


def test_seccomp_rule_repeated_is_not_an_error(rt):
    # podman's stock profile on Debian (/usr/share/containers/seccomp.json) gives
    # `socket` these rules for three architectures; libseccomp answers EEXIST for
    # the third (on x32), which runc and crun take as "already there"
    def rule(action, *args, **extra):
        return {"names": ["socket"], "action": action, **extra,
                "args": [{"index": i, "value": v, "op": op} for i, v, op in args]}

    def edit(c):
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_LOG",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
            rule("SCMP_ACT_ERRNO", (0, 16, "SCMP_CMP_EQ"), (2, 9, "SCMP_CMP_EQ"), errnoRet=22),
            rule("SCMP_ACT_ALLOW", (2, 9, "SCMP_CMP_NE")),
            rule("SCMP_ACT_ALLOW", (0, 16, "SCMP_CMP_NE")),
            rule("SCMP_ACT_ALLOW", (2, 9, "SCMP_CMP_NE"))]}
    p = rt.run(["sh", "-c", "echo ran"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ran"


def test_seccomp_default_errno_with_allow_list(rt):
    # A default-deny profile that allows what busybox `true` and exec need.
    allowed = ["execve", "brk", "arch_prctl", "set_tid_address", "exit_group", "exit",
               "getuid", "geteuid", "getpid", "rt_sigaction", "rt_sigprocmask", "prctl",
               "close_range", "close", "fchdir", "write", "mmap", "munmap", "openat", "read",
               "readlinkat", "readlink", "uname", "getrandom", "set_robust_list", "rseq",
               "prlimit64", "mprotect", "newfstatat", "fstat", "ioctl", "getppid", "futex",
               "sigaltstack"]

    def edit(c):
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
        }
    assert rt.run(["true"], edit=edit).returncode == 0
    p = rt.run(["mkdir", "/x"], edit=edit)
    assert p.returncode != 0


def test_seccomp_kill_action(rt):
    def edit(c):
        c["linux"]["namespaces"].remove({"type": "pid"})
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    p = rt.run(["sh", "-c", "echo $PPID"], edit=edit)  # busybox sh calls getppid at start
    assert p.returncode == 128 + 31  # SIGSYS


def test_seccomp_without_no_new_privs(rt):
    def edit(c):
        c["process"]["noNewPrivileges"] = False
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95}]}
    p = rt.run(["sh", "-c", "grep -E 'Seccomp|NoNewPrivs' /proc/self/status"], edit=edit)
    assert p.returncode == 0, p.stderr
    fields = dict(line.split(":\t") for line in p.stdout.splitlines())
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "0"


# ---- CVE-2019-5736: overwriting the runtime through /proc/<pid>/exe ----

def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_init_exe_is_a_sealed_memfd_that_cannot_be_written(rt):
    cid = rt.new_id()
    rt("create", "--bundle", rt.bundle(["true"]), cid, check=True)
    pid = rt.state(cid)["pid"]
    exe = os.readlink(f"/proc/{pid}/exe")
    assert exe.startswith("/memfd:emergence-shim"), exe
    try:
        fd = os.open(f"/proc/{pid}/exe", os.O_WRONLY)
    except OSError:
        return  # not even openable: fine
    try:
        try:
            os.write(fd, b"#!/bin/sh\necho pwned\n")
            raise AssertionError("wrote into the shim the container init runs from")
        except PermissionError:
            pass
    finally:
        os.close(fd)


def test_container_cannot_write_the_runtime_via_proc_self_exe(rt):
    """The classic attack: the container runs /proc/self/exe (which, before exec,
    is whatever the runtime runs as) and tries to write to it from inside."""
    import sys

    import emergence.runtime.launch
    host_files = [sys.executable, emergence.runtime.launch.SHIM]
    before = {f: _sha(f) for f in host_files}
    script = ("for p in /proc/[0-9]*; do "
              "  ( echo pwned >> $p/exe ) 2>/dev/null && echo WROTE $p; done; "
              "/proc/self/exe 2>&1; echo exe-rc=$?")

    def edit(c):
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k] += ["CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"]
    p = rt.run(["sh", "-c", script], edit=edit)
    assert "WROTE" not in p.stdout, p.stdout
    assert {f: _sha(f) for f in host_files} == before


def test_waiting_init_is_not_dumpable(rt):
    cid = rt.new_id()
    rt("create", "--bundle", rt.bundle(["true"]), cid, check=True)
    pid = rt.state(cid)["pid"]
    # A non-dumpable task's /proc entries belong to root:root whatever its creds.
    st = os.stat(f"/proc/{pid}/environ")
    assert (st.st_uid, st.st_gid) == (0, 0)


# ---- CVE-2024-21626: a leaked host fd used as the working directory ----

def test_cwd_through_a_leaked_fd_is_refused(rt):
    for n in range(3, 10):
        p = rt.run(["sh", "-c", "pwd; ls .."],
                   edit=lambda c, n=n: c["process"].update(cwd=f"/proc/self/fd/{n}"))
        assert p.returncode != 0, (n, p.stdout)
        assert "process.cwd" in p.stderr, p.stderr


def test_no_host_fd_is_open_in_the_container(rt):
    p = rt.run(["sh", "-c", "for f in /proc/self/fd/*; do echo $f $(readlink $f); done"])
    # (the glob's own directory fd is listed but closed by the time of readlink)
    links = [line for line in p.stdout.splitlines() if len(line.split()) > 1]
    assert [line.split()[0] for line in links] == [f"/proc/self/fd/{n}" for n in (0, 1, 2)]
    for link in links:
        assert "/run/emergence" not in link and "state" not in link, link


# ---- CVE-2021-30465: a symlink in the rootfs redirecting a mount to the host ----

def test_mount_destination_symlink_cannot_escape_the_rootfs(rt, tmp_path):
    target = tmp_path / "host-target"
    target.mkdir()
    b = rt.bundle(["sh", "-c", "awk '{print $5}' /proc/self/mountinfo"], copy_rootfs=True,
                  edit=lambda c: c["mounts"].extend([
                      {"destination": "/evil/abs", "type": "tmpfs", "source": "tmpfs"},
                      {"destination": "/evil2/x", "type": "tmpfs", "source": "tmpfs"}]))
    rootfs = os.path.join(b, "rootfs")
    os.symlink(str(target), os.path.join(rootfs, "evil"))                    # absolute
    os.symlink("../../../../../../../" + str(target), os.path.join(rootfs, "evil2"))  # relative
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    # The mounts landed inside the rootfs, under the path the symlink names there...
    assert os.path.isdir(os.path.join(rootfs, str(target).lstrip("/"), "abs"))
    assert os.path.isdir(os.path.join(rootfs, str(target).lstrip("/"), "x"))
    # ...and nothing was created or mounted on the host's directory.
    assert os.listdir(target) == []
    with open("/proc/self/mountinfo") as f:
        assert str(target) not in f.read()


def test_mount_race_symlink_swap_stays_inside(rt, tmp_path):
    """A container that swaps a directory for a symlink while mounts are being
    made (the race of CVE-2021-30465) still cannot get a mount onto the host."""
    target = tmp_path / "host-target"
    target.mkdir()
    b = rt.bundle(["true"], copy_rootfs=True, edit=lambda c: c["mounts"].extend(
        [{"destination": f"/race/d{i}", "type": "tmpfs", "source": "tmpfs"}
         for i in range(20)]))
    rootfs = os.path.join(b, "rootfs")
    os.mkdir(os.path.join(rootfs, "race"))
    stop = time.monotonic() + 3
    swapper = subprocess.Popen(
        ["sh", "-c", f"cd {rootfs}; while true; do rm -rf race; mkdir race; "
                     f"rm -rf race; ln -s {target} race; done"])
    try:
        while time.monotonic() < stop:
            rt("run", "--bundle", b, rt.new_id())
    finally:
        swapper.kill()
        swapper.wait()
    with open("/proc/self/mountinfo") as f:
        assert str(target) not in f.read()
    assert os.listdir(target) == []
