"""Behaviours where Emergence follows runc and crun (issue 29): a symlinked
/etc/passwd, nested cgroups on delete, a tmpfs without mode, cgroup mounts."""

import os
import shutil
import subprocess
import time

import pytest
from conftest import leftovers


def _runc(rt, bundle):
    """`runc run` on BUNDLE, to show the peer does what the test asserts."""
    return subprocess.run(["runc", "--root", str(rt.tmp / "runc-state"), "run", "--bundle",
                           bundle, rt.new_id("runc")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def _passwd_link(rt, target):
    """A bundle with a rootfs copy whose /etc/passwd is a symlink to TARGET, and a
    Nix-style store file with root's home /nixhome."""
    b = rt.bundle(["sh", "-c", "echo $HOME"], copy_rootfs=True)
    root = os.path.join(b, "rootfs")
    store = os.path.join(root, "nix/store/0abc-passwd")
    os.makedirs(os.path.dirname(store))
    with open(store, "w") as f:
        f.write("root:x:0:0:root:/nixhome:/bin/sh\n")
    os.unlink(os.path.join(root, "etc/passwd"))
    os.symlink(target, os.path.join(root, "etc/passwd"))
    return b


def test_home_from_a_passwd_symlinked_into_the_nix_store(rt):
    b = _passwd_link(rt, "/nix/store/0abc-passwd")
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "/nixhome"
    if shutil.which("runc"):
        assert _runc(rt, b).stdout.strip() == "/nixhome"


def test_home_from_a_relative_passwd_symlink(rt):
    b = _passwd_link(rt, "../nix/store/0abc-passwd")
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.stdout.strip() == "/nixhome", p.stderr


def test_passwd_symlink_cannot_reach_the_hosts(rt):
    """Climbing out resolves to the rootfs's own /etc/passwd (the link itself: a
    loop), never the host's, whose root has home /root."""
    b = _passwd_link(rt, "../../../../../../../../etc/passwd")
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "/"
    if shutil.which("runc"):
        assert _runc(rt, b).stdout.strip() == "/"
    os.unlink(os.path.join(b, "rootfs/etc/passwd"))
    os.symlink("/../../../../etc/../etc/passwd", os.path.join(b, "rootfs/etc/passwd"))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.stdout.strip() == "/", p.stderr


def test_passwd_in_a_symlinked_etc(rt):
    b = rt.bundle(["sh", "-c", "echo $HOME"], copy_rootfs=True)
    root = os.path.join(b, "rootfs")
    shutil.move(os.path.join(root, "etc"), os.path.join(root, "real-etc"))
    with open(os.path.join(root, "real-etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/from-real-etc:/bin/sh\n")
    os.symlink("/real-etc", os.path.join(root, "etc"))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.stdout.strip() == "/from-real-etc", p.stderr


INSIDE = ("mkdir /sys/fs/cgroup/pids/init.scope && echo $$ > /sys/fs/cgroup/pids/init.scope/"
          "cgroup.procs; mkdir -p /sys/fs/cgroup/systemd/system.slice/a.service; "
          "(sleep 300 & echo $! > /sys/fs/cgroup/systemd/system.slice/a.service/cgroup.procs; "
          "wait) & exec sleep 300")


def test_delete_force_removes_the_containers_own_cgroups_depth_first(rt, running):
    """The container, like systemd in it, makes cgroups of its own through a
    writable cgroup mount and moves processes there; delete -f removes them all."""
    def rw_cgroup(c):
        for m in c["mounts"]:
            if m["type"] == "cgroup":
                m["options"] = [o for o in m["options"] if o != "ro"]
    cid = running(["sh", "-c", INSIDE], edit=rw_cgroup)
    nested = [f"/sys/fs/cgroup/pids/emergence/{cid}/init.scope",
              f"/sys/fs/cgroup/systemd/emergence/{cid}/system.slice/a.service"]
    inner = []
    for _ in range(500):
        if all(os.path.exists(os.path.join(d, "cgroup.procs")) for d in nested):
            with open(os.path.join(nested[1], "cgroup.procs")) as f:
                inner = f.read().split()
            if inner:
                break
        time.sleep(0.01)
    assert inner, "the container did not make its cgroups"
    p = rt("delete", "--force", cid)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))
    assert leftovers(cid) == []
    assert not os.path.exists(f"/proc/{inner[0]}")


V2_NESTED = r"""
set -e
"$@" run --detach --bundle "$BUNDLE" "$CID" </dev/null >/dev/null 2>&1
leaf=/sys/fs/cgroup/emergence/$CID
mkdir -p $leaf/init.scope/inner $leaf/other.slice
pid=$(cat $leaf/cgroup.procs | head -n 1)
child=$(cat /proc/$pid/task/$pid/children | cut -d' ' -f1)
echo $child > $leaf/init.scope/inner/cgroup.procs
"$@" delete --force "$CID"
test ! -e $leaf && echo gone
"""


def test_delete_force_with_nested_cgroups_on_pure_cgroup2(rt, restore_v2_root):
    from test_cgroups import V2_SCRIPT
    cid = rt.new_id()
    b = rt.bundle(["sh", "-c", "sleep 300 & sleep 300 & wait"],
                  edit=lambda c: c["linux"]["namespaces"].remove({"type": "cgroup"}))
    p = subprocess.run(["unshare", "-m", "sh", "-c", V2_SCRIPT, "sh", "sh", "-c", V2_NESTED,
                        "sh"] + rt.cmd + ["--root", rt.root],
                       env={**os.environ, "BUNDLE": b, "CID": cid},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "gone", p.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))
    assert not os.path.exists(f"/sys/fs/cgroup/unified/emergence/{cid}")


