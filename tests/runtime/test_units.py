"""Unit tests of the pure parts: the config validator (against the spec's own
JSON schema), cgroup translations and discovery, mount options, the plan
encoding, signal names, and the JSON fast path."""

import copy
import json
import os
import signal
import struct

import pytest
from conftest import HAVE_SPEC, REPO, SPEC, base_config, spec_validator

from emergence import fastjson
from emergence.errors import ConfigError
from emergence.runtime import config, plan, planner
from emergence.runtime.cgroups import hierarchy, paths, resources
from emergence.runtime.kill import parse_signal

SCHEMA_TESTS = os.path.join(SPEC, "runtime-spec", "schema", "test", "config")


def ours_accepts(doc):
    try:
        config.validate_schema(doc)
        return True
    except ConfigError:
        return False


@pytest.fixture(scope="module")
def schema():
    return spec_validator("runtime-spec", "config-schema.json")


def examples(kind):
    d = os.path.join(SCHEMA_TESTS, kind)
    return sorted(os.listdir(d)) if HAVE_SPEC else []


@pytest.mark.parametrize("name", examples("good"))
def test_spec_good_examples_pass(name):
    with open(os.path.join(SCHEMA_TESTS, "good", name)) as f:
        assert ours_accepts(json.load(f))


@pytest.mark.parametrize("name", examples("bad"))
def test_spec_bad_examples_fail(name):
    with open(os.path.join(SCHEMA_TESTS, "bad", name)) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except ValueError:
        return  # invalid JSON: refused by the parser
    assert not ours_accepts(doc)


# Mutations of a full config: our verdict must equal the JSON schema's.
MUTATIONS = [
    ("process.args string", lambda c: c["process"].update(args="sh")),
    ("process.args ints", lambda c: c["process"].update(args=[1])),
    ("cwd missing", lambda c: c["process"].pop("cwd")),
    ("terminal string", lambda c: c["process"].update(terminal="yes")),
    ("uid negative", lambda c: c["process"]["user"].update(uid=-1)),
    ("uid too big", lambda c: c["process"]["user"].update(uid=2**32)),
    ("gid float", lambda c: c["process"]["user"].update(gid=1.5)),
    ("valid: umask", lambda c: c["process"]["user"].update(umask=18)),
    ("additionalGids bad", lambda c: c["process"]["user"].update(additionalGids=["x"])),
    ("caps not array", lambda c: c["process"]["capabilities"].update(bounding="CAP_KILL")),
    ("rlimit missing hard", lambda c: c["process"].update(
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1}])),
    ("rlimit bad type", lambda c: c["process"].update(
        rlimits=[{"type": "nofile", "soft": 1, "hard": 1}])),
    ("oomScoreAdj string", lambda c: c["process"].update(oomScoreAdj="5")),
    ("root no path", lambda c: c["root"].pop("path")),
    ("root readonly str", lambda c: c["root"].update(readonly="true")),
    ("mount no destination", lambda c: c["mounts"].append({"type": "tmpfs"})),
    ("mount options str", lambda c: c["mounts"].append({"destination": "/x",
                                                         "options": "ro"})),
    ("ns bad type", lambda c: c["linux"]["namespaces"].append({"type": "nope"})),
    ("ns no type", lambda c: c["linux"]["namespaces"].append({"path": "/x"})),
    ("uidMappings partial", lambda c: c["linux"].update(uidMappings=[{"hostID": 1}])),
    ("devices bad type", lambda c: c["linux"].update(devices=[{"type": "x", "path": "/dev/a"}])),
    ("devices fileMode big", lambda c: c["linux"].update(
        devices=[{"type": "c", "path": "/dev/a", "major": 1, "minor": 1, "fileMode": 0o200000}])),
    ("pids missing limit", lambda c: c["linux"]["resources"].update(pids={})),
    ("memory limit str", lambda c: c["linux"]["resources"].update(memory={"limit": "1G"})),
    ("cpu shares negative", lambda c: c["linux"]["resources"].update(cpu={"shares": -1})),
    ("blkio weight big", lambda c: c["linux"]["resources"].update(blockIO={"weight": 70000})),
    ("hugepage bad size", lambda c: c["linux"]["resources"].update(
        hugepageLimits=[{"pageSize": "2mb", "limit": 1}])),
    ("devices rule no allow", lambda c: c["linux"]["resources"]["devices"].append(
        {"access": "rwm"})),
    ("unified non-string", lambda c: c["linux"]["resources"].update(unified={"a.b": 1})),
    ("seccomp no default", lambda c: c["linux"].update(seccomp={})),
    ("seccomp bad arch", lambda c: c["linux"].update(
        seccomp={"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86"]})),
    ("seccomp names empty", lambda c: c["linux"].update(
        seccomp={"defaultAction": "SCMP_ACT_ALLOW",
                 "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]})),
    ("seccomp arg no op", lambda c: c["linux"].update(
        seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0,
                                                                       "value": 1}]}]})),
    ("seccomp flag bad", lambda c: c["linux"].update(
        seccomp={"defaultAction": "SCMP_ACT_ALLOW", "flags": ["TSYNC"]})),
    ("propagation bad", lambda c: c["linux"].update(rootfsPropagation="sideways")),
    ("sysctl non-string", lambda c: c["linux"].update(sysctl={"a.b": 1})),
    ("masked not array", lambda c: c["linux"].update(maskedPaths="/proc/kcore")),
    ("personality bad", lambda c: c["linux"].update(personality={"domain": "BSD"})),
    ("timeOffsets bad", lambda c: c["linux"].update(timeOffsets={"boottime": {"secs": "1"}})),
    ("hook no path", lambda c: c.update(hooks={"prestart": [{"args": []}]})),
    ("hook timeout 0", lambda c: c.update(hooks={"poststop": [{"path": "/x", "timeout": 0}]})),
    ("annotations non-string", lambda c: c.update(annotations={"a": 1})),
    ("hostname int", lambda c: c.update(hostname=5)),
    ("ociVersion missing", lambda c: c.pop("ociVersion")),
    # and valid variations
    ("valid: full resources", lambda c: c["linux"]["resources"].update(
        memory={"limit": 1 << 20, "swap": 2 << 20, "disableOOMKiller": False},
        cpu={"shares": 2, "quota": -1, "period": 100000, "cpus": "0-1"},
        pids={"limit": -1}, unified={"memory.high": "max"})),
    ("valid: userns", lambda c: c["linux"].update(
        uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}])),
    ("valid: seccomp", lambda c: c["linux"].update(seccomp={
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]})),
    ("valid: hooks", lambda c: c.update(hooks={"prestart": [{"path": "/bin/true",
                                                            "timeout": 3}]})),
    ("valid: unknown extension field", lambda c: c.update(vendorThing={"x": 1})),
]


