"""Issue 29, where runc and crun differ from what Emergence did: device modes with
type bits, hooks without env, UTS sysctls against hostname/domainname, unknown
capability names, AppArmor profiles (docs/compat.md has the table)."""

import os
import stat

import pytest
from test_errors import assert_clean_failure, create_with


def _device(mode, kind="c"):
    def edit(c):
        c["linux"].setdefault("devices", []).append(
            {"path": "/dev/round3", "type": kind, "major": 1, "minor": 3, "fileMode": mode})
    return edit


@pytest.mark.parametrize("mode, want", [
    (8630, "crw-rw-rw-"),        # podman's 0o20666 for a character device
    (0o60640, "crw-r-----"),     # type bits that say block: `type` decides, as runc does
    (0o100600, "crw-------"),    # a regular file's type bits: the same
])
def test_device_file_mode_with_type_bits_uses_the_permission_bits(rt, mode, want):
    p = rt.run(["sh", "-c", "ls -l /dev/round3"], edit=_device(mode))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == want and p.stdout.split()[4:6] == ["1,", "3"], p.stdout
    assert p.stderr == ""


def test_device_file_mode_beyond_a_mode_is_refused(rt):
    cid, p = create_with(rt, edit=_device(0o200000))
    assert_clean_failure(rt, cid, p, "linux.devices[0].fileMode", "a file mode")


def test_device_node_is_really_a_character_device(rt, tmp_path):
    """The node is made by mknod with `type`'s bits: stat it from the host."""
    b = rt.bundle(["sleep", "100"], edit=_device(0o60640), copy_rootfs=True)
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    pid = rt.state(cid)["pid"]
    st = os.stat(f"/proc/{pid}/root/dev/round3")
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640