TMPFS = {"/m700": [], "/m2750": ["nosuid"], "/ro700": ["ro"], "/newdir": [],
         "/explicit": ["mode=711"], "/etc": ["size=1m"]}


def _tmpfs_bundle(rt):
    def edit(c):
        c["mounts"] += [{"destination": d, "type": "tmpfs", "source": "tmpfs", "options": o}
                        for d, o in TMPFS.items()]
    b = rt.bundle(["stat", "-c", "%n %a"] + list(TMPFS), edit=edit, copy_rootfs=True)
    root = os.path.join(b, "rootfs")
    for d, mode in (("m700", 0o700), ("m2750", 0o2750), ("ro700", 0o700)):
        os.mkdir(os.path.join(root, d))
        os.chmod(os.path.join(root, d), mode)
    os.chmod(os.path.join(root, "etc"), 0o755)
    return b


def _modes(p):
    assert p.returncode == 0, p.stderr
    return dict(line.split() for line in p.stdout.splitlines())


def test_tmpfs_without_mode_keeps_the_mount_points_mode(rt):
    """As runc: a tmpfs with no mode= gets the mode of the directory it covers
    (read-only too); a missing mount point is made and the tmpfs gets the kernel's
    1777; an explicit mode= wins.  (crun gives every tmpfs without mode= 1777.)"""
    want = {"/m700": "700", "/m2750": "2750", "/ro700": "700", "/newdir": "1777",
            "/explicit": "711", "/etc": "755"}
    assert _modes(rt("run", "--bundle", _tmpfs_bundle(rt), rt.new_id())) == want
    if shutil.which("runc"):  # the same bundle under runc itself
        assert _modes(_runc(rt, _tmpfs_bundle(rt))) == want


def _v1_names():
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" - ")[1].split()[0] for line in f]
    if "cgroup" not in mounts or "cgroup2" not in mounts:
        return None
    return sorted(n for n in os.listdir("/sys/fs/cgroup")
                  if os.path.ismount(f"/sys/fs/cgroup/{n}") and n != "unified")


def test_hybrid_host_shows_the_v1_hierarchies_only(rt):
    """As runc and crun on a hybrid host: the cgroup mount holds the v1 hierarchies
    (and their symlinks), no cgroup2 mount at /sys/fs/cgroup/unified."""
    names = _v1_names()
    if names is None:
        pytest.skip("not a hybrid host")
    b = rt.bundle(["sh", "-c", "grep -c ' - cgroup2 ' /proc/self/mountinfo; "
                               "for d in /sys/fs/cgroup/*; do test -L $d || echo ${d##*/}; done"])
    peers = [rt("run", "--bundle", b, rt.new_id())]
    if shutil.which("runc"):
        peers.append(_runc(rt, b))
    for p in peers:
        lines = p.stdout.split()
        assert lines[0] == "0", p.stdout + p.stderr
        assert sorted(lines[1:]) == names


def test_passwd_walk_without_openat2(tmp_path, monkeypatch):
    """The component walk for kernels without openat2 resolves the same way."""
    from emergence.runtime import userdb
    monkeypatch.setattr(userdb, "_openat2_in_root", lambda *a: None)
    (tmp_path / "etc").mkdir()
    (tmp_path / "nix/store").mkdir(parents=True)
    (tmp_path / "nix/store/0abc-passwd").write_text("root:x:0:0::/nixhome:/bin/sh\n")
    link = tmp_path / "etc/passwd"
    for target, home in (("/nix/store/0abc-passwd", "/nixhome"),
                         ("../nix/./store/0abc-passwd", "/nixhome"),
                         ("/etc/../../../nix/store/0abc-passwd", "/nixhome"),
                         ("../../../../../../../../etc/passwd", "/"),
                         ("passwd", "/"),
                         ("/nix/store/0abc-passwd/x", "/")):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        assert userdb.home_of(str(tmp_path), 0) == home, target