@pytest.mark.parametrize("name,mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_validator_agrees_with_the_json_schema(schema, name, mutate):
    c = base_config(["sh"])
    mutate(c)
    schema_ok = schema.is_valid(c)
    assert ours_accepts(c) == schema_ok, f"schema says {schema_ok}"
    assert schema_ok == name.startswith("valid"), "the mutation should test what it says"


@pytest.mark.parametrize("prop", ["rprivate", "rshared", "rslave", "runbindable"])
def test_recursive_rootfs_propagation_is_accepted_as_runc_and_crun_do(prop):
    """The spec's schema lists only the non-recursive names; runc and crun accept
    these too, and configs written by other tools use them."""
    c = base_config(["sh"])
    c["linux"]["rootfsPropagation"] = prop
    assert ours_accepts(c)


def test_validator_error_names_the_field():
    c = base_config(["sh"])
    c["linux"]["resources"]["memory"] = {"limit": "1G"}
    with pytest.raises(ConfigError, match=r"linux\.resources\.memory\.limit: must be a 64-bit"):
        config.validate_schema(c)


# ---- cgroups ----

MOUNTINFO_HYBRID = """\
25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
30 25 0:27 /sub /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
"""


def test_discover_hybrid(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO_HYBRID)
    hs = hierarchy.discover(str(mi))
    assert [(h.mountpoint, h.version, h.name) for h in hs] == [
        ("/sys/fs/cgroup/unified", 2, "unified"),
        ("/sys/fs/cgroup/systemd", 1, "systemd"),
        ("/sys/fs/cgroup/cpu,cpuacct", 1, "cpu,cpuacct"),
        ("/sys/fs/cgroup/memory", 1, "memory"),
    ]  # the pids mount is a sub-cgroup bind, not a hierarchy root
    assert hs[2].controllers == {"cpu", "cpuacct"}
    assert hs[1].controllers == {"name=systemd"}
    assert hierarchy.layout(hs) == "hybrid"
    assert hierarchy.controller_map(hs)["cpuacct"] is hs[2]


def test_discover_skips_shadowed_mounts(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO_HYBRID +
                  "40 25 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                  "41 40 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    hs = hierarchy.discover(str(mi))
    assert [(h.mountpoint, h.version) for h in hs] == [("/sys/fs/cgroup", 2)]
    assert hierarchy.layout(hs) == "unified"


DISCOVER_AFTER_MOUNTS = r"""
import os, subprocess, sys
from emergence.runtime.cgroups import hierarchy
def mount(*args):
    subprocess.run(["mount", *args], check=True)
mount("--make-rprivate", "/")
first = hierarchy.discover()
assert first, "no cgroup hierarchy here"
assert [repr(h) for h in hierarchy.discover()] == [repr(h) for h in first]
mount("-t", "tmpfs", "shadow", "/sys/fs/cgroup")  # hides every hierarchy
assert hierarchy.discover() == [], "a mount made after a reading went unseen"
subprocess.run(["umount", "/sys/fs/cgroup"], check=True)
assert [repr(h) for h in hierarchy.discover()] == [repr(h) for h in first]
# a fork shares the open mountinfo (and the kernel's note of what it saw): a
# child that reads it must not hide a change from its parent
pid = os.fork()
if pid == 0:
    mount("-t", "tmpfs", "shadow", "/sys/fs/cgroup")
    os._exit(0 if hierarchy.discover() == [] else 1)
_, status = os.waitpid(pid, 0)
assert status == 0, "the child missed its own mount"
assert hierarchy.discover() == [], "the parent missed the child's mount"
print("ok")
"""


def test_discover_sees_every_mount_change_after_a_reading():
    """discover() keeps its last reading while mountinfo says nothing changed
    (POLLPRI): a mount or unmount after it, in this process or a child
    forked from it, is seen by the next call.  In a mount namespace of its own."""
    import subprocess
    import sys
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace)")
    r = subprocess.run(["unshare", "-m", sys.executable, "-c", DISCOVER_AFTER_MOUNTS],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_v1_settings():
    res = {"memory": {"limit": 100, "swap": 200, "disableOOMKiller": True},
           "cpu": {"shares": 512, "quota": 5000, "period": 10000, "cpus": "0"},
           "pids": {"limit": 0},
           "blockIO": {"weight": 300,
                       "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 9}]}}
    s = resources.v1_settings(res)
    assert ("memory", "memory.limit_in_bytes", 100) in s
    assert s.index(("memory", "memory.limit_in_bytes", 100)) < \
        s.index(("memory", "memory.memsw.limit_in_bytes", 200))
    assert ("memory", "memory.oom_control", 1) in s
    assert s.index(("cpu", "cpu.cfs_period_us", 10000)) < s.index(("cpu", "cpu.cfs_quota_us", 5000))
    assert ("pids", "pids.max", "max") in s
    assert ("blkio", "blkio.throttle.write_iops_device", "8:0 9") in s


def test_v2_settings_conversions():
    s = resources.v2_settings({
        "memory": {"limit": 1000, "swap": 3000, "reservation": 10},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
        "pids": {"limit": 7},
        "blockIO": {"weight": 500},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4}],
        "unified": {"memory.high": "900"},
    })
    assert ("memory", "memory.max", 1000) in s
    assert ("memory", "memory.swap.max", 2000) in s  # v2 swap excludes memory
    assert ("memory", "memory.low", 10) in s
    assert ("cpu", "cpu.weight", 39) in s
    assert ("cpu", "cpu.max", "50000 100000") in s
    assert ("pids", "pids.max", 7) in s
    assert ("io", "io.weight", resources.blkio_to_io_weight(500)) in s
    assert ("hugetlb", "hugetlb.2MB.max", 4) in s
    assert ("memory", "memory.high", "900") in s
    assert resources.v2_settings({"cpu": {"quota": -1}}) == [("cpu", "cpu.max", "max 100000")]


def test_weight_conversions_cover_the_ranges():
    assert resources.shares_to_weight(2) == 1
    assert resources.shares_to_weight(262144) == 10000
    assert resources.blkio_to_io_weight(10) == 1
    assert resources.blkio_to_io_weight(1000) == 10000


def test_v2_refuses_what_it_cannot_express():
    with pytest.raises(ConfigError, match="swappiness"):
        resources.v2_settings({"memory": {"swappiness": 5}})
    with pytest.raises(ConfigError, match="swap"):
        resources.v2_settings({"memory": {"limit": 100, "swap": 50}})
    with pytest.raises(ConfigError, match="not a cgroup file"):
        resources.v2_settings({"unified": {"../x": "1"}})


def test_device_rules_start_from_deny_all():
    rules = resources.device_rules([{"allow": False, "access": "rwm"},
                                  {"allow": True, "type": "c", "major": 1, "minor": 3,
                                   "access": "rw"},
                                  {"allow": True, "type": "c", "major": 136, "access": "rwm"}])
    assert rules == [("devices.deny", "a"), ("devices.deny", "a"),
                     ("devices.allow", "c 1:3 rw"), ("devices.allow", "c 136:* rwm")]


def test_relative_path():
    assert paths.relative_path(None, "abc") == "emergence/abc"
    assert paths.relative_path("/a/b/", "abc") == "a/b"
    with pytest.raises(ConfigError):
        paths.relative_path("/", "abc")


# ---- mounts, plan ----

def test_mount_options():
    flags, clear, prop, data = planner.parse_mount_options(
        ["ro", "nosuid", "rbind", "rslave", "mode=755", "size=1m", "rw"])
    assert flags & planner.MS_BIND and flags & planner.MS_REC and flags & planner.MS_NOSUID
    assert not flags & planner.MS_RDONLY  # the later "rw" wins
    assert prop == planner.MS_SLAVE | planner.MS_REC
    assert data == "mode=755,size=1m"
    assert planner.parse_mount_options(["tmpcopyup", "size=1m"])[3] == "size=1m"
    assert planner.parse_mount_options(["rro", "ridmap", "nodev"])[3] == ""


def test_recursive_mount_attributes():
    P = planner
    assert P.recursive_attrs(["rro", "rnosuid"]) == (P.MOUNT_ATTR_RDONLY | P.MOUNT_ATTR_NOSUID, 0)
    assert P.recursive_attrs(["rro", "rrw"]) == (0, P.MOUNT_ATTR_RDONLY)  # the later wins
    # any atime change clears the whole atime field, as mount_setattr(2) requires
    assert P.recursive_attrs(["rnoatime"]) == (P.MOUNT_ATTR_NOATIME, P.MOUNT_ATTR__ATIME)
    assert P.recursive_attrs(["rnoatime", "rstrictatime", "rnoexec"]) == (
        P.MOUNT_ATTR_STRICTATIME | P.MOUNT_ATTR_NOEXEC, P.MOUNT_ATTR__ATIME)
    assert P.recursive_attrs(["ro", "nosuid"]) == (0, 0)


def test_plan_encoding_matches_the_shim_format():
    p = plan.Plan()
    p.add(plan.SETHOSTNAME, "set it", "box")
    raw = p.encode()
    assert raw.startswith(b"EMPLAN1\0")
    op, n = struct.unpack_from("=II", raw, 8)
    assert (op, n) == (plan.SETHOSTNAME, 2)
    (length,) = struct.unpack_from("=I", raw, 16)
    assert raw[20:20 + length] == b"set it\0"


def test_plan_numbers_match_the_c_header():
    header = open(os.path.join(REPO, "csrc", "plan.h")).read()
    import re
    c_ops = {m[0]: int(m[1]) for m in re.findall(r"OP_([A-Z_]+) = (\d+)", header)}
    py_ops = {name: num for num, name in plan.NAMES.items()}
    assert c_ops == {k: v for k, v in py_ops.items() if k not in ("PLAIN",)}


def test_plan_order_puts_barrier_after_privileges_drop(tmp_path):
    c = base_config(["sh"])
    c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
    p = planner.Planner(c, str(tmp_path), str(tmp_path), str(tmp_path), None, []).build(
        seccomp_bpf=(0, "00"))
    kinds = p.kinds()
    assert kinds.index(plan.CLONE) < kinds.index(plan.CHILD) < kinds.index(plan.PIVOT_ROOT)
    assert kinds.index(plan.CAPS_BOUNDING) < kinds.index(plan.USER) < kinds.index(plan.CAPS)
    assert kinds.index(plan.CAPS) < kinds.index(plan.READY) < kinds.index(plan.BARRIER)
    # with no_new_privs the filter goes in last, right before exec
    assert kinds[-2:] == [plan.SECCOMP, plan.EXEC]
    assert kinds.index(plan.BARRIER) < kinds.index(plan.SECCOMP)


def test_the_launcher_waits_at_the_gate_before_it_moves_the_init_into_cgroups(tmp_path):
    """create.py spawns the shim before the cgroups exist: the plan's GATE (the
    pipe create opens once they do) comes after the clone and before every
    cgroup move; with no gate (exec: its cgroups exist) there is none."""
    from emergence.runtime.cgroups.hierarchy import Hierarchy
    from emergence.runtime.cgroups.manager import Cgroup
    hs = [Hierarchy(f"/sys/fs/cgroup/{c}", 1, {c}, c) for c in ("memory", "pids")]
    cg = Cgroup(hs, "emergence/gated")
    c = base_config(["sh"])
    p = planner.Planner(c, str(tmp_path), str(tmp_path), str(tmp_path), cg, hs,
                        gate_fd=7).build(None)
    moves = [i for i, (op, what, args) in enumerate(p.ops)
             if op == plan.CHILD_WRITE and args[0].endswith("cgroup.procs")]
    kinds = p.kinds()
    assert len(moves) == 2 and kinds.count(plan.GATE) == 1
    assert kinds.index(plan.CLONE) < kinds.index(plan.GATE) < min(moves)
    assert p.ops[kinds.index(plan.GATE)][2] == ("7",)
    ungated = planner.Planner(c, str(tmp_path), str(tmp_path), str(tmp_path), cg, hs).build(None)
    assert plan.GATE not in ungated.kinds()


# ---- signals, JSON ----

@pytest.mark.parametrize("text,num", [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("term", 15),
                                      ("SIGRTMIN", int(signal.SIGRTMIN))])
def test_parse_signal(text, num):
    assert parse_signal(text) == num


@pytest.mark.parametrize("text", ["0", "FOO", "SIG", "999", "-1", ""])
def test_parse_signal_rejects(text):
    with pytest.raises(Exception, match="unknown signal"):
        parse_signal(text)


@pytest.mark.parametrize("doc", [{"a": [1, 2.5, True, None, "é\n\"x\""], "b": {}}, [], "s",
                                 {"nested": {"deep": [[], [{}]]}}])
def test_fastjson_round_trips(doc):
    assert json.loads(fastjson.dumps(doc)) == doc
    assert json.loads(fastjson.dumps(doc, indent=2)) == doc
    assert fastjson.loads(json.dumps(doc)) == doc
    assert fastjson.loads(json.dumps(doc).encode()) == copy.deepcopy(doc)


@pytest.mark.parametrize("text", ["{]", "{} x", "", "NaN", "[1,]"])
def test_fastjson_rejects(text):
    with pytest.raises(ValueError):
        fastjson.loads(text)


@pytest.mark.parametrize("spec,path", [
    ("machine.slice:libpod:abc", "machine.slice/libpod-abc.scope"),
    ("system.slice:docker:x1", "system.slice/docker-x1.scope"),
    ("a-b-c.slice::unit", "a.slice/a-b.slice/a-b-c.slice/unit.scope"),
    ("-.slice:p:n", "p-n.scope"),
    (":crio:z", "system.slice/crio-z.scope"),
])
def test_systemd_cgroups_path(spec, path):
    assert paths.relative_path(spec, "id") == path


def test_lifecycle_verbs_stay_lean():
    """create/start/state/kill/delete run on every engine call: their modules must
    not pull in what costs milliseconds to import."""
    import subprocess
    import sys
    code = ("import sys\n"
            "import emergence.cli, emergence.runtime.commands, emergence.runtime.create, "
            "emergence.runtime.start, emergence.runtime.state, emergence.runtime.kill, "
            "emergence.runtime.delete, emergence.runtime.run, emergence.runtime.execute, "
            "emergence.runtime.planner, emergence.runtime.launch, "
            "emergence.runtime.cgroups.manager, emergence.runtime.config\n"
            "for argv in (['state', 'x'], ['kill', 'x', 'KILL'], ['list'], ['delete', 'x']):\n"
            "    emergence.cli.main(['--root', '/nonexistent-emergence-root'] + argv)\n"
            "heavy = {'json', 're', 'enum', 'signal', 'tempfile', 'hashlib', 'subprocess', "
            "'argparse', 'socket', 'tarfile', 'cffi', 'shutil'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    p = subprocess.run([sys.executable, "-S", "-c",
                        f"import sys; sys.path[:0] = {sys.path!r}\n" + code],
                       capture_output=True, text=True, check=True)
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_forwarder_holds_signals_until_it_knows_the_process():
    import subprocess
    import time as _time

    from emergence.runtime.run import Forwarder, wait_status
    child = subprocess.Popen(["sleep", "30"])
    with Forwarder() as fw:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before the target is known
        _time.sleep(0.05)
        assert child.poll() is None and fw.pending == [signal.SIGTERM]
        fw.target(child.pid)
        assert wait_status(child.pid) == 128 + signal.SIGTERM
    child.returncode = -signal.SIGTERM  # reaped above


def _remove_parent_now_and_then(d, stop, removed):
    import time
    while not stop.is_set():
        try:
            os.rmdir(os.path.join(d, "emergence"))
            with removed.get_lock():
                removed.value += 1
        except OSError:
            pass
        time.sleep(0.0005)


def test_makedirs_survives_the_parent_removed_between_two_mkdirs(tmp_path):
    """`delete` removes the default parent `emergence/` once it is empty, while
    another `create` may be between making that parent and its own child. Real
    directories behave as cgroupfs does here (rmdir of a non-empty one fails).
    Before the fix about 1 in 200 walks failed with ENOENT under this load."""
    import multiprocessing

    from emergence.runtime.cgroups.manager import _makedirs
    stop, removed = multiprocessing.Event(), multiprocessing.Value("i", 0)
    p = multiprocessing.Process(target=_remove_parent_now_and_then,
                                args=(str(tmp_path), stop, removed))
    p.start()
    try:
        i = 0
        while removed.value < 3000 and i < 200000:  # until the parent came and went often
            os.rmdir(_makedirs(str(tmp_path), f"emergence/c{i}", []))
            i += 1
    finally:
        stop.set()
        p.join()
    assert removed.value >= 3000, (removed.value, i)


SHIM_COPY = r"""
import fcntl, os
from emergence.runtime import launch
a = launch.sealed_shim()
b = launch.sealed_shim()
assert os.fstat(a).st_ino == os.fstat(b).st_ino, "a second copy was made"
assert fcntl.fcntl(b, fcntl.F_GET_SEALS) == launch.SEALS
try:
    os.write(b, b"x")
    raise SystemExit("the kept copy is writable")
except PermissionError:
    pass
os.close(a)
os.close(b)
# a worker taking a call closes low descriptors, and may reuse the number
kept = launch._kept[0]
os.close(kept)
os.dup2(os.open(os.devnull, os.O_RDONLY), kept)
c = launch.sealed_shim()
assert os.readlink(f"/proc/self/fd/{c}").startswith("/memfd:emergence-shim")
assert fcntl.fcntl(c, fcntl.F_GET_SEALS) == launch.SEALS
assert os.readlink(f"/proc/self/fd/{kept}") == os.devnull, "closed what was not its own"
print("ok")
"""


def test_the_shim_copy_is_made_once_and_stays_sealed():
    """A planner copies the shim once and its workers share the sealed copy; one
    whose descriptor was closed (and the number reused) is made again, and the
    descriptor that took the number is left alone.  (The installed package: the
    shim is built there.)"""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", SHIM_COPY], capture_output=True, text=True,
                       cwd="/", timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
