"""Bad input gets one line naming the problem, a non-zero exit, and leaves
nothing behind: no state dir, cgroup, mount or process."""

import os
import subprocess
import sys

import pytest


def processes_of(cid):
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if cid in line and "ps -eo" not in line]


def assert_clean_failure(rt, cid, p, *words):
    assert p.returncode == 1, (p.stdout, p.stderr)
    err = p.stderr.strip()
    assert err.startswith("emergence: "), err
    assert "\n" not in err, f"more than one line: {err!r}"
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr
    for w in words:
        assert w in err, (w, err)
    assert not os.path.exists(os.path.join(rt.root, cid)), "state dir left behind"
    for h in os.listdir("/sys/fs/cgroup"):
        assert not os.path.exists(f"/sys/fs/cgroup/{h}/emergence/{cid}"), "cgroup left"
    with open("/proc/self/mountinfo") as f:
        assert cid not in f.read()
    assert not processes_of(cid)


def create_with(rt, config_text=None, edit=None, args=("true",), copy_rootfs=False):
    b = rt.bundle(list(args), edit=edit, copy_rootfs=copy_rootfs)
    if config_text is not None:
        with open(os.path.join(b, "config.json"), "w") as f:
            f.write(config_text)
    cid = rt.new_id()
    return cid, rt("create", "--bundle", b, cid)


def test_malformed_json(rt):
    cid, p = create_with(rt, config_text='{"ociVersion": "1.0.0", "root": {]')
    assert_clean_failure(rt, cid, p, "config.json", "not valid JSON", "line 1")


def test_missing_config(rt, tmp_path):
    cid = rt.new_id()
    empty = tmp_path / "empty"
    empty.mkdir()
    p = rt("create", "--bundle", str(empty), cid)
    assert_clean_failure(rt, cid, p, "no config.json")


@pytest.mark.parametrize("mutate,words", [
    (lambda c: c.pop("ociVersion"), ["missing required field 'ociVersion'"]),
    (lambda c: c["process"].update(args="sh"), ["process.args", "must be an array"]),
    (lambda c: c["process"].update(cwd=5), ["process.cwd", "must be a string"]),
    (lambda c: c["process"].update(cwd="relative"), ["process.cwd", "absolute"]),
    (lambda c: c["process"].update(args=[]), ["process.args"]),
    (lambda c: c["process"]["user"].update(uid=-1), ["process.user.uid", "unsigned"]),
    (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}),
     ["linux.namespaces[6].type", "'bogus'"]),
    (lambda c: c["linux"]["namespaces"].append({"type": "pid"}), ["listed twice"]),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]),
     ["RLIMIT_BOGUS"]),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 9, "hard": 1}]),
     ["soft limit 9 exceeds hard limit 1"]),
    (lambda c: c["mounts"].append({"destination": "rel/path", "type": "tmpfs"}),
     ["mounts[7].destination", "absolute"]),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]),
     ["user namespace"]),
    (lambda c: c["linux"]["resources"].update(hugepageLimits=[{"pageSize": "64kB",
                                                               "limit": 1}]),
     ["hugepageLimits[0].pageSize"]),
    (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_DANCE"}),
     ["linux.seccomp.defaultAction"]),
    (lambda c: c["linux"]["namespaces"].remove({"type": "uts"}), ["hostname", "uts"]),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "bind",
                                   "source": "/definitely/not/here"}),
     ["/definitely/not/here", "does not exist"]),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "proc", "source": "proc",
                                   "options": ["tmpcopyup"]}), ["tmpcopyup", "for tmpfs"]),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "tmpfs",
                                   "options": ["idmap"]}), ["only bind mounts", "idmapped"]),
])
def test_invalid_config_is_refused_before_anything_happens(rt, mutate, words):
    cid, p = create_with(rt, edit=mutate)
    assert_clean_failure(rt, cid, p, *words)


