"""Issue 29, devices: under a user namespace the host's node is bound (mknod is not
allowed there), opened by the launcher as root; a device already in the rootfs is
left as it is and a trailing slash is dropped, as runc does.  docs/compat.md has
the table."""

import os
import shutil
import stat

import pytest
from test_errors import assert_clean_failure, create_with
from test_namespaces import _open_path_to
from test_userns_round3 import _mapped, _runc


def _devices(*devs):
    def edit(c):
        c["linux"]["devices"] = [dict(zip(("path", "type", "major", "minor"), d),
                                      fileMode=0o666) for d in devs]
    return edit


def _both(*edits):
    def edit(c):
        for e in edits:
            e(c)
    return edit


def test_device_already_in_the_rootfs_is_left_as_it_is(rt):
    """runc and crun keep what is there (a node of another mode or device, even a
    regular file); the rootfs is not changed underneath."""
    b = rt.bundle(["sh", "-c", "stat -c '%F %a %t,%T' /opt/nul /opt/file; cat /opt/file"],
                  edit=_devices(("/opt/nul", "c", 1, 5), ("/opt/file", "c", 1, 3)),
                  copy_rootfs=True)
    opt = os.path.join(b, "rootfs", "opt")
    os.makedirs(opt)
    os.mknod(os.path.join(opt, "nul"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with open(os.path.join(opt, "file"), "w") as f:
        f.write("a regular file\n")
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    want = ["character special file 600 1,3", "regular file 644 0,0", "a regular file"]
    assert p.stdout.splitlines() == want
    st = os.stat(os.path.join(opt, "nul"))
    assert stat.S_IMODE(st.st_mode) == 0o600 and os.minor(st.st_rdev) == 3
    if shutil.which("runc"):
        assert _runc(rt, b).stdout.splitlines() == want


def test_device_path_with_a_trailing_slash(rt):
    """/dev/trail/ is /dev/trail, as runc makes it (crun fails on mknod)."""
    b = rt.bundle(["sh", "-c", "stat -c '%n %F %t,%T' /dev/trail"],
                  edit=_devices(("/dev/trail/", "c", 1, 3)))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "/dev/trail character special file 1,3"
    if shutil.which("runc"):
        assert _runc(rt, b).stdout.strip() == p.stdout.strip()


@pytest.fixture
def userns(rt, tmp_path):
    _open_path_to(rt.rootfs)
    _open_path_to(str(tmp_path))
    return _mapped


def test_user_namespace_binds_the_hosts_node(rt, userns):
    """mknod is not allowed there: the host's /dev/full is bound, the trailing slash
    dropped (runc and crun fail on it under a user namespace)."""
    p = rt.run(["sh", "-c", "stat -c '%F %t,%T' /dev/full; grep -c ' /dev/full ' "
                "/proc/self/mountinfo; echo x > /dev/full"],
               edit=_both(userns, _devices(("/dev/full/", "c", 1, 7))))
    assert p.returncode == 1, p.stderr
    assert p.stdout.splitlines() == ["character special file 1,7", "1"]
    assert "No space left on device" in p.stderr


@pytest.fixture
def hidden_node():
    """A copy of /dev/null under a 0700 directory of the host's /dev: only root
    reaches it, not the container's root (host uid 100000)."""
    d = f"/dev/em-round3-{os.getpid()}"
    os.mkdir(d, 0o700)
    os.mknod(f"{d}/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(f"{d}/null", 0o666)
    yield f"{d}/null"
    shutil.rmtree(d)


def test_user_namespace_device_only_root_can_reach(rt, userns, hidden_node):
    """The launcher opens the node as root before the switch, as the bind sources."""
    p = rt.run(["sh", "-c", f"echo x > {hidden_node} && stat -c '%F %t,%T' {hidden_node}"],
               edit=_both(userns, _devices((hidden_node, "c", 1, 3))))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "character special file 1,3"


@pytest.mark.parametrize("dev, words", [
    (("/dev/null", "c", 1, 5), ["/dev/null", "is not the device c 1:5"]),
    (("/dev/null", "b", 1, 3), ["/dev/null", "is not the device b 1:3"]),
    (("/dev/em-no-such-node", "c", 1, 3), ["/dev/em-no-such-node", "cannot be bound"]),
])
def test_user_namespace_device_that_the_host_lacks_is_refused(rt, userns, dev, words):
    """Binding another node than the one named would be wrong silently: one line."""
    cid, p = create_with(rt, edit=_both(userns, _devices(dev)))
    assert_clean_failure(rt, cid, p, "linux.devices", *words)


def test_user_namespace_fifo_is_made(rt, userns):
    """A fifo needs no privilege: it is made, not bound, under a user namespace too."""
    p = rt.run(["stat", "-c", "%F %a", "/dev/pipe0"],
               edit=_both(userns, _devices(("/dev/pipe0", "p", 0, 0))))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "fifo 666"


def test_podman_style_device_under_uidmap(rt, userns):
    """podman --uidmap --device writes type bits in fileMode; the node is the host's."""
    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/zero", "type": "c", "major": 1, "minor": 5,
                                  "fileMode": 8630, "uid": 0, "gid": 0}]
    p = rt.run(["sh", "-c", "head -c 3 /dev/zero | od -An -tx1"], edit=_both(userns, edit))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["00", "00", "00"]


def test_a_device_bound_by_the_config_is_not_made(rt, userns):
    """The config's own bind of /dev/null wins over the device of that path (with a
    trailing slash too), under a user namespace as well."""
    def edit(c):
        c["mounts"].append({"destination": "/dev/null", "type": "bind",
                            "source": "/dev/null", "options": ["bind"]})
        c["linux"]["devices"] = [{"path": "/dev/null/", "type": "c", "major": 1, "minor": 3}]
    p = rt.run(["grep", "-c", " /dev/null ", "/proc/self/mountinfo"], edit=_both(userns, edit))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1"


def test_no_descriptor_channel_without_a_user_namespace(rt):
    """The hot path: a container without a user namespace binds as before, no
    launcher opens (and no extra operations)."""
    b = rt.bundle(["true"])
    p = rt("--debug", "run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert "SEND_SOURCE" not in p.stderr and "FD_CHANNEL" not in p.stderr
    assert "CHOWN_STDIO" not in p.stderr
    assert "MKNOD" in p.stderr
