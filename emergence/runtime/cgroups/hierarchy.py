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
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
                .replace("\\134", "\\")


def _shadowed(mountpoint, later):
    """Is MOUNTPOINT hidden by a mount made later on it or on one of its parents?"""
    for other in later:
        if other == mountpoint or mountpoint.startswith(other.rstrip("/") + "/"):
            return True
    return False


def discover(mountinfo="/proc/self/mountinfo"):
    """The visible cgroup hierarchies of this mount namespace (first mount of each)."""
    found = []
    seen = set()
    with open(mountinfo) as f:
        lines = f.read().splitlines()
    mountpoints = [_unescape(line.split(None, 5)[4]) for line in lines]
    for i, line in enumerate(lines):
        pre, _, post = line.partition(" - ")
        fstype, _source, superopts = (post.split() + ["", ""])[:3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        fields = pre.split()
        root, mountpoint = _unescape(fields[3]), mountpoints[i]
        if root != "/":
            continue  # a bind of a sub-cgroup, e.g. inside a container
        if _shadowed(mountpoint, mountpoints[i + 1:]):
            continue
        if fstype == "cgroup2":
            key = "cgroup2"
            if key in seen:
                continue
            try:
                with open(os.path.join(mountpoint, "cgroup.controllers")) as c:
                    controllers = set(c.read().split())
            except OSError:
                controllers = set()
            found.append(Hierarchy(mountpoint, 2, controllers,
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