def test_capability_the_runtime_lacks_is_named(rt):
    with open("/proc/self/status") as f:
        bnd = next(int(x.split()[1], 16) for x in f if x.startswith("CapBnd:"))
    if bnd >> 24 & 1:
        pytest.skip("this host grants CAP_SYS_RESOURCE")

    def edit(c):
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k].append("CAP_SYS_RESOURCE")
    cid, p = create_with(rt, edit=edit)
    assert_clean_failure(rt, cid, p, "CAP_SYS_RESOURCE", "does not hold")


def test_missing_rootfs(rt):
    cid, p = create_with(rt, edit=lambda c: c["root"].update(path="/nonexistent/rootfs"))
    assert_clean_failure(rt, cid, p, "rootfs /nonexistent/rootfs does not exist")


def test_missing_executable(rt):
    cid, p = create_with(rt, args=["/no/such/program"])
    assert_clean_failure(rt, cid, p, "/no/such/program", "No such file")
    cid, p = create_with(rt, args=["nosuchcommand"])
    assert_clean_failure(rt, cid, p, "nosuchcommand", "$PATH")


def test_executable_that_is_not_executable(rt):
    cid, p = create_with(rt, args=["/etc/passwd"])
    assert_clean_failure(rt, cid, p, "/etc/passwd", "Permission denied")


def test_cwd_that_cannot_be_made(rt):
    # A missing cwd is created (as runc does); one that is a file cannot be.
    cid, p = create_with(rt, edit=lambda c: c["process"].update(cwd="/etc/passwd/x"))
    assert_clean_failure(rt, cid, p, "process.cwd /etc/passwd/x")


def test_failure_inside_the_init_after_mounts_cleans_up(rt):
    # A failure late in setup: a namespaced sysctl that this kernel does not have
    cid, p = create_with(rt, edit=lambda c: c["linux"].update(
        sysctl={"net.ipv4.no_such_knob": "1"}))
    assert_clean_failure(rt, cid, p, "net.ipv4.no_such_knob")


def test_memory_limit_too_small_to_start(rt):
    cid, p = create_with(rt, edit=lambda c: c["linux"]["resources"].update(
        memory={"limit": 4096}))
    assert p.returncode == 1
    assert_clean_failure(rt, cid, p, "memory")


def test_run_of_bad_config_leaves_nothing(rt):
    b = rt.bundle(["true"], edit=lambda c: c["process"].update(cwd="nope"))
    cid = rt.new_id()
    p = rt("run", "--bundle", b, cid)
    assert_clean_failure(rt, cid, p, "process.cwd")


def test_corrupt_state_is_reported_not_crashed(rt):
    cid = rt.new_id()
    rt("create", "--bundle", rt.bundle(["true"]), cid, check=True)
    with open(os.path.join(rt.root, cid, "state.json"), "w") as f:
        f.write("{garbage")
    p = rt("state", cid)
    assert p.returncode == 1 and "corrupt" in p.stderr and "Traceback" not in p.stderr
    p = rt("delete", "--force", cid)
    assert p.returncode == 0, p.stderr
    assert "corrupt" in p.stderr  # a warning, and everything is gone (checked on teardown)


@pytest.mark.parametrize("mutate,words", [
    (lambda c: c["process"].update(execCPUAffinity={"initial": "0"}), ["execCPUAffinity"]),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), ["linux.intelRdt"]),
    (lambda c: c["linux"].update(netDevices={"eth9": {}}), ["linux.netDevices"]),
])
def test_unsupported_fields_are_refused(rt, mutate, words):
    cid, p = create_with(rt, edit=mutate)
    assert_clean_failure(rt, cid, p, "not supported", *words)


def test_lsm_labels_without_the_lsm_are_a_warning(rt):
    if os.path.exists("/sys/fs/selinux/enforce"):
        pytest.skip("SELinux is enabled here")
    p = rt.run(["true"], edit=lambda c: c["process"].update(selinuxLabel="system_u:x"))
    assert p.returncode == 0
    assert "warning: process.selinuxLabel ignored" in p.stderr


# ---- issue 25: what used to be "internal error" ------------------------------------------

