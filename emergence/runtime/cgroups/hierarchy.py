"""Where the cgroup hierarchies are: v1, v2 or hybrid, read from mountinfo.

Layouts:
  unified  /sys/fs/cgroup is cgroup2; every controller lives there.
  legacy   one cgroup v1 mount per controller (or co-mounted set).
  hybrid   legacy, plus a cgroup2 mount (usually /sys/fs/cgroup/unified)
           that may hold controllers of its own (hugetlb on some hosts).
"""

import os

CGROUP_ROOT = "/sys/fs/cgroup"


class Hierarchy:
    """One mounted cgroup hierarchy."""

    __slots__ = ("mountpoint", "version", "controllers", "name")

    def __init__(self, mountpoint, version, controllers, name):
        self.mountpoint = mountpoint
        self.version = version
        self.controllers = controllers  # set of controller names attached here
        self.name = name                # directory name inside a container's /sys/fs/cgroup

    def __repr__(self):
        return f"Hierarchy({self.mountpoint!r}, v{self.version}, {sorted(self.controllers)})"


def _unescape(field):
    if "\\" not in field:
        return field
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
                .replace("\\134", "\\")


def _shadowed(i, mountpoint, last):
    """Is MOUNTPOINT (line I) hidden by a mount made later on it or on one of its
    parents?  LAST: each mount point's last line."""
    path = mountpoint
    while True:
        if last.get(path, -1) > i:
            return True
        if path == "/":
            return False
        path = os.path.dirname(path) or "/"


# This process's last reading: (pid, descriptor of its mountinfo, that file's
# (st_dev, st_ino), the mount namespace's inode, the hierarchies).  A host
# with many mounts makes mountinfo long (a thousand lines here: 10-25 ms a
# call, on every create, exec and delete); the kernel marks an open mountinfo
# POLLPRI once the namespace's mounts change, so an unchanged one is not read
# again.  A planner's worker reads it in its warm-up, before any call (the
# descriptor kept where taking a call leaves it: parent.keep).
_last = None


def discover(mountinfo=None):
    """The visible cgroup hierarchies of this mount namespace (first mount of each);
    of the mountinfo file MOUNTINFO if given (read each time)."""
    global _last
    if mountinfo is not None:
        with open(mountinfo) as f:
            return _parse(f.read())
    if _last is not None:
        if _unchanged(_last):
            # cgroup2's controllers change without a mount: a v1 hierarchy
            # unmounted gives its controller back only once its cgroups are gone
            return [Hierarchy(h.mountpoint, 2, _v2_controllers(h.mountpoint), h.name)
                    if h.version == 2 else h for h in _last[4]]
        _forget(_last)
        _last = None
    from ..parent import keep
    fd = keep(os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC))
    try:
        st = os.fstat(fd)
        ns = os.stat("/proc/self/ns/mnt").st_ino
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except BaseException:
        os.close(fd)
        raise
    found = _parse(b"".join(chunks).decode("utf-8", "surrogateescape"))
    _last = (os.getpid(), fd, (st.st_dev, st.st_ino), ns, found)
    return list(found)


def _ours(last):
    """Is LAST's descriptor still the one it opened?  (A planner's worker closes
    every descriptor below the caller's as it takes a call.)"""
    try:
        st = os.fstat(last[1])
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == last[2]


def _unchanged(last):
    """LAST still says what mountinfo would: this process opened it (a fork
    shares the open file, and with it the kernel's record of what was seen), in
    this mount namespace, and no mount or unmount came since."""
    import select
    if last[0] != os.getpid() or not _ours(last):
        return False
    try:
        if os.stat("/proc/self/ns/mnt").st_ino != last[3]:
            return False
    except OSError:
        return False
    p = select.poll()
    p.register(last[1], select.POLLPRI)
    return not any(e & (select.POLLPRI | select.POLLERR | select.POLLNVAL) for _, e in p.poll(0))


def _forget(last):
    if _ours(last):
        os.close(last[1])


def prefault(_scratch):
    """A planner's worker reads the hierarchies before it takes a call."""
    discover()


def _v2_controllers(mountpoint):
    try:
        with open(os.path.join(mountpoint, "cgroup.controllers")) as c:
            return set(c.read().split())
    except OSError:
        return set()


def _parse(text):
    found = []
    seen = set()
    lines = text.splitlines()
    mountpoints = [_unescape(line.split(None, 5)[4]) for line in lines]
    last = {mp: i for i, mp in enumerate(mountpoints)}
    for i, line in enumerate(lines):
        pre, _, post = line.partition(" - ")
        fstype, _source, superopts = (post.split() + ["", ""])[:3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        fields = pre.split()
        root, mountpoint = _unescape(fields[3]), mountpoints[i]
        if root != "/":
            continue  # a bind of a sub-cgroup, e.g. inside a container
        if _shadowed(i, mountpoint, last):
            continue
        if fstype == "cgroup2":
            key = "cgroup2"
            if key in seen:
                continue
            found.append(Hierarchy(mountpoint, 2, _v2_controllers(mountpoint),
                                   "unified" if mountpoint != CGROUP_ROOT else ""))
        else:
            opts = superopts.split(",")
            controllers = {o for o in opts if o not in ("rw", "ro") and "=" not in o
                           and o not in ("noprefix", "xattr", "clone_children",
                                         "cpuset_v2_mode", "favordynmods")}
            names = [o for o in opts if o.startswith("name=")]
            key = ",".join(sorted(controllers) + names)
            if key in seen:
                continue
            controllers |= set(names)
            found.append(Hierarchy(mountpoint, 1, controllers, os.path.basename(mountpoint)))
        seen.add(key)
    return found


def layout(hierarchies):
    v1 = any(h.version == 1 for h in hierarchies)
    v2 = any(h.version == 2 for h in hierarchies)
    if v1 and v2:
        return "hybrid"
    return "legacy" if v1 else ("unified" if v2 else "none")


def controller_map(hierarchies):
    """controller name -> Hierarchy where it is attached."""
    m = {}
    for h in hierarchies:
        for c in h.controllers:
            m.setdefault(c, h)
    return m
