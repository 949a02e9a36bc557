"""Root filesystem, mounts and devices, as seen from inside."""

import os
import stat

import pytest


def mount_options(rt, dest, edit=None, extra=""):
    """The mount options (per-mount field) of DEST inside the container."""
    p = rt.run(["sh", "-c", f"awk '$5 == \"{dest}\" {{print $6}}' /proc/self/mountinfo {extra}"],
               edit=edit)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()[-1].split(",")


def add_mount(m):
    return lambda c: c["mounts"].append(m)


def test_root_readonly(rt):
    p = rt.run(["sh", "-c", "touch /x"])
    assert p.returncode != 0 and "Read-only file system" in p.stderr
    p = rt.run(["sh", "-c", "touch /x && echo ok"],
               edit=lambda c: c["root"].update(readonly=False))
    assert p.stdout.strip() == "ok"


def test_writable_rootfs_changes_stay_in_the_bundle(rt):
    b = rt.bundle(["sh", "-c", "echo data > /written"], copy_rootfs=True,
                  edit=lambda c: c["root"].update(readonly=False))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    with open(os.path.join(b, "rootfs", "written")) as f:
        assert f.read() == "data\n"


@pytest.mark.parametrize("opt", ["nosuid", "nodev", "noexec", "ro", "noatime"])
def test_tmpfs_mount_flags(rt, opt):
    opts = mount_options(rt, "/mnt/t", edit=add_mount(
        {"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": [opt]}))
    assert opt in opts


def test_tmpfs_size_and_mode(rt):
    p = rt.run(["sh", "-c", "stat -c %a /mnt/t; df -k /mnt/t | tail -1"],
               edit=add_mount({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                               "options": ["size=1m", "mode=710"]}))
    lines = p.stdout.splitlines()
    assert lines[0] == "710"
    assert lines[1].split()[1] == "1024"


def test_noexec_blocks_execution(rt):
    p = rt.run(["sh", "-c", "cp /bin/busybox /mnt/t/bb && /mnt/t/bb true"],
               edit=add_mount({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                               "options": ["noexec"]}))
    assert p.returncode != 0 and "Permission denied" in p.stderr


def test_bind_mount_readwrite_and_readonly(rt, tmp_path):
    src = tmp_path / "shared"
    src.mkdir()
    (src / "in.txt").write_text("from host\n")

    p = rt.run(["sh", "-c", "cat /data/in.txt; echo back > /data/out.txt"],
               edit=add_mount({"destination": "/data", "type": "bind", "source": str(src),
                               "options": ["rbind", "rw"]}))
    assert p.stdout == "from host\n", p.stderr
    assert (src / "out.txt").read_text() == "back\n"

    p = rt.run(["sh", "-c", "echo x > /data/out2.txt"],
               edit=add_mount({"destination": "/data", "type": "bind", "source": str(src),
                               "options": ["bind", "ro", "nosuid", "nodev"]}))
    assert p.returncode != 0 and "Read-only" in p.stderr
    assert not (src / "out2.txt").exists()


def test_bind_mount_of_a_file_creates_the_target(rt, tmp_path):
    f = tmp_path / "hosts"
    f.write_text("1.2.3.4 bound\n")
    p = rt.run(["cat", "/etc/deep/er/hosts"],
               edit=add_mount({"destination": "/etc/deep/er/hosts", "source": str(f),
                               "options": ["bind", "ro"]}))
    assert p.stdout == "1.2.3.4 bound\n", p.stderr


def test_relative_bind_source_is_relative_to_the_bundle(rt):
    b = rt.bundle(["cat", "/m/note"], edit=add_mount(
        {"destination": "/m", "type": "bind", "source": "extra", "options": ["rbind"]}))
    os.mkdir(os.path.join(b, "extra"))
    with open(os.path.join(b, "extra", "note"), "w") as f:
        f.write("relative\n")
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.stdout == "relative\n", p.stderr


@pytest.mark.parametrize("prop,field", [("rshared", "shared:"), ("rprivate", None)])
def test_mount_propagation_flags(rt, prop, field):
    p = rt.run(["sh", "-c", "awk '$5 == \"/mnt/p\"' /proc/self/mountinfo"],
               edit=add_mount({"destination": "/mnt/p", "type": "tmpfs", "source": "tmpfs",
                               "options": [prop]}))
    line = p.stdout.strip()
    assert line, p.stderr
    optional = line.split(" - ")[0].split()[6:]
    if field is None:
        assert optional == []
    else:
        assert any(o.startswith(field) for o in optional), line