@pytest.mark.parametrize("text", ["[" * 10_000 + "]" * 10_000,
                                  '{"a":' * 10_000 + "1" + "}" * 10_000],
                         ids=["arrays", "objects"])
def test_a_deeply_nested_config_is_one_line(rt, text):
    cid, p = create_with(rt, config_text=text)
    assert_clean_failure(rt, cid, p, "config.json", "nested too deeply (limit 64 levels)")


def test_nesting_below_the_parser_limit_is_refused_too(rt):
    """900 levels parse, but would overflow the stack later (writing the state)."""
    def edit(c):
        c["annotations"] = {}
        c["x-extension"] = "DEEP"
    b = rt.bundle(["true"], edit=edit)
    path = os.path.join(b, "config.json")
    with open(path) as f:
        text = f.read().replace('"DEEP"', "[" * 900 + "]" * 900)
    cid, p = create_with(rt, config_text=text)
    assert_clean_failure(rt, cid, p, "nested too deeply", "x-extension")


def _run_text(rt, edit, args=("true",)):
    """Run a bundle whose JSON text EDIT(text) changed; the CompletedProcess."""
    b = rt.bundle(list(args))
    path = os.path.join(b, "config.json")
    with open(path) as f:
        text = edit(f.read())
    with open(path, "w") as f:
        f.write(text)
    return rt("run", "--bundle", b, rt.new_id())


@pytest.mark.parametrize("edit", [
    # a mount's destination, a hook's argument, the hostname, a seccomp syscall name
    lambda t: t.replace('"/dev/mqueue"', '"/dev/mq\\ud800"'),
    lambda t: t.replace('"hostname": "emergence"', '"hostname": "h\\ud800"'),
    lambda t: t.replace('"ociVersion"', '"hooks": {"prestart": [{"path": "/bin/true", '
                                       '"args": ["true", "\\udc80"], "env": ["A=\\ud800"]}]}, '
                                       '"ociVersion"'),
    lambda t: t.replace('"namespaces"', '"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", '
                                       '"syscalls": [{"names": ["mkdir\\ud800", "mkdirat"], '
                                       '"action": "SCMP_ACT_ERRNO"}]}, "namespaces"'),
], ids=["mount", "hostname", "hook", "seccomp"])
def test_a_lone_surrogate_runs_as_in_runc(rt, edit):
    """Go's decoder makes an unpaired \\ud800 U+FFFD; runc and crun run these."""
    p = _run_text(rt, edit)
    assert p.returncode == 0, p.stderr
    assert "internal error" not in p.stderr


def test_a_lone_surrogate_reaches_the_kernel_as_fffd(rt):
    p = _run_text(rt, lambda t: t.replace('"hostname": "emergence"', '"hostname": "h\\ud800"'),
                  args=("hostname",))
    assert p.returncode == 0 and p.stdout.strip() == "h\ufffd", (p.stdout, p.stderr)


@pytest.mark.parametrize("value", [5, "x", {"a": 1}, None, ["CAP_BOGUS"]])
def test_unknown_key_in_capabilities_is_ignored(rt, value):
    """runc and crun ignore a key that is no capability set, whatever it holds."""
    def edit(c):
        c["process"]["capabilities"]["extra"] = value
    p = rt.run(["sh", "-c", "grep CapEff /proc/self/status"], edit=edit)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout.split()[1] != "0000000000000000"


def test_hook_env_entry_without_equals_is_passed_over(rt, tmp_path):
    """runc and crun run such a hook; the entry is meaningless, the rest reaches it."""
    out = tmp_path / "hook-env"
    def edit(c):
        c["hooks"] = {"prestart": [{"path": "/bin/sh",
                                    "args": ["sh", "-c", f"env > {out}"],
                                    "env": ["NOEQ", "=x", "GOOD=1"]}]}
    p = rt.run(["true"], edit=edit)
    assert p.returncode == 0, p.stderr
    env = out.read_text().split()
    assert "GOOD=1" in env and not [e for e in env if "NOEQ" in e or e.startswith("=")]
    p = rt("--debug", "run", "--bundle", rt.bundle(["true"], edit=edit), rt.new_id())
    assert p.returncode == 0 and "hooks.prestart[0].env[0]" in p.stderr


