"""Configs and command lines that runc and crun accept: real containers for each."""

import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import drive
from test_cgroups import V2_SCRIPT
from test_errors import assert_clean_failure, create_with
from test_namespaces import _open_path_to


def gone(pid):
    """The process has exited (a zombie of ours counts: the init is a child of
    whoever ran `create`, here the test itself, until reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def peer_spec_bundle(tmp_path, rootfs, peer, args):
    """A bundle written by `runc spec` or `crun spec`, changed only in its args
    and with the busybox rootfs at its relative root.path."""
    if not shutil.which(peer):
        pytest.skip(f"{peer} is not installed")
    b = tmp_path / f"{peer}-bundle"
    b.mkdir()
    subprocess.run([peer, "spec"], cwd=b, check=True)
    os.symlink(rootfs, b / "rootfs")
    c = json.loads((b / "config.json").read_text())
    c["process"]["args"] = args
    (b / "config.json").write_text(json.dumps(c))
    return str(b), c


@pytest.mark.parametrize("peer", ["runc", "crun"])
def test_a_bundle_from_peer_spec_runs(rt, tmp_path, rootfs, peer):
    """Its ambient capabilities are not inheritable: runc passes over them, and so
    do we.  It asks for a terminal, so it runs on a pty, as a person would."""
    b, c = peer_spec_bundle(tmp_path, rootfs, peer,
                            ["sh", "-c", "echo hello from $HOME; exit 3"])
    assert c["process"]["terminal"] and c["process"]["capabilities"]["ambient"]
    out, code = drive(rt.cmd + ["--root", rt.root, "run", "--bundle", b, rt.new_id()])
    assert code == 3, out
    assert "hello from /root" in out and "warning" not in out


def test_ambient_that_cannot_be_raised_is_noted_with_debug(rt):
    def edit(c):
        caps = c["process"]["capabilities"]
        caps["ambient"] = ["CAP_KILL"]
        caps["inheritable"] = []
    b = rt.bundle(["sh", "-c", "grep CapAmb /proc/self/status"], edit=edit)
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.split() == ["CapAmb:", "0000000000000000"]
    p = rt("--debug", "run", "--bundle", b, rt.new_id())
    assert p.returncode == 0 and "CAP_KILL not raised" in p.stderr


def test_ambient_that_is_inheritable_is_raised(rt):
    def edit(c):
        caps = c["process"]["capabilities"]
        caps["ambient"] = caps["inheritable"] = ["CAP_KILL"]
    p = rt.run(["sh", "-c", "grep CapAmb /proc/self/status"], edit=edit)
    assert p.stdout.split() == ["CapAmb:", f"{1 << 5:016x}"]


def test_capability_this_kernel_lacks_is_skipped_with_a_warning(monkeypatch):
    """Pure function: this kernel knows every capability in the table, so its
    last one is lowered to stand for an older kernel."""
    from emergence.runtime import capabilities
    monkeypatch.setattr(capabilities, "last_cap", lambda: 38)
    warned, noted = [], []
    caps = capabilities.usable({"bounding": ["CAP_KILL", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"],
                                "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]},
                               "process.capabilities", warned.append, noted.append)
    assert caps["bounding"] == ["CAP_KILL"]
    assert len(warned) == 2 and "CAP_BPF is unknown to this kernel" in warned[0]
    assert caps["ambient"] == [] and "CAP_KILL not raised" in noted[0]


@pytest.mark.parametrize("prop, present, absent", [
    ("rshared", "shared:", "master:"),
    ("runbindable", "unbindable", "shared:"),
    ("rprivate", None, "shared:"),
    # a slave of a mount that is not shared on the host is simply private
    ("rslave", None, "shared:"),
])
def test_recursive_rootfs_propagation(rt, prop, present, absent):
    p = rt.run(["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"],
               edit=lambda c: c["linux"].update(rootfsPropagation=prop))
    assert p.returncode == 0, p.stderr
    assert absent not in p.stdout
    if present:
        assert present in p.stdout


def test_home_comes_from_the_containers_passwd(rt):
    def uid(n):
        return lambda c: c["process"]["user"].update(uid=n)
    assert rt.run(["sh", "-c", "echo $HOME"]).stdout.strip() == "/root"
    assert rt.run(["sh", "-c", "echo $HOME"], edit=uid(4242)).stdout.strip() == "/"
    set_home = rt.run(["sh", "-c", "echo $HOME"],
                      edit=lambda c: c["process"]["env"].append("HOME=/mine"))
    assert set_home.stdout.strip() == "/mine"


def test_exec_gets_home_too(rt):
    b = rt.bundle(["sleep", "100"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    p = rt("exec", cid, "sh", "-c", "echo $HOME")
    assert p.returncode == 0 and p.stdout.strip() == "/root"


def test_missing_cwd_is_created(rt):
    p = rt.run(["pwd"], edit=lambda c: (c["process"].update(cwd="/made/for/me"),
                                        c["root"].update(readonly=True)))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "/made/for/me"


def test_new_network_namespace_has_lo_up(rt):
    p = rt.run(["cat", "/sys/class/net/lo/flags"])
    assert int(p.stdout, 16) & 1, p.stdout  # IFF_UP


def test_namespaced_sysctls_are_set(rt):
    p = rt.run(["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni"],
               edit=lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": "1",
                                                        "kernel.shmmni": "1000"}))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1", "1000"]


@pytest.mark.parametrize("key, drop", [("net.ipv4.ip_forward", "network"),
                                       ("kernel.shmmax", "ipc"),
                                       ("fs.mqueue.msg_max", "ipc"),
                                       ("kernel.domainname", "uts"),
                                       ("vm.swappiness", None)])
def test_sysctl_without_its_namespace_is_refused(rt, key, drop):
    def edit(c):
        c["linux"]["sysctl"] = {key: "1"}
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != drop]
        if drop == "uts":
            c.pop("hostname", None)
    cid, p = create_with(rt, edit=edit)
    assert_clean_failure(rt, cid, p, f"linux.sysctl.{key}")


def test_nul_byte_in_cgroups_path_is_a_clear_error(rt):
    cid, p = create_with(rt, edit=lambda c: c["linux"].update(cgroupsPath="/a\0b"))
    assert_clean_failure(rt, cid, p, "linux.cgroupsPath", "NUL byte")


def test_log_in_a_missing_directory_is_a_clear_error(rt):
    p = rt("--log", "/nonexistent-dir/emergence.log", "list")
    assert p.returncode == 1
    assert p.stderr.strip() == ("emergence: --log /nonexistent-dir/emergence.log: the "
                                "directory /nonexistent-dir does not exist; create it or "
                                "log elsewhere")


def test_delete_of_a_created_container_needs_no_force(rt):
    b = rt.bundle(["true"])
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    pid = rt.state(cid)["pid"]
    rt("delete", cid, check=True)
    assert not os.path.exists(os.path.join(rt.root, cid))
    assert gone(pid)


def test_delete_force_of_a_paused_container(rt):
    b = rt.bundle(["sleep", "100"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    pid = rt.state(cid)["pid"]
    rt("pause", cid, check=True)
    assert rt.state(cid)["status"] == "paused"
    rt("delete", "--force", cid, check=True)
    assert not os.path.exists(os.path.join(rt.root, cid))
    assert gone(pid)


def test_delete_force_of_a_paused_container_on_pure_cgroup2(rt, restore_v2_root):  # noqa: F811
    b = rt.bundle(["sleep", "100"],
                  edit=lambda c: c["linux"]["namespaces"].remove({"type": "cgroup"}))
    cid = rt.new_id()
    em = " ".join(rt.cmd + ["--root", rt.root])
    script = V2_SCRIPT.replace('exec "$@"', f"""
{em} run --detach --bundle {b} {cid}
{em} pause {cid}
{em} state {cid} | grep -q '"paused"'
{em} delete --force {cid}
test ! -e /sys/fs/cgroup/emergence/{cid}
echo gone
""")
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "gone", p.stderr


def test_update_takes_runcs_cpu_share_spelling(rt):
    b = rt.bundle(["sleep", "100"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    rt("update", "--cpu-share", "300", cid, check=True)
    with open(f"/sys/fs/cgroup/cpu/emergence/{cid}/cpu.shares") as f:
        assert f.read().strip() == "300"


def test_failing_poststart_hook_stops_and_deletes_the_container(rt, tmp_path):
    log = tmp_path / "poststop.log"

    def edit(c):
        c["hooks"] = {
            "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo said by hook; exit 5"]}],
            "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo ran > {log}"]}],
        }
    b = rt.bundle(["sleep", "100"], edit=edit)
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    pid = rt.state(cid)["pid"]
    p = rt("start", cid)
    assert p.returncode == 1 and "poststart hook 0" in p.stderr
    assert "said by hook" in p.stdout  # the hook's output reaches the caller
    assert not os.path.exists(os.path.join(rt.root, cid))
    assert gone(pid)
    assert log.read_text().strip() == "ran"


def test_hook_gets_exactly_its_own_env(rt, tmp_path):
    out = tmp_path / "env.out"

    def edit(c):
        c["hooks"] = {"prestart": [{"path": "/usr/bin/env", "args": ["env"],
                                    "env": ["ONLY=this"]}],
                      "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"env > {out}"],
                                     "env": ["A=1"]}]}
    p = rt.run(["true"], edit=edit)
    assert p.returncode == 0
    assert p.stdout.strip().splitlines() == ["ONLY=this"]
    names = {line.split("=", 1)[0] for line in out.read_text().split()}
    assert "A" in names and names <= {"A", "PWD", "OLDPWD", "SHLVL", "_"}, names


# ---- scheduling: process.scheduler, process.ioPriority, linux.memoryPolicy ----

STAT = "cut -d' ' -f18,19,41 /proc/self/stat"  # priority, nice, policy


def test_scheduler_batch_with_nice(rt):
    p = rt.run(["sh", "-c", STAT], edit=lambda c: c["process"].update(
        scheduler={"policy": "SCHED_BATCH", "nice": 7}))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[1:] == ["7", "3"]


def test_scheduler_fifo_with_a_realtime_budget(rt):
    def edit(c):
        c["process"]["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10}
        c["linux"]["resources"]["cpu"] = {"realtimeRuntime": 10000, "realtimePeriod": 1000000}
        c["linux"]["cgroupsPath"] = f"/emergence-rt-{os.getpid()}"  # below the root's budget
    p = rt.run(["sh", "-c", STAT], edit=edit)
    if "cpu.rt_runtime_us" in p.stderr and "does not offer" in p.stderr:
        pytest.skip("this kernel has no realtime group scheduling")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["-11", "0", "1"]


def test_realtime_budget_below_our_own_parents(rt):
    """Default cgroupsPath: the runtime's `emergence` parent and the nested
    cgroups it makes get just the budget the leaf needs, parent first."""
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("no v1 realtime group scheduling here")
    nested = f"emergence/rt-{os.getpid()}/deeper/leaf"
    def edit(c):
        c["process"]["scheduler"] = {"policy": "SCHED_RR", "priority": 5}
        c["linux"]["resources"]["cpu"] = {"realtimeRuntime": 20000, "realtimePeriod": 500000}
        c["linux"]["cgroupsPath"] = nested
    p = rt.run(["sh", "-c", STAT + "; cat /proc/self/cgroup"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:3] == ["-6", "0", "2"]
    assert not os.path.exists(f"/sys/fs/cgroup/cpu/emergence/rt-{os.getpid()}")


def test_realtime_under_a_parent_not_ours_is_a_clear_error(rt):
    """A parent someone else made keeps its budget: the error names it."""
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("no v1 realtime group scheduling here")
    parent = f"/sys/fs/cgroup/cpu/other-{os.getpid()}"
    os.mkdir(parent)
    try:
        cid, p = create_with(rt, edit=lambda c: (
            c["linux"]["resources"].update(cpu={"realtimeRuntime": 10000}),
            c["linux"].update(cgroupsPath=f"/other-{os.getpid()}/c")))
        assert_clean_failure(rt, cid, p, "cpu.rt_runtime_us", parent, "raise the parent")
        with open(os.path.join(parent, "cpu.rt_runtime_us")) as f:
            assert f.read().strip() == "0"
    finally:
        os.rmdir(parent)


def test_scheduler_fifo_without_a_budget_says_what_to_do(rt):
    cid, p = create_with(rt, edit=lambda c: c["process"].update(
        scheduler={"policy": "SCHED_FIFO", "priority": 10}))
    if p.returncode == 0:
        pytest.skip("realtime needs no cgroup budget on this kernel")
    assert_clean_failure(rt, cid, p, "SCHED_FIFO", "realtimeRuntime")


@pytest.mark.parametrize("sched, words", [
    ({"policy": "SCHED_OTHER", "nice": 40}, ["process.scheduler.nice", "-20..19"]),
    ({"policy": "SCHED_RR"}, ["process.scheduler.priority", "1..99"]),
    ({"policy": "SCHED_BATCH", "priority": 3}, ["takes no priority"]),
    ({"policy": "SCHED_ISO"}, ["SCHED_ISO is not implemented"]),
    ({"policy": "SCHED_DEADLINE", "runtime": 5000, "deadline": 1000}, ["runtime <= deadline"]),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_FAST"]}, ["unknown flag"]),
])
def test_bad_scheduler_is_a_clear_error(rt, sched, words):
    cid, p = create_with(rt, edit=lambda c: c["process"].update(scheduler=sched))
    assert_clean_failure(rt, cid, p, *words)


def test_io_priority(rt):
    p = rt.run(["ionice", "-p", "1"], edit=lambda c: c["process"].update(
        ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 6}))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "best-effort: prio 6"


def test_bad_io_priority_is_a_clear_error(rt):
    cid, p = create_with(rt, edit=lambda c: c["process"].update(
        ioPriority={"class": "IOPRIO_CLASS_IDLE", "priority": 9}))
    assert_clean_failure(rt, cid, p, "process.ioPriority.priority", "0 (highest)..7")


def test_memory_policy(rt):
    if not os.path.exists("/proc/self/numa_maps"):
        pytest.skip("this kernel has no NUMA support")
    p = rt.run(["sh", "-c", "grep -c ' interleave:0 ' /proc/self/numa_maps"],
               edit=lambda c: c["linux"].update(memoryPolicy={"mode": "MPOL_INTERLEAVE",
                                                              "nodes": "0"}))
    assert p.returncode == 0, p.stderr
    assert int(p.stdout) > 0


@pytest.mark.parametrize("policy, words", [
    ({"mode": "MPOL_BIND"}, ["needs at least one node"]),
    ({"mode": "MPOL_LOCAL", "nodes": "0"}, ["takes no nodes"]),
    ({"mode": "MPOL_BIND", "nodes": "63"}, ["not online"]),
    ({"mode": "MPOL_SOMETIMES"}, ["linux.memoryPolicy.mode"]),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_LOUD"]}, ["unknown flag"]),
])
def test_bad_memory_policy_is_a_clear_error(rt, policy, words):
    cid, p = create_with(rt, edit=lambda c: c["linux"].update(memoryPolicy=policy))
    assert_clean_failure(rt, cid, p, *words)


def test_run_keep_leaves_a_stopped_container_to_delete(rt):
    cid = rt.new_id()
    b = rt.bundle(["sh", "-c", "exit 4"])
    p = rt("run", "--keep", "--bundle", b, cid)
    assert p.returncode == 4, p.stderr
    assert rt.state(cid)["status"] == "stopped"
    assert rt("delete", cid).returncode == 0
    assert rt("state", cid).returncode != 0


def test_run_without_keep_removes_the_container(rt):
    cid = rt.new_id()
    assert rt("run", "--bundle", rt.bundle(["true"]), cid).returncode == 0
    assert rt("state", cid).returncode != 0


def test_device_outside_dev(rt):
    """runc and crun create a device wherever the config puts it."""
    def edit(c):
        c["linux"]["devices"] = [
            {"path": "/mydev/null0", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
            {"path": "/opt/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o620,
             "uid": 7, "gid": 9}]
    # they are made in the rootfs itself, so in a copy of it
    b = rt.bundle(["sh", "-c", "stat -c '%F %a %u %g %t,%T' /mydev/null0 /opt/zero; "
                   "echo x > /mydev/null0 && echo written"], edit=edit, copy_rootfs=True)
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["character special file 666 0 0 1,3",
                                     "character special file 620 7 9 1,5", "written"]


def test_relative_device_path_is_refused(rt):
    def edit(c):
        c["linux"]["devices"] = [{"path": "dev/null0", "type": "c", "major": 1, "minor": 3}]
    cid, p = create_with(rt, edit=edit)
    assert_clean_failure(rt, cid, p, "linux.devices[0].path", "absolute")


def test_device_that_a_mount_provides_is_not_made(rt):
    """A config that bind-mounts the host's /dev/null (podman does for masked
    paths) gets that file, not a node we made over it."""
    def edit(c):
        c["mounts"].append({"destination": "/dev/null", "type": "bind",
                            "source": "/dev/null", "options": ["bind", "rw"]})
    p = rt.run(["sh", "-c", "echo x > /dev/null && grep -c ' /dev/null ' /proc/self/mountinfo"],
               edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1"


def test_block_io_weight_where_offered(rt):
    """blkio.weight, else BFQ's weight file (a child cgroup has it on this
    machine); where neither exists, one line naming the file."""
    cid, p = create_with(rt, edit=lambda c: c["linux"]["resources"].update(
        blockIO={"weight": 300}))
    if p.returncode != 0:
        assert_clean_failure(rt, cid, p, "blkio.weight", "300", "does not offer it")
        return
    try:
        leaf = f"/sys/fs/cgroup/blkio/emergence/{cid}"
        f = next(f for f in ("blkio.weight", "blkio.bfq.weight")
                 if os.path.exists(os.path.join(leaf, f)))
        with open(os.path.join(leaf, f)) as fh:
            assert fh.read().split()[-1] == "300"
    finally:
        rt("delete", "-f", cid)


def test_read_only_rootfs_that_mounts_no_proc(rt):
    """Nothing may need /proc after pivot_root: the remount and the masks work."""
    def edit(c):
        c["root"]["readonly"] = True
        c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/proc"]
        c["linux"]["maskedPaths"] = ["/sys/firmware"]
    p = rt.run(["sh", "-c", "ls /proc | wc -l; ls /sys/firmware | wc -l; touch /x"],
               edit=edit)
    assert p.returncode == 1 and "Read-only file system" in p.stderr, p.stderr
    assert p.stdout.split() == ["0", "0"]


def _unmapped_userns(c, keep_types=("proc", "sysfs", "bind")):
    c["linux"]["namespaces"].append({"type": "user"})
    c["mounts"] = [m for m in c["mounts"]
                   if m.get("type") in keep_types and m["destination"] != "/sys/fs/cgroup"]
    c["linux"].pop("maskedPaths", None)  # no /dev/null to mask with: /dev is not mounted


def test_user_namespace_without_mappings_maps_root_to_the_caller(rt, tmp_path):
    """As crun: the container's root is the runtime's own uid and gid (size 1), and
    a bind mount still works (tests/runtime/test_userns_round3.py has the rest)."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "f").write_text("from the host\n")
    def edit(c):
        _unmapped_userns(c)
        c["mounts"].append({"destination": "/mnt", "type": "bind",
                            "source": str(tmp_path / "shared"), "options": ["rbind", "ro"]})
    p = rt.run(["sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; "
                "cat /mnt/f"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "0", "0", "0", "1", "0", "0", "1", "from", "the", "host"]


def test_user_namespace_without_mappings_mounts_tmpfs(rt):
    p = rt.run(["sh", "-c", "grep -c ' - tmpfs ' /proc/self/mountinfo"],
               edit=lambda c: _unmapped_userns(c, ("proc", "sysfs", "tmpfs")))
    assert p.returncode == 0, p.stderr
    assert int(p.stdout) >= 2  # /dev and /dev/shm


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     ["both linux.uidMappings and gidMappings"]),
    (lambda c: c["process"]["user"].update(uid=1000), ["process.user", "maps only root"]),
])
def test_user_namespace_mapping_mistakes_are_clear(rt, edit, words):
    def both(c):
        _unmapped_userns(c)
        edit(c)
    cid, p = create_with(rt, edit=both)
    assert_clean_failure(rt, cid, p, *words)


