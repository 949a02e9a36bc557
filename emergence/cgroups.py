"""Control groups: find the hierarchies (v1, v2 or hybrid), make the
container's cgroup, write its limits, and remove it again.

Layouts:
  unified  /sys/fs/cgroup is cgroup2; every controller lives there.
  legacy   one cgroup v1 mount per controller (or co-mounted set).
  hybrid   legacy, plus a cgroup2 mount (usually /sys/fs/cgroup/unified)
           that may hold controllers of its own (hugetlb on some hosts).
A controller's limits are written where that controller is attached; the
container joins every mounted hierarchy so it is fully accounted for.

The translation from linux.resources to (file, value) pairs is a pure
function per version (`v1_settings`, `v2_settings`), unit-tested apart from
the file system.
"""

import errno
import os
import time

from .errors import ConfigError, EmergenceError

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


# ---- translation of linux.resources -----------------------------------------

def _dev(d):
    return f"{d['major']}:{d['minor']}"


# (section of linux.resources, key, controller, v1 file), in the order to write:
# a limit before the memsw limit that must not be lower, a period before its quota.
V1_FILES = [
    ("memory", "limit", "memory", "memory.limit_in_bytes"),
    ("memory", "reservation", "memory", "memory.soft_limit_in_bytes"),
    ("memory", "swap", "memory", "memory.memsw.limit_in_bytes"),
    ("memory", "kernel", "memory", "memory.kmem.limit_in_bytes"),
    ("memory", "kernelTCP", "memory", "memory.kmem.tcp.limit_in_bytes"),
    ("memory", "swappiness", "memory", "memory.swappiness"),
    ("cpu", "shares", "cpu", "cpu.shares"),
    ("cpu", "period", "cpu", "cpu.cfs_period_us"),
    ("cpu", "quota", "cpu", "cpu.cfs_quota_us"),
    ("cpu", "burst", "cpu", "cpu.cfs_burst_us"),
    ("cpu", "realtimePeriod", "cpu", "cpu.rt_period_us"),
    ("cpu", "realtimeRuntime", "cpu", "cpu.rt_runtime_us"),
    ("cpu", "idle", "cpu", "cpu.idle"),
    ("cpu", "cpus", "cpuset", "cpuset.cpus"),
    ("cpu", "mems", "cpuset", "cpuset.mems"),
    ("blockIO", "weight", "blkio", "blkio.weight"),
    ("blockIO", "leafWeight", "blkio", "blkio.leaf_weight"),
]


def v1_settings(res):
    """[(controller, file, value)] for cgroup v1, in the order they must be written."""
    out = []
    for section, key, controller, file in V1_FILES:
        value = res.get(section, {}).get(key)
        if value is not None and value != "":
            out.append((controller, file, value))
    if res.get("memory", {}).get("disableOOMKiller"):
        out.append(("memory", "memory.oom_control", 1))
    if "pids" in res:
        limit = res["pids"]["limit"]
        out.append(("pids", "pids.max", limit if limit > 0 else "max"))
    blkio = res.get("blockIO", {})
    for d in blkio.get("weightDevice", ()):
        if "weight" in d:
            out.append(("blkio", "blkio.weight_device", f"{_dev(d)} {d['weight']}"))
        if "leafWeight" in d:
            out.append(("blkio", "blkio.leaf_weight_device", f"{_dev(d)} {d['leafWeight']}"))
    for key, file in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                      ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                      ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                      ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for d in blkio.get(key, ()):
            out.append(("blkio", file, f"{_dev(d)} {d['rate']}"))
    for h in res.get("hugepageLimits", ()):
        out.append(("hugetlb", f"hugetlb.{h['pageSize']}.limit_in_bytes", h["limit"]))
    net = res.get("network", {})
    if "classID" in net:
        out.append(("net_cls", "net_cls.classid", net["classID"]))
    for p in net.get("priorities", ()):
        out.append(("net_prio", "net_prio.ifpriomap", f"{p['name']} {p['priority']}"))
    if "devices" in res:
        out.extend(("devices", f, v) for f, v in device_rules(res["devices"]))
    return out


def device_rules(rules, extra_allow=()):
    """v1 devices.allow/deny writes: start from deny-all, then the rules in order."""
    out = [("devices.deny", "a")]
    for r in list(rules) + list(extra_allow):
        typ = r.get("type", "a") or "a"
        major = r.get("major", -1)
        minor = r.get("minor", -1)
        spec = "a" if typ == "a" and major == -1 and minor == -1 else \
            f"{typ} {'*' if major in (None, -1) else major}:{'*' if minor in (None, -1) else minor}"
        spec = f"{spec} {r.get('access', 'rwm') or 'rwm'}" if spec != "a" else "a"
        out.append(("devices.allow" if r["allow"] else "devices.deny", spec))
    return out


