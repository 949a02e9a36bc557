"""The container's cgroup across every mounted hierarchy: make it, write its
limits where each controller lives, list its processes, and remove it again.

The container joins every hierarchy so it is fully accounted for.  On hybrid
hosts a cgroup2 controller is enabled only when the container uses it, so a
controller stays free to be mounted as v1 by others.
"""

import errno
import os
import time

from ...errors import ConfigError, EmergenceError
from .hierarchy import controller_map, layout
from .resources import v1_settings, v2_part, v2_settings


def write(path, value):
    """Write VALUE to a cgroup file in one write(2), as the kernel expects."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        # surrogateescape: a value from the command line goes as the bytes it came as
        os.write(fd, str(value).encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)


def _makedirs(mountpoint, rel, created, patience=2.0):
    """mkdir -p, remembering which directories we made (deepest last).

    A parent may vanish between two mkdirs: the default parent `emergence/`
    is removed by whichever `delete` empties it, while another `create` is
    making its child there.  Then the walk starts again from the top, for up
    to PATIENCE seconds (one retry is what that race needs; a busy host may
    preempt us between the two mkdirs more than once)."""
    deadline = time.monotonic() + patience
    while True:
        path = mountpoint
        try:
            for part in rel.split("/"):
                path = os.path.join(path, part)
                try:
                    os.mkdir(path)
                    created.append(path)
                except FileExistsError:
                    pass
            return path
        except FileNotFoundError:
            if path == os.path.join(mountpoint, rel.split("/")[0]) \
                    or time.monotonic() > deadline:
                raise  # the mount point itself is gone, or something keeps removing


def _inherit_cpuset(mountpoint, rel):
    """A new v1 cpuset cgroup starts empty and cannot take tasks: copy the parent's sets."""
    path = mountpoint
    for part in rel.split("/"):
        parent, path = path, os.path.join(path, part)
        for f in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(path, f)) as cur:
                if cur.read().strip():
                    continue
            with open(os.path.join(parent, f)) as src:
                write(os.path.join(path, f), src.read().strip())


def _enable_v2_controllers(mountpoint, rel, only=None):
    """Enable controllers from the root down to the leaf's parent: all available
    ones, or just ONLY (on hybrid hosts, where a controller enabled in cgroup2
    can no longer be mounted as v1 by anyone else)."""
    path = mountpoint
    for part in rel.split("/"):
        try:
            with open(os.path.join(path, "cgroup.controllers")) as f:
                wanted = [c for c in f.read().split() if only is None or c in only]
            with open(os.path.join(path, "cgroup.subtree_control")) as f:
                have = set(f.read().split())
        except OSError:
            return
        todo = [c for c in wanted if c not in have]
        if todo:
            try:
                write(os.path.join(path, "cgroup.subtree_control"),
                       " ".join("+" + c for c in todo))
            except OSError:
                for c in todo:  # enable what can be; a missing one fails later, by name
                    try:
                        write(os.path.join(path, "cgroup.subtree_control"), "+" + c)
                    except OSError:
                        pass
        path = os.path.join(path, part)


# Where only the BFQ scheduler offers a block I/O weight: its file, which
# takes the v1 range 10..1000 on both versions.
_BFQ = {"blkio.weight": "blkio.bfq.weight", "io.weight": "io.bfq.weight"}


def _rt_hint(leaf):
    """Why a realtime runtime does not fit: the parent's own budget."""
    parent = os.path.dirname(leaf)
    try:
        with open(os.path.join(parent, "cpu.rt_runtime_us")) as f:
            budget = f.read().strip()
    except OSError:
        return ""
    return (f" (a cgroup's realtime runtime must fit in its parent's: {parent} has "
            f"cpu.rt_runtime_us {budget}; raise the parent's budget first, or point "
            "linux.cgroupsPath at a parent that has one)")


