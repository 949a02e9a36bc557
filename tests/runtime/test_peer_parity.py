"""Behaviours where Emergence follows runc and crun (issue 29): a symlinked
/etc/passwd, nested cgroups on delete, a tmpfs without mode, cgroup mounts."""

import os
import shutil


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