def shares_to_weight(shares):
    """cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000)."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight):
    """v1 blkio weight (10..1000) to v2 io.weight (1..10000)."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def v2_settings(res):
    """[(controller, file, value)] for cgroup v2; 'devices' needs eBPF and is not here."""
    out = []
    mem = res.get("memory", {})
    limit = mem.get("limit")
    if limit is not None:
        out.append(("memory", "memory.max", "max" if limit < 0 else limit))
    if "reservation" in mem:
        r = mem["reservation"]
        out.append(("memory", "memory.low", "max" if r < 0 else r))
    if "swap" in mem:
        swap = mem["swap"]
        if swap < 0:
            out.append(("memory", "memory.swap.max", "max"))
        elif limit is None or limit < 0:
            raise ConfigError("config.json: linux.resources.memory.swap: on cgroup v2 a swap "
                              "limit needs a memory limit too (swap is memory+swap)")
        elif swap < limit:
            raise ConfigError("config.json: linux.resources.memory.swap must be >= memory.limit "
                              "(it counts memory+swap)")
        else:
            out.append(("memory", "memory.swap.max", swap - limit))
    if "swappiness" in mem:
        raise ConfigError("config.json: linux.resources.memory.swappiness has no cgroup v2 "
                          "equivalent; remove it")
    if mem.get("disableOOMKiller"):
        raise ConfigError("config.json: linux.resources.memory.disableOOMKiller is not "
                          "supported on cgroup v2; remove it")
    cpu = res.get("cpu", {})
    if cpu.get("shares"):
        out.append(("cpu", "cpu.weight", shares_to_weight(cpu["shares"])))
    if "quota" in cpu or "period" in cpu:
        quota = cpu.get("quota", -1)
        quota = "max" if quota is None or quota < 0 else quota
        out.append(("cpu", "cpu.max", f"{quota} {cpu.get('period') or 100000}"))
    if "burst" in cpu:
        out.append(("cpu", "cpu.max.burst", cpu["burst"]))
    if "idle" in cpu:
        out.append(("cpu", "cpu.idle", cpu["idle"]))
    if cpu.get("cpus"):
        out.append(("cpuset", "cpuset.cpus", cpu["cpus"]))
    if cpu.get("mems"):
        out.append(("cpuset", "cpuset.mems", cpu["mems"]))
    if "pids" in res:
        limit = res["pids"]["limit"]
        out.append(("pids", "pids.max", limit if limit > 0 else "max"))
    blkio = res.get("blockIO", {})
    if blkio.get("weight"):
        out.append(("io", "io.weight", blkio_to_io_weight(blkio["weight"])))
    for d in blkio.get("weightDevice", ()):
        if d.get("weight"):
            out.append(("io", "io.weight", f"{_dev(d)} {blkio_to_io_weight(d['weight'])}"))
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for d in blkio.get(key, ()):
            out.append(("io", "io.max", f"{_dev(d)} {name}={d['rate']}"))
    for h in res.get("hugepageLimits", ()):
        out.append(("hugetlb", f"hugetlb.{h['pageSize']}.max", h["limit"]))
    for key, value in res.get("unified", {}).items():
        if "/" in key or key.startswith("."):
            raise ConfigError(f"config.json: linux.resources.unified.{key}: not a cgroup file name")
        out.append((key.split(".", 1)[0], key, value))
    return out


def _v2_part(resources, v2):
    """On hybrid hosts only what cgroup2 holds is written there: `unified` and
    the limits of controllers bound to it (hugetlb, on some hosts)."""
    return {k: v for k, v in resources.items()
            if k == "unified" or (k == "hugepageLimits" and "hugetlb" in v2.controllers)}


# ---- the container's cgroup --------------------------------------------------