class Cgroup:
    """The container's cgroup across all hierarchies."""

    def __init__(self, hierarchies, rel, created=None):
        self.hierarchies = hierarchies
        self.rel = rel
        self.created = created if created is not None else []

    @property
    def paths(self):
        return [os.path.join(h.mountpoint, self.rel) for h in self.hierarchies]

    def procs_files(self):
        return [os.path.join(p, "cgroup.procs") for p in self.paths]

    def create(self, resources=None):
        hybrid = layout(self.hierarchies) == "hybrid"
        for h in self.hierarchies:
            try:
                _makedirs(h.mountpoint, self.rel, self.created)
                if h.version == 1 and "cpuset" in h.controllers:
                    _inherit_cpuset(h.mountpoint, self.rel)
                if h.version == 2:
                    only = None
                    if hybrid:
                        only = {c for c, _, _ in v2_settings(v2_part(resources or {}, h))}
                    if only is None or only:
                        _enable_v2_controllers(h.mountpoint, self.rel, only)
            except OSError as e:
                raise EmergenceError(f"cannot create cgroup {self.rel} under {h.mountpoint}: "
                                     f"{e.strerror}") from None

    def apply(self, resources):
        """Write linux.resources; every failure names the file and the value."""
        if not resources:
            return
        ctl = controller_map(self.hierarchies)
        settings = []
        v1_wanted = any(h.version == 1 for h in self.hierarchies)
        if v1_wanted:
            for c, f, v in v1_settings(resources):
                h = ctl.get(c)
                if h is None or h.version == 1:  # v2-bound controllers are written below
                    settings.append((h, f, v))
        v2 = [h for h in self.hierarchies if h.version == 2]
        if v2:
            v2_res = resources if not v1_wanted else v2_part(resources, v2[0])
            for _, f, v in v2_settings(v2_res):
                settings.append((v2[0], f, v))
        elif resources.get("unified"):
            raise ConfigError("config.json: linux.resources.unified needs cgroup v2, "
                              "which is not mounted here")
        v1_devices = ctl.get("devices")
        if resources.get("devices") and (v1_devices is None or v1_devices.version != 1) and v2:
            from .devices_bpf import attach
            attach(os.path.join(v2[0].mountpoint, self.rel), resources["devices"])
        rt = resources.get("cpu", {}).get("realtimeRuntime")
        cpu = ctl.get("cpu")
        if rt and cpu is not None and cpu.version == 1:
            self._grant_realtime(cpu.mountpoint, rt, resources["cpu"].get("realtimePeriod"))
        for h, f, v in settings:
            if h is None:
                raise ConfigError(f"config.json: linux.resources: the controller for {f} is not "
                                  "mounted on this host; remove that limit")
            path = os.path.join(h.mountpoint, self.rel, f)
            if f in _BFQ and " " not in str(v) and not os.path.exists(path):
                bfq = os.path.join(h.mountpoint, self.rel, _BFQ[f])
                if os.path.exists(bfq):  # only BFQ offers a weight here (runc does the same)
                    f, v, path = _BFQ[f], resources["blockIO"]["weight"], bfq
            try:
                write(path, v)
            except OSError as e:
                hint = ""
                if e.errno == errno.ENOENT:
                    hint = " (this kernel or hierarchy does not offer it)"
                elif e.errno == errno.EBUSY and "memory" in f:
                    hint = " (the limit is below current usage)"
                elif e.errno == errno.EINVAL and f == "cpu.rt_runtime_us":
                    hint = _rt_hint(os.path.dirname(path))
                raise EmergenceError(f"cannot set {f} to {v} for cgroup {self.rel}: "
                                     f"{e.strerror}{hint}") from None

    def _grant_realtime(self, mountpoint, runtime, period):
        """Make room for a realtime runtime in the parents that are ours."""
        from .realtime import grant_parents
        ours = {p for p in self.created if p.startswith(mountpoint + "/")}
        if self.rel.startswith("emergence/"):
            ours.add(os.path.join(mountpoint, "emergence"))
        leaf = os.path.join(mountpoint, self.rel)
        try:
            if period is None:
                with open(os.path.join(leaf, "cpu.rt_period_us")) as f:
                    period = int(f.read())
            grant_parents(mountpoint, self.rel, runtime, period, ours)
        except OSError:
            pass  # the leaf's own write below fails and names the parent to raise

    def freezer_file(self):
        """Where freezing is controlled: v1 freezer.state, else v2 cgroup.freeze."""
        ctl = controller_map(self.hierarchies)
        h = ctl.get("freezer")
        if h is not None and h.version == 1:
            return os.path.join(h.mountpoint, self.rel, "freezer.state")
        for h in self.hierarchies:
            if h.version == 2:
                return os.path.join(h.mountpoint, self.rel, "cgroup.freeze")
        return None

    def pids(self):
        """All processes in the container's cgroup and the cgroups it made below
        (systemd in a container does), from the first readable hierarchy."""
        for p in self.paths:
            try:
                with open(os.path.join(p, "cgroup.procs")) as f:
                    pids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for sub in _below(p):
                pids += self._procs_of(sub)
            return pids
        return []

    def remove(self, timeout=2.0):
        """rmdir what create made, deepest first; retry while tasks finish exiting."""
        deadline = time.monotonic() + timeout
        leaves = set(self.paths)
        todo = set(self.created) | leaves
        if self.rel.startswith("emergence/"):  # our default parent goes once empty
            todo |= {os.path.join(h.mountpoint, "emergence") for h in self.hierarchies}
        for path in sorted(todo, key=lambda p: p.count("/"), reverse=True):
            if path in leaves:
                self._rmdir_busy(path, deadline, children=True)
                continue
            try:  # a shared parent goes only once no other container uses it
                os.rmdir(path)
            except OSError:
                pass

    def _rmdir_busy(self, path, deadline, children=False):
        """rmdir cgroup PATH, killing what still runs in it, until DEADLINE.  With
        CHILDREN, the cgroups the container made inside its own (systemd does) go
        first, deepest first, as runc; they are looked for only when they block."""
        while True:
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno == errno.ENAMETOOLONG:  # too long a name to have been made
                    return
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise EmergenceError(f"cannot remove cgroup {path}: {e.strerror}") from None
                if children:
                    children = False
                    for sub in _below(path):
                        self._rmdir_busy(sub, deadline)
                    continue
                for pid in self._procs_of(path):
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                time.sleep(0.005)

    @staticmethod
    def _procs_of(path):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []


def _below(path):
    """The cgroups under PATH, deepest first (never following links: cgroupfs has none)."""
    found = []
    try:
        entries = list(os.scandir(path))
    except OSError:
        return found
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            found += _below(e.path)
            found.append(e.path)
    return found
