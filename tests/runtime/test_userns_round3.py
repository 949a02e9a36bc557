"""Issue 29, user namespaces: one without mappings maps root to the caller (as crun)
and still gets cgroup, devpts and sysfs; bind sources only root can reach are opened
by the launcher before the switch (as runc and crun), keeping the host's mount locks
(as runc); sysfs without a network namespace of its own is the host's /sys bound (as
crun). docs/compat.md has the table."""

import os
import shutil
import subprocess

import pytest
from test_errors import assert_clean_failure, create_with
from test_namespaces import _open_path_to


def _runc(rt, bundle):
    """`runc run` on BUNDLE, to show the peer does what the test asserts."""
    return subprocess.run(["runc", "--root", str(rt.tmp / "runc-state"), "run", "--bundle",
                           bundle, rt.new_id("runc")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def _mapped(c, net=True, caps=()):
    """A user namespace mapping 0-65535 to 100000-165535; no cgroup mount (it is
    bound from the host's cgroup tree, which that root may not read), devpts
    without gid=5 (kept by test_unmapped_*), and CAPS added."""
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    if not net:
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"]
    c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    for m in c["mounts"]:
        if m["destination"] == "/dev/pts":
            m["options"].remove("gid=5")
    for k in ("bounding", "effective", "permitted"):
        c["process"]["capabilities"][k] += list(caps)


def _mounts(out):
    """{mount point: (options, fstype)} from mountinfo lines."""
    found = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) > 8 and "-" in f:
            dash = f.index("-")
            found[f[4]] = (f[5], f[dash + 1])
    return found


def test_unmapped_user_namespace_mounts_cgroup_devpts_and_sysfs(rt):
    """The runtime spec's default mounts, devpts's gid=5 included: root is mapped to
    our own uid and gid (0 here), and cgroup, devpts and sysfs are mounted."""
    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
    p = rt.run(["sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; "
                "cat /proc/self/mountinfo; ls /sys/fs/cgroup | wc -l; ls /sys/class/net"],
               edit=edit)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == ["0", "0"]
    assert lines[2].split() == ["0", str(os.geteuid()), "1"]
    assert lines[3].split() == ["0", str(os.getegid()), "1"]
    mounts = _mounts(p.stdout)
    assert mounts["/dev/pts"][1] == "devpts"
    assert mounts["/sys"][1] == "sysfs" and "ro" in mounts["/sys"][0].split(",")
    assert "/sys/fs/cgroup" in mounts
    assert int(lines[-2]) > 0  # the container's cgroups are there
    assert lines[-1] == "lo"   # its own network namespace's sysfs


def test_unmapped_user_namespace_can_only_be_root(rt):
    cid, p = create_with(rt, edit=lambda c: (c["linux"]["namespaces"].append({"type": "user"}),
                                             c["process"]["user"].update(uid=1000)))
    assert_clean_failure(rt, cid, p, "process.user", "maps only root", "uidMappings")


@pytest.fixture
def locked_source(tmp_path):
    """A directory only root can reach (its parent is mode 000), and a read-only,
    nosuid host mount; the container's root (host uid 100000) can enter neither."""
    hidden = tmp_path / "hidden"
    (hidden / "sub").mkdir(parents=True)
    (hidden / "sub" / "f").write_text("behind a 000 directory\n")
    hidden.chmod(0)
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro)], check=True)
    (ro / "g").write_text("on a read-only mount\n")
    subprocess.run(["mount", "-o", "remount,ro,nosuid,nodev", str(ro)], check=True)
    yield hidden / "sub", ro
    subprocess.run(["umount", "-l", str(ro)])
    hidden.chmod(0o700)


def test_bind_source_only_root_can_reach(rt, tmp_path, locked_source):
    """The launcher opens each source as root in the init's mount namespace: the
    container reads what only root could reach, and the host mount's locks stay
    (its ro and nosuid cannot be undone from inside, as with runc; crun 1.8.1 lets
    them go, docs/compat.md).  A bind the runtime made read-only on a writable host
    mount is not locked, so the same remount works there: the container could."""
    _open_path_to(rt.rootfs)
    _open_path_to(str(tmp_path))
    hidden, ro = locked_source

    def edit(c):
        _mapped(c, caps=["CAP_SYS_ADMIN"])
        c["mounts"] += [
            {"destination": "/root", "type": "bind", "source": str(hidden),
             "options": ["bind", "ro"]},
            {"destination": "/tmp", "type": "bind", "source": str(ro), "options": ["rbind"]}]
    script = ("cat /root/f /tmp/g; "
              "mount -o remount,bind,rw /tmp 2>/dev/null && echo tmp-rw; "
              "mount -o remount,bind,suid,ro /tmp 2>/dev/null && echo tmp-suid; "
              "mount -o remount,bind,rw /root && echo root-rw")
    b = rt.bundle(["sh", "-c", script], edit=edit)
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["behind a 000 directory", "on a read-only mount",
                                     "root-rw"]
    if shutil.which("runc"):
        assert _runc(rt, b).stdout.splitlines() == p.stdout.splitlines()


def test_a_missing_bind_source_is_named(rt, tmp_path):
    _open_path_to(rt.rootfs)
    cid, p = create_with(rt, edit=lambda c: (_mapped(c), c["mounts"].append(
        {"destination": "/root", "type": "bind", "source": str(tmp_path / "nope"),
         "options": ["bind"]})))
    assert_clean_failure(rt, cid, p, "nope", "does not exist")


def test_sysfs_without_a_network_namespace_binds_the_hosts(rt, tmp_path):
    """sysfs cannot be mounted then (runc 1.1.5 fails with EPERM); as crun, the host's
    /sys is bound, here read-only throughout, with the host's cgroups masked."""
    _open_path_to(rt.rootfs)
    _open_path_to(str(tmp_path))
    p = rt.run(["sh", "-c", "cat /proc/self/mountinfo; echo ==; ls /sys/fs/cgroup | wc -l; "
                "echo ==; ls /sys/class/net; echo ==; touch /sys/kernel/x 2>&1"],
               edit=lambda c: _mapped(c, net=False))
    info, cgroups, nets, touch = p.stdout.split("==\n")
    mounts = _mounts(info)
    assert mounts["/sys"][1] == "sysfs" and "ro" in mounts["/sys"][0].split(",")
    # every host mount below /sys came along read-only, and the cgroups are hidden
    below = {k: v for k, v in mounts.items() if k.startswith("/sys/")}
    assert below and all("ro" in v[0].split(",") for v in below.values()), below
    assert cgroups.strip() == "0"
    assert sorted(nets.split()) == sorted(os.listdir("/sys/class/net"))  # the host's
    assert "Read-only file system" in touch


def test_sysfs_without_a_network_namespace_keeps_a_cgroup_mount(rt):
    """With the config's cgroup mount, the container's own cgroups are there (root
    mapped to ours, so the host's cgroup tree may be bound)."""
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"] + [{"type": "user"}]
    p = rt.run(["sh", "-c", "ls /sys/fs/cgroup"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert "memory" in p.stdout.split() or "cgroup.procs" in p.stdout.split()


def test_exec_in_an_unmapped_user_namespace(rt):
    """exec joins as root (mapped to ours); another id is one clear line."""
    b = rt.bundle(["sleep", "300"], edit=lambda c: c["linux"]["namespaces"].append(
        {"type": "user"}))
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    p = rt("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "0", str(os.geteuid()), "1"]
    p = rt("exec", "--user", "1", cid, "true")
    assert p.returncode != 0 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "does not map this id" in p.stderr