def systemd_path(spec):
    """'slice:prefix:name' (systemd's cgroupsPath form) as the cgroupfs path systemd
    would use: 'a-b.slice' nests as a.slice/a-b.slice, units are prefix-name.scope."""
    slice_, prefix, name = spec.split(":")
    slice_ = slice_ or "system.slice"
    if not slice_.endswith(".slice") or "/" in slice_:
        raise ConfigError(f"config.json: linux.cgroupsPath {spec!r}: {slice_!r} is not a "
                          "systemd slice name")
    parts = []
    stem = slice_[:-len(".slice")]
    if stem != "-":
        words = stem.split("-")
        parts = ["-".join(words[:i + 1]) + ".slice" for i in range(len(words))]
    unit = name if name.endswith((".scope", ".service")) else \
        (f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
    return "/".join(parts + [unit])


def relative_path(cgroups_path, container_id):
    """The container's cgroup below each hierarchy's root."""
    if not cgroups_path:
        return f"emergence/{container_id}"
    if cgroups_path.count(":") == 2 and "/" not in cgroups_path:
        return systemd_path(cgroups_path)
    path = cgroups_path.strip("/")
    if not path:
        raise ConfigError("config.json: linux.cgroupsPath must not be the root cgroup")
    return path


def _write(path, value):
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _makedirs(mountpoint, rel, created):
    """mkdir -p, remembering which directories we made (deepest last)."""
    path = mountpoint
    for part in rel.split("/"):
        path = os.path.join(path, part)
        try:
            os.mkdir(path)
            created.append(path)
        except FileExistsError:
            pass
    return path


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
                _write(os.path.join(path, f), src.read().strip())


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
                _write(os.path.join(path, "cgroup.subtree_control"),
                       " ".join("+" + c for c in todo))
            except OSError:
                for c in todo:  # enable what can be; a missing one fails later, by name
                    try:
                        _write(os.path.join(path, "cgroup.subtree_control"), "+" + c)
                    except OSError:
                        pass
        path = os.path.join(path, part)


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
                        only = {c for c, _, _ in v2_settings(_v2_part(resources or {}, h))}
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
            v2_res = resources if not v1_wanted else _v2_part(resources, v2[0])
            for _, f, v in v2_settings(v2_res):
                settings.append((v2[0], f, v))
        elif resources.get("unified"):
            raise ConfigError("config.json: linux.resources.unified needs cgroup v2, "
                              "which is not mounted here")
        v1_devices = ctl.get("devices")
        if resources.get("devices") and (v1_devices is None or v1_devices.version != 1) and v2:
            from .devices_bpf import attach
            attach(os.path.join(v2[0].mountpoint, self.rel), resources["devices"])
        for h, f, v in settings:
            if h is None:
                raise ConfigError(f"config.json: linux.resources: the controller for {f} is not "
                                  "mounted on this host; remove that limit")
            path = os.path.join(h.mountpoint, self.rel, f)
            try:
                _write(path, v)
            except OSError as e:
                hint = ""
                if e.errno == errno.ENOENT:
                    hint = " (this kernel or hierarchy does not offer it)"
                elif e.errno == errno.EBUSY and "memory" in f:
                    hint = " (the limit is below current usage)"
                raise EmergenceError(f"cannot set {f} to {v} for cgroup {self.rel}: "
                                     f"{e.strerror}{hint}") from None

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
        """All processes in the container's cgroup, from the first readable hierarchy."""
        for p in self.paths:
            try:
                with open(os.path.join(p, "cgroup.procs")) as f:
                    return [int(x) for x in f.read().split()]
            except OSError:
                continue
        return []

    def remove(self, timeout=2.0):
        """rmdir what create made, deepest first; retry while tasks finish exiting."""
        deadline = time.monotonic() + timeout
        leaves = set(self.paths)
        todo = set(self.created) | leaves
        if self.rel.startswith("emergence/"):  # our default parent goes once empty
            todo |= {os.path.join(h.mountpoint, "emergence") for h in self.hierarchies}
        for path in sorted(todo, key=lambda p: p.count("/"), reverse=True):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if path not in leaves:
                        break  # a shared parent still in use by another container
                    if e.errno == errno.EBUSY and time.monotonic() < deadline:
                        for pid in self._procs_of(path):
                            try:
                                os.kill(pid, 9)
                            except ProcessLookupError:
                                pass
                        time.sleep(0.005)
                        continue
                    raise EmergenceError(f"cannot remove cgroup {path}: {e.strerror}") from None

    @staticmethod
    def _procs_of(path):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []


# ---- freezing (pause/resume) --------------------------------------------------

def set_frozen(freezer_file, frozen, timeout=10.0):
    """Freeze or thaw, and wait until the kernel says it is done."""
    if freezer_file is None:
        raise EmergenceError("no freezer is available for this container (neither the v1 "
                             "freezer controller nor cgroup2 is mounted)")
    v1 = freezer_file.endswith("freezer.state")
    want = ("FROZEN" if frozen else "THAWED") if v1 else ("1" if frozen else "0")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        _write(freezer_file, want)
        if v1:
            with open(freezer_file) as f:
                if f.read().strip() == want:
                    return
        else:
            events = os.path.join(os.path.dirname(freezer_file), "cgroup.events")
            with open(events) as f:
                if f"frozen {1 if frozen else 0}" in f.read().splitlines():
                    return
        if time.monotonic() > deadline:
            raise EmergenceError(f"the container did not {'freeze' if frozen else 'thaw'} "
                                 f"within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
