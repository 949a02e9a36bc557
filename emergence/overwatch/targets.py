"""Where a probe runs: a network namespace named in a way no client can turn
against the node.

A probe request names a container the node knows (an id in the runtime state
root, or a Relay attachment key `att:NETWORK/ID/IFNAME` of such a container);
never a path or a pid. Its netns is entered through a pidfd of the container's
init, checked after it was opened to be that init (the start time the state
recorded), so a pid reused by another process is never joined; setns takes the
pidfd itself (Linux >= 5.8). Nothing a client names is opened, so no FIFO
(a created container's exec.fifo) can be opened, started or waited on.

The standing probe pairs of node.toml (root's file) may still name a netns by
name, path or pid; that path is opened O_PATH first (which never opens a FIFO
or a device), must be a namespace file (nsfs), and only then is reopened for
setns, non-blocking.
"""

import os
import stat

from ..errors import EmergenceError, NotFound
from ..runtime import state

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)


class RefusedName(EmergenceError):
    """A probe endpoint given as something other than a container id (400)."""


def _kernel_has_pidfd_setns():
    """setns(2) on a pidfd: Linux 5.8 and later."""
    try:
        major, minor = (int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


PIDFD_SETNS = _kernel_has_pidfd_setns()


def _shown(name):
    return repr(name if len(name) <= 64 else name[:64] + "...")


def parse(name):
    """(container id, interface or None) named by NAME, a container id or an
    attachment key; RefusedName for a path, a pid or anything else."""
    if not isinstance(name, str) or not name:
        raise RefusedName("probe endpoints are container ids (or att:NETWORK/ID/IFNAME "
                          "attachment keys), given as strings")
    ifname = None
    cid = name
    if name.startswith("att:"):
        parts = name[4:].split("/")
        if len(parts) != 3 or not all(parts):
            raise RefusedName(f"{_shown(name)} is not an attachment key: the probe route "
                              "takes container ids or att:NETWORK/ID/IFNAME keys")
        cid, ifname = parts[1], parts[2]
        if len(ifname) > 15 or not ifname.isascii() or not ifname.isprintable():
            raise RefusedName(f"{_shown(name)}: {ifname[:20]!r} is not an interface name "
                              "(the route takes container ids or att:NETWORK/ID/IFNAME)")
    if not state.valid_id(cid):
        raise RefusedName(f"{_shown(name)} is not a container id: the probe route takes "
                          "the id of a container on this node (or an att:NETWORK/ID/IFNAME "
                          "key), never a path or a pid")
    return cid, ifname


class Container:
    """A container of the runtime state root, by id; `open()` is its init's
    network namespace as a file descriptor for setns (the caller closes it)."""

    def __init__(self, root, cid, ifname=None, name=None):
        self.root, self.id, self.ifname = root, cid, ifname
        self.name = name or cid

    @classmethod
    def known(cls, root, name):
        """NAME resolved against ROOT: RefusedName (a path, a pid, not an id),
        NotFound (an id this node does not know)."""
        cid, ifname = parse(name)
        if cid not in state.list_ids(root):
            if name.isdigit():
                raise RefusedName(f"{_shown(name)} is no container on this node; the probe "
                                  "route takes container ids, never a pid")
            raise NotFound(f"container {cid!r} does not exist on this node")
        return cls(root, cid, ifname, name)

    def __str__(self):
        return self.name

    def open(self):
        try:
            with state.Container.open(self.root, self.id, lock=False) as c:
                pid, start = c.pid, c.data.get("startTime")
        except NotFound:
            raise NotFound(f"container {self.id!r} does not exist on this node") from None
        if not pid:
            raise ConnectionError(f"container {self.id!r} has no init process")
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            raise ConnectionError(f"container {self.id!r} is not running") from None
        try:
            # read after the pidfd was opened: if this is still the init the state
            # recorded, the pidfd refers to it (a pid reused later cannot match)
            now = state.proc_start_time(pid)
            if now is None or now[0] == "Z" or now[1] != start:
                raise ConnectionError(f"container {self.id!r} is not running")
            if PIDFD_SETNS:
                fd, pidfd = pidfd, None
                return fd
            return _proc_netns(pidfd, pid, self.id)
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _proc_netns(pidfd, pid, cid):
    """Before Linux 5.8: the init's /proc/PID/ns/net, opened while the verified
    pidfd shows the init alive (so PID is still that init when it was opened)."""
    import select
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    if p.poll(0):  # readable: the init exited, the pid may be someone else's now
        os.close(fd)
        raise ConnectionError(f"container {cid!r} is not running")
    return fd


_NSFS_DEV = None


def _nsfs_dev():
    global _NSFS_DEV
    if _NSFS_DEV is None:
        _NSFS_DEV = os.stat("/proc/self/ns/net").st_dev
    return _NSFS_DEV


class Path:
    """A netns by name (/run/netns/NAME), path or pid, from root's configuration
    (node.toml's probe_pairs, the `probe` verb run by root)."""

    def __init__(self, where):
        where = str(where)
        self.name = where
        if where.isdigit():
            self.path = f"/proc/{where}/ns/net"
        else:
            self.path = where if "/" in where else f"/run/netns/{where}"

    def __str__(self):
        return self.name

    def open(self):
        try:
            # O_PATH opens no FIFO and no device: nothing here can block or act
            opath = os.open(self.path, os.O_PATH | os.O_CLOEXEC)
        except OSError as e:
            raise ConnectionError(f"netns {self.path} is gone ({e.strerror})") from None
        try:
            st = os.fstat(opath)
            if not stat.S_ISREG(st.st_mode) or st.st_dev != _nsfs_dev():
                raise ConnectionError(f"{self.path} is not a network namespace")
            fd = os.open(f"/proc/self/fd/{opath}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            os.close(opath)
        try:
            import fcntl
            again = os.fstat(fd)
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) or \
                    fcntl.ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET:
                raise ConnectionError(f"{self.path} is not a network namespace")
        except OSError:
            os.close(fd)
            raise ConnectionError(f"{self.path} is not a network namespace") from None
        except ConnectionError:
            os.close(fd)
            raise
        return fd


def target(where):
    """WHERE as something to open: a Container or a Path as it is, else a Path."""
    return where if isinstance(where, (Container, Path)) else Path(where)