def test_hook_timeout_beyond_any_wait_is_no_timeout(rt):
    def edit(c):
        c["hooks"] = {"prestart": [{"path": "/bin/true", "timeout": 2**63 - 1}],
                      "createContainer": [{"path": "/bin/true", "timeout": 2**63 - 1}]}
    p = rt.run(["true"], edit=edit)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("edit,words", [
    (lambda c: c["process"].update(cwd="rel" + "x" * 100_000), ["process.cwd", "characters"]),
    (lambda c: c["linux"]["namespaces"].append({"type": "y" * 100_000}),
     ["linux.namespaces[", "is not one of"]),
    (lambda c: c["linux"].update(sysctl={"z" * 100_000: "1"}), ["linux.sysctl.zzz"]),
])
def test_an_error_never_echoes_a_huge_value(rt, edit, words):
    cid, p = create_with(rt, edit=edit)
    assert_clean_failure(rt, cid, p, *words)
    assert len(p.stderr) < 600, len(p.stderr)


def test_a_cgroups_path_too_long_is_refused_before_anything_is_made(rt):
    """A 300-byte name used to fail the mkdir after its parent was made, and the
    undo stopped at the name it could not rmdir: the parent stayed."""
    cid = rt.new_id()
    b = rt.bundle(["true"], edit=lambda c: c["linux"].update(
        cgroupsPath=f"/{cid}/" + "a" * 300))
    p = rt("create", "--bundle", b, cid)
    assert_clean_failure(rt, cid, p, "linux.cgroupsPath", "too long")
    for h in os.listdir("/sys/fs/cgroup"):
        assert not os.path.exists(f"/sys/fs/cgroup/{h}/{cid}"), "parent cgroup left"


def test_a_limit_the_kernel_refuses_ends_the_shim_waiting_at_its_gate(rt, tmp_path):
    """The shim is spawned before the cgroups are made and waits at a gate once
    it has cloned the init (create.py).  A limit the kernel refuses then closes
    the gate: the launcher kills the init, and the runtime reaps both.  Run
    below a subreaper (as an engine's conmon is), neither reaches it (only the
    front-end's priming grandchild does, by design)."""
    import json
    cid = rt.new_id()
    b = rt.bundle(["true"], edit=lambda c: c["linux"].setdefault("resources", {}).update(
        cpu={"cpus": "1000000"}))  # beyond any CPU: the kernel's ERANGE (or EINVAL)
    probe = tmp_path / "below_a_subreaper.py"
    probe.write_text(
        "import ctypes, json, os, subprocess, sys, time\n"
        "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=30)\n"
        "orphans, end = [], time.monotonic() + 1.0\n"
        "while time.monotonic() < end:\n"
        "    try:\n"
        "        got = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)\n"
        "    except ChildProcessError:\n"
        "        got = None\n"
        "    if got is None:\n"
        "        time.sleep(0.02)\n"
        "        continue\n"
        "    with open(f'/proc/{got.si_pid}/comm') as f:\n"
        "        orphans.append(f.read().strip())\n"
        "    os.waitpid(got.si_pid, 0)\n"
        "print(json.dumps({'rc': p.returncode, 'stderr': p.stderr, 'orphans': orphans}))\n")
    out = subprocess.run([sys.executable, str(probe), *rt.cmd, "--root", rt.root,
                          "create", "--bundle", b, cid],
                         capture_output=True, text=True, timeout=60)
    got = json.loads(out.stdout)
    p = subprocess.CompletedProcess([], got["rc"], "", got["stderr"])
    assert_clean_failure(rt, cid, p, "cpuset.cpus")
    # the front-end's one orphan by design: its cgroup-priming grandchild (front_prime.c)
    assert [o for o in got["orphans"] if o != "emergence"] == [], \
        ("the init or its launcher was left for the subreaper", got["orphans"])