def _tree_with_submount(tmp_path):
    """A host directory owned by root, with a tmpfs mounted below it."""
    top = tmp_path / "tree"
    (top / "sub").mkdir(parents=True)
    (top / "f").write_text("top\n")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top / "sub")], check=True)
    (top / "sub" / "g").write_text("sub\n")
    _open_path_to(str(top))
    return top


@pytest.fixture
def tree(tmp_path):
    top = _tree_with_submount(tmp_path)
    yield top
    subprocess.run(["umount", "-l", str(top / "sub")])


def test_recursive_read_only_reaches_submounts(rt, tree):
    """`ro` leaves a submount writable; `rro` (mount_setattr) does not."""
    def edit(c):
        c["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(tree),
                            "options": ["rbind", "ro"]})
        c["mounts"].append({"destination": "/root", "type": "bind", "source": str(tree),
                            "options": ["rbind", "rro", "rnosuid", "rnoatime"]})
    p = rt.run(["sh", "-c", "touch /mnt/sub/a && echo ro-sub-writable; touch /root/sub/b; "
                "grep ' /root/sub ' /proc/self/mountinfo | cut -d' ' -f6"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ro-sub-writable", "ro,nosuid,noatime"]
    assert "/root/sub/b: Read-only file system" in p.stderr


def test_idmapped_mount_with_its_own_mappings(rt, tree):
    """The mount's uidMappings: on-disk 0 shows as 1000/2000; the submount
    stays unmapped without ridmap."""
    def edit(c):
        c["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(tree),
                            "options": ["rbind"],
                            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                            "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 1}]})
    p = rt.run(["stat", "-c", "%n %u %g", "/mnt/f", "/mnt/sub/g"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["/mnt/f 1000 2000", "/mnt/sub/g 0 0"]


def test_ridmap_takes_the_containers_mappings(rt, tree, tmp_path):
    """In a user namespace, a plain bind shows host root as the overflow id; a
    ridmap mount shows it as the container's root, submounts included, and a
    file made there belongs to host root."""
    _open_path_to(rt.rootfs)
    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        c["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(tree),
                            "options": ["rbind", "ridmap"]})
        c["mounts"].append({"destination": "/tmp", "type": "bind", "source": str(tree),
                            "options": ["rbind"]})
    p = rt.run(["sh", "-c", "stat -c '%n %u' /mnt/f /mnt/sub/g /tmp/f; touch /mnt/new"],
               edit=edit)
    assert p.returncode == 0, p.stderr
    with open("/proc/sys/kernel/overflowuid") as f:
        overflow = f.read().strip()
    assert p.stdout.splitlines() == ["/mnt/f 0", "/mnt/sub/g 0", f"/tmp/f {overflow}"]
    assert os.stat(tree / "new").st_uid == 0


@pytest.mark.parametrize("mount, words", [
    ({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]},
     ["mounts[", "only bind mounts"]),
    ({"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["bind", "idmap"]},
     ["needs uidMappings and gidMappings"]),
])
def test_idmapped_mount_mistakes_are_clear(rt, mount, words):
    cid, p = create_with(rt, edit=lambda c: c["mounts"].append(mount))
    assert_clean_failure(rt, cid, p, *words)


def test_tmpfs_mode_option_gives_that_mode(rt):
    p = rt.run(["stat", "-c", "%a", "/scratch"], edit=lambda c: c["mounts"].append(
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["mode=1750", "size=1m"]}))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1750"


def test_update_the_kernel_refuses_names_the_file_and_value(rt):
    """A memory limit below what the container uses: one line with the file
    and the value, and the old limit stays."""
    b = rt.bundle(["sh", "-c", "a=$(head -c 8m /dev/zero | tr '\\0' x); sleep 100"],
                  edit=lambda c: c["linux"]["resources"].update(memory={"limit": 64 << 20}))
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    limit = f"/sys/fs/cgroup/memory/emergence/{cid}/memory.limit_in_bytes"
    time.sleep(0.5)
    p = rt("update", "--memory", "4096", cid)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "memory.limit_in_bytes" in p.stderr and "4096" in p.stderr
    with open(limit) as f:
        assert int(f.read()) == 64 << 20