def test_rslave_bind_receives_host_mounts_but_sends_none(rt, tmp_path):
    import subprocess
    import time
    src = tmp_path / "share"
    src.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        b = rt.bundle(["sleep", "100"],
                      edit=add_mount({"destination": "/s", "type": "bind", "source": str(src),
                                      "options": ["rbind", "rslave"]}))
        cid = rt.new_id()
        rt("run", "--detach", "--bundle", b, cid, check=True)
        (src / "sub").mkdir()
        time.sleep(0.2)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
        (src / "sub" / "flag").write_text("")
        pid = rt.state(cid)["pid"]
        with open(f"/proc/{pid}/mountinfo") as f:
            line = next(x for x in f if " /s " in x)
        assert "master:" in line
        with open(f"/proc/{pid}/mountinfo") as f:
            assert any(" /s/sub " in x for x in f)  # the host's new mount propagated in
        subprocess.run(["umount", str(src / "sub")], check=True)
    finally:
        subprocess.run(["umount", "-l", str(src)], check=True)


def test_standard_filesystems_are_mounted(rt):
    p = rt.run(["sh", "-c", "awk '{print $5, $(NF-2)}' /proc/self/mountinfo"])
    mounts = dict(line.split() for line in p.stdout.splitlines())
    assert mounts["/proc"] == "proc"
    assert mounts["/dev"] == "tmpfs"
    assert mounts["/dev/pts"] == "devpts"
    assert mounts["/dev/shm"] == "tmpfs"
    assert mounts["/dev/mqueue"] == "mqueue"
    assert mounts["/sys"] == "sysfs"
    assert mounts["/sys/fs/cgroup"] == "tmpfs"
    assert mounts["/sys/fs/cgroup/memory"] == "cgroup"


def test_cgroup_mount_shows_the_containers_own_limits(rt):
    def edit(c):
        c["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    p = rt.run(["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"], edit=edit)
    assert p.stdout.strip() == str(64 << 20)
    p = rt.run(["sh", "-c", "echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes"], edit=edit)
    assert p.returncode != 0  # read-only


def test_default_devices_and_links(rt):
    p = rt.run(["sh", "-c", "for d in null zero full random urandom tty; do "
                            "stat -c '%n %t %T %a' /dev/$d; done; readlink /dev/fd; "
                            "readlink /dev/ptmx; "
                            "echo hi > /dev/null && head -c 4 /dev/zero | wc -c"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:6] == ["/dev/null 1 3 666", "/dev/zero 1 5 666", "/dev/full 1 7 666",
                         "/dev/random 1 8 666", "/dev/urandom 1 9 666", "/dev/tty 5 0 666"]
    assert lines[6:8] == ["/proc/self/fd", "pts/ptmx"]
    assert lines[8] == "4"


def test_linux_devices_creates_nodes_and_allows_them(rt):
    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/kmsg-copy", "type": "c", "major": 1,
                                  "minor": 11, "fileMode": 0o640, "uid": 0, "gid": 0},
                                 {"path": "/dev/fifo0", "type": "p"}]
    p = rt.run(["sh", "-c", "stat -c '%n %F %t %T %a' /dev/kmsg-copy /dev/fifo0"], edit=edit)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "/dev/kmsg-copy character special file 1 b 640"
    assert lines[1].startswith("/dev/fifo0 fifo")


def test_device_cgroup_denies_devices_not_allowed(rt):
    # mknod succeeds (CAP_MKNOD) but the device cgroup refuses to open the node.
    def edit(c):
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k].append("CAP_MKNOD")
    p = rt.run(["sh", "-c", "mknod /dev/mem2 c 1 1 && head -c 1 /dev/mem2"], edit=edit)
    assert p.returncode != 0
    assert "Operation not permitted" in p.stderr


def test_masked_and_readonly_paths(rt):
    masked = next(p for p in ("/proc/keys", "/proc/timer_list", "/proc/kcore")
                  if os.path.exists(p))
    p = rt.run(["sh", "-c", f"wc -c < {masked}; ls /sys/firmware | wc -l; "
                            "echo 1 > /proc/sys/kernel/panic 2>&1 || echo ro"])
    lines = p.stdout.split()
    assert lines[0] == "0", p.stderr  # a masked file reads as /dev/null
    assert lines[1] == "0"          # /sys/firmware behind an empty tmpfs
    assert lines[-1] == "ro"
    assert stat.S_ISDIR(os.stat("/sys/firmware").st_mode)


def test_rootfs_propagation_private(rt):
    p = rt.run(["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"],
               edit=lambda c: c["linux"].update(rootfsPropagation="private"))
    assert p.returncode == 0, p.stderr
    assert "shared:" not in p.stdout and "master:" not in p.stdout
