"""A planner copies the shim into a sealed memfd once, and the containers its
workers create all run from that one copy (`/proc/<init>/exe`): before, each
create made its own.  Shared, a write through one container must reach none:
root on the host, holding the copy through a container's init, tries to write
it, truncate it, grow it, map it writable and lift its seals -- every one is
refused, and the next container runs the shim as built.  The legitimate use:
both containers run and start."""

import fcntl
import hashlib
import mmap
import os

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real containers: needs root")


def _sha(fd):
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _reopen_writable(fd):
    """The copy, opened for writing through a descriptor of it, once no init
    runs from it (while one does, the kernel refuses: ETXTBSY)."""
    import errno
    import time
    for _ in range(500):
        try:
            return os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        except OSError as e:
            if e.errno != errno.ETXTBSY:
                raise
            time.sleep(0.01)
    raise AssertionError("the shim copy stayed busy (an init still runs from it)")


def _planner_facts(sock):
    """For a failure's message: who serves SOCK, and its kept descriptors."""
    import socket
    import struct
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(sock)
        pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        fds = {n: os.readlink(f"/proc/{ppid}/fd/{n}") for n in os.listdir(f"/proc/{ppid}/fd")}
        limit = [line for line in open(f"/proc/{ppid}/limits") if "open files" in line]
        return f"planner {ppid}: fds {fds}, {limit}"
    except OSError as e:
        return f"the planner at {sock} does not answer: {e}"
    finally:
        s.close()


def test_one_sealed_shim_copy_for_a_planners_containers_and_nobody_writes_it(
        rt, warm_planner, monkeypatch):
    import errno

    from emergence.runtime.launch import SEALS, SHIM
    monkeypatch.setenv("EMERGENCE_PLANNER_SOCKET", warm_planner)
    # a loaded machine must not send a call cold (the front-end's deadline)
    monkeypatch.setenv("EMERGENCE_PLANNER_TIMEOUT", "60")
    first, second = rt.new_id(), rt.new_id()
    with open(SHIM, "rb") as f:
        built = hashlib.sha256(f.read()).hexdigest()
    said = [rt("create", "--bundle", rt.bundle(["true"]), cid, check=True).stderr
            for cid in (first, second)]
    exes = [f"/proc/{rt.state(cid)['pid']}/exe" for cid in (first, second)]
    for exe in exes:
        assert os.readlink(exe).startswith("/memfd:emergence-shim")
    # one copy (a second one means a call ran cold, or the planner lost its own)
    assert os.stat(exes[0]).st_ino == os.stat(exes[1]).st_ino, \
        (_planner_facts(warm_planner), said)
    with pytest.raises(OSError) as refused:  # while an init runs from it
        os.open(exes[0], os.O_WRONLY)
    assert refused.value.errno in (errno.ETXTBSY, errno.EPERM, errno.EACCES)
    held = os.open(exes[0], os.O_RDONLY)
    try:
        assert fcntl.fcntl(held, fcntl.F_GET_SEALS) == SEALS
        for cid in (first, second):  # the inits exec `true`: nobody runs the copy
            rt("start", cid, check=True)
        fd = _reopen_writable(held)
        try:
            with pytest.raises(PermissionError):
                os.pwrite(fd, b"\x7fELF pwned", 0)
            with pytest.raises(PermissionError):
                os.ftruncate(fd, 16)
            with pytest.raises(PermissionError):
                os.ftruncate(fd, os.fstat(fd).st_size + 4096)
            with pytest.raises(PermissionError):
                mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            with pytest.raises(PermissionError):  # F_SEAL_SEAL: no seal changes
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0x10)  # F_SEAL_FUTURE_WRITE
        finally:
            os.close(fd)
        assert _sha(held) == built
    finally:
        os.close(held)
    # and the planner's next container runs the shim as built
    third = rt.new_id()
    rt("create", "--bundle", rt.bundle(["true"]), third, check=True)
    fd = os.open(f"/proc/{rt.state(third)['pid']}/exe", os.O_RDONLY)
    try:
        assert _sha(fd) == built
    finally:
        os.close(fd)
    rt("start", third, check=True)
