"""One pass per interval over every container: cgroup files opened once and
re-read with pread, network counters from the init's /proc/PID/net/dev (its
netns), no subprocess; whether each init still runs is one poll(2) over their
pidfds per pass.  A value whose file is missing is left out (absent, not
zero) and the log says so once per container and file.

A pass only reads; the bytes are parsed when a render or a view asks (Sample).
`latest` is {container id: Sample}; a Sample's `values` are
{metric: [(extra labels, value)]}.
"""

import os
import select
import time

from ..runtime import state
from ..runtime.cgroups.hierarchy import controller_map, discover

USER_HZ = os.sysconf("SC_CLK_TCK")
SPEC_EVERY = 10  # passes between two reads of a container's limits and shares
# when a pass reads a file: every pass; a limit or share (every SPEC_EVERY passes);
# GATED: every pass only while its counters can move (GATES), else as a limit
EVERY, SPEC, GATED = 0, 1, 2
BLKIO = "blkio.throttle.io_service_bytes_recursive"
# v1 counters that stand still until a limit is set, and limits change only by
# `emergence update`: reading them as seldom as the limits loses no count.
# (RAW: this pass's reading so far, the limits before; LAST: the pass before)
GATES = {
    # CFS throttling counts periods only while a quota is set
    "cpu/cpu.stat": lambda raw, last: (raw.get("cpu/cpu.cfs_quota_us") or b"-1").strip()
    != b"-1",
    # failcnt counts hits of this cgroup's own limit (a parent's counts on the parent)
    "memory/memory.failcnt": lambda raw, last: int(
        raw.get("memory/memory.limit_in_bytes") or 1 << 63) < 1 << 62,
    # the throttle stats list devices once a blkio throttle rule is set
    "blkio/" + BLKIO: lambda raw, last: bool(last.get("blkio/" + BLKIO)),
}
NO = {}          # the extra labels of a value that has none (shared, never changed)
NET_FIELDS = (("receive_bytes", 0), ("receive_packets", 1), ("receive_errors", 2),
              ("receive_packets_dropped", 3), ("transmit_bytes", 8), ("transmit_packets", 9),
              ("transmit_errors", 10), ("transmit_packets_dropped", 11))
NET_NAMES = tuple((f"container_network_{m}_total", i) for m, i in NET_FIELDS)
# cAdvisor leaves these interfaces out of a container's network figures (its
# isIgnoredDevice); so do we, so the series are the ones its dashboards expect
IGNORED_INTERFACES = (b"lo", b"veth", b"docker", b"nerdctl")
PRESSURE = {res: {b"some": f"container_pressure_{res}_waiting_seconds_total",
                  b"full": f"container_pressure_{res}_stalled_seconds_total"}
            for res in ("cpu", "memory", "io")}


def _keyed(data):
    """{key: int} of a "key value" per line file (memory.stat, cpu.stat...)."""
    t = data.split()
    try:  # split, decode and int in C: a pass parses ~10 of these per container
        return dict(zip(map(bytes.decode, t[::2]), map(int, t[1::2])))
    except ValueError:
        pass
    out = {}
    for line in data.splitlines():
        k, _, v = line.partition(b" ")
        try:
            out[k.decode()] = int(v)
        except ValueError:
            pass
    return out


def _pick(data, *keys):
    """The values of KEYS in a "key value" per line file, None where absent:
    memory.stat has ~40 lines of which a pass needs three."""
    data = b"\n" + data
    out = []
    for key in keys:
        at = data.find(b"\n" + key + b" ")
        if at < 0:
            out.append(None)
            continue
        at += len(key) + 2
        end = data.find(b"\n", at)
        out.append(int(data[at:end] if end >= 0 else data[at:]))
    return out


def _number(data):
    text = data.strip()
    return None if text == b"max" else int(text)


def _pread(fd):
    """The whole of a small file from its start (4 kB will do for nearly all)."""
    size = 4096
    try:
        while True:
            data = os.pread(fd, size, 0)
            if len(data) < size:
                return data
            size *= 16
    except OSError:
        return None


class Target:
    """A container being watched: its labels, and the files a pass reads for it."""

    def __init__(self, root, cid, ctl, v2, log):
        with state.Container.open(root, cid, lock=False) as c:
            self.pid = c.pid
            data = c.data
        # the pidfd first: the start time read after it proves it is this init
        self.pidfd = os.pidfd_open(self.pid)
        self.start = state.proc_start_time(self.pid)
        self.id = cid
        self.log = log
        rel = (data.get("cgroup") or {}).get("rel") or f"emergence/{cid}"
        ann = data.get("annotations") or {}
        self.labels = {"id": "/" + rel.strip("/"), "name": cid,
                       "image": ann.get("org.opencontainers.image.ref.name", "")}
        self.annotations = ann
        self.warned = False  # an unparsable reading was said once
        self.passes = -1
        self.raw = {}
        paths = {}
        for controller in ("cpu", "cpuacct", "memory", "pids", "blkio", "io"):
            h = ctl.get(controller)
            if h is None and v2 is not None and controller in ("cpu", "memory", "pids", "io") \
                    and not (controller == "io" and "blkio" in ctl):
                h = v2
            if h is not None:
                paths[controller] = (os.path.join(h.mountpoint, rel), h.version)
        if v2 is not None:
            paths["unified"] = (os.path.join(v2.mountpoint, rel), 2)
        # on a hybrid host the cgroup2 cpu.stat is there without the cpu controller
        # (the container joins every hierarchy): CPU time in µs in one read, where
        # v1 needs two and counts user/system in ticks
        self.layout = Layout(*(paths.get(c, (0, 1))[1] == 2 for c in ("cpu", "memory", "io")),
                             "unified" in paths and os.path.exists(
                                 os.path.join(paths["unified"][0], "cpu.stat")))
        # (controller/file, path, when): read in this order
        self.plan = [(f"{controller}/{name}", os.path.join(paths[controller][0], name), when)
                     for controller, name, when in self.layout.files() if controller in paths]
        self.plan.append(("net/dev", f"/proc/{self.pid}/net/dev", EVERY))
        self.bound = None  # the plan with each path opened: (file, fd or None, when)
        self.started = None if self.start is None else _boot_time() + self.start[1] / USER_HZ

    def alive(self):
        """The init still runs (its pidfd is not readable)."""
        if self.start is None:
            return False
        p = select.poll()
        p.register(self.pidfd, select.POLLIN)
        return not p.poll(0)

    def _bind(self):
        """Open every file of the plan once; one that cannot be is left out of every
        pass, and said once."""
        self.bound = []
        for name, path, when in self.plan:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                fd = None
                self.log(f"overwatch: {self.id}: {path} unreadable ({e.strerror}); "
                         "its metrics are left out")
            self.bound.append((name, fd, when))

    def _unbind(self):
        for _, fd, _ in self.bound or ():
            if fd is not None:
                os.close(fd)
        self.bound = None

    def read(self, now):
        """This pass's reading: the bytes of the files, no parsing.  Limits and
        shares change only by `emergence update`, so they are re-read every
        SPEC_EVERY passes and kept in between; so are the GATES' counters while
        they cannot move."""
        if self.bound is None:
            self._bind()
        self.passes += 1
        fresh = self.passes % SPEC_EVERY == 0
        last, raw = self.raw, {}
        for name, fd, when in self.bound:
            if fd is None:
                raw[name] = None
            elif when == EVERY or fresh or (when == GATED and GATES[name](raw, last)):
                raw[name] = _pread(fd)
            else:
                raw[name] = last.get(name)
        self.raw = raw
        return Sample(self, raw, now)

    def close(self):
        self._unbind()
        os.close(self.pidfd)


class Layout:
    """Which files hold a container's figures and how to read them: v1 or v2 per
    controller (a hybrid host mixes them), PSI where cgroup2 is mounted."""

    def __init__(self, cpu_v2, mem_v2, io_v2, unified_cpu=False):
        self.cpu_v2, self.mem_v2, self.io_v2 = cpu_v2, mem_v2, io_v2
        self.unified_cpu = unified_cpu and not cpu_v2

    def files(self):
        """(controller, file, when it is read) of every file a pass reads."""
        if self.cpu_v2:
            yield from (("cpu", "cpu.stat", EVERY), ("cpu", "cpu.max", SPEC),
                        ("cpu", "cpu.weight", SPEC))
        else:
            if self.unified_cpu:
                yield "unified", "cpu.stat", EVERY
            else:
                yield from (("cpuacct", "cpuacct.usage", EVERY),
                            ("cpuacct", "cpuacct.stat", EVERY))
            yield from (("cpu", "cpu.cfs_quota_us", SPEC), ("cpu", "cpu.stat", GATED),
                        ("cpu", "cpu.cfs_period_us", SPEC), ("cpu", "cpu.shares", SPEC))
        if self.mem_v2:
            yield from (("memory", "memory.current", EVERY), ("memory", "memory.stat", EVERY),
                        ("memory", "memory.events", EVERY), ("memory", "memory.max", SPEC))
        else:
            yield from (("memory", "memory.usage_in_bytes", EVERY),
                        ("memory", "memory.stat", EVERY), ("memory", "memory.oom_control", EVERY),
                        ("memory", "memory.limit_in_bytes", SPEC),
                        ("memory", "memory.failcnt", GATED))
        yield from (("pids", "cgroup.procs", EVERY), ("pids", "pids.current", EVERY))
        if self.io_v2:
            yield "io", "io.stat", EVERY
        else:
            yield "blkio", BLKIO, GATED
        for res in PRESSURE:
            yield "unified", f"{res}.pressure", EVERY

    def values(self, raw, started, now):
        """{metric: [(extra labels, value)]} of one reading (RAW: {file: bytes or None})."""
        v = {}

        def put(name, value):   # a value without extra labels (most of them)
            if value is not None:
                v[name] = [(NO, value)]

        get = raw.get
        if self.cpu_v2 or self.unified_cpu:
            st = get("cpu/cpu.stat" if self.cpu_v2 else "unified/cpu.stat")
            if st is not None:
                st = _keyed(st)
                v["container_cpu_usage_seconds_total"] = [
                    ({"cpu": "total"}, st.get("usage_usec", 0) / 1e6)]
                put("container_cpu_user_seconds_total", st.get("user_usec", 0) / 1e6)
                put("container_cpu_system_seconds_total", st.get("system_usec", 0) / 1e6)
                if "nr_periods" in st:  # v2 with the cpu controller
                    put("container_cpu_cfs_periods_total", st["nr_periods"])
                    put("container_cpu_cfs_throttled_periods_total", st["nr_throttled"])
                    put("container_cpu_cfs_throttled_seconds_total",
                        st["throttled_usec"] / 1e6)
        else:
            usage = get("cpuacct/cpuacct.usage")
            if usage is not None:
                v["container_cpu_usage_seconds_total"] = [({"cpu": "total"}, int(usage) / 1e9)]
            st = get("cpuacct/cpuacct.stat")
            if st is not None:
                st = _keyed(st)
                put("container_cpu_user_seconds_total", st.get("user", 0) / USER_HZ)
                put("container_cpu_system_seconds_total", st.get("system", 0) / USER_HZ)
        if self.cpu_v2:
            cmax = get("cpu/cpu.max")
            if cmax is not None:
                quota, period = cmax.split()
                if quota != b"max":
                    put("container_spec_cpu_quota", int(quota))
                put("container_spec_cpu_period", int(period))
            weight = get("cpu/cpu.weight")
            if weight is not None:  # cAdvisor's inverse of the runtimes' shares->weight
                put("container_spec_cpu_shares", 2 + ((int(weight) - 1) * 262142) // 9999)
        else:
            st = get("cpu/cpu.stat")
            if st is not None:
                st = _keyed(st)
                put("container_cpu_cfs_periods_total", st.get("nr_periods"))
                put("container_cpu_cfs_throttled_periods_total", st.get("nr_throttled"))
                if "throttled_time" in st:
                    put("container_cpu_cfs_throttled_seconds_total", st["throttled_time"] / 1e9)
            quota = get("cpu/cpu.cfs_quota_us")
            if quota is not None and int(quota) > 0:
                put("container_spec_cpu_quota", int(quota))
            period = get("cpu/cpu.cfs_period_us")
            if period is not None:
                put("container_spec_cpu_period", int(period))
            shares = get("cpu/cpu.shares")
            if shares is not None:
                put("container_spec_cpu_shares", int(shares))

        usage = get("memory/memory.current" if self.mem_v2 else "memory/memory.usage_in_bytes")
        stat = get("memory/memory.stat")
        if stat is not None:
            inactive, rss, cache = _pick(stat, b"inactive_file", b"anon", b"file") \
                if self.mem_v2 else _pick(stat, b"total_inactive_file", b"total_rss",
                                          b"total_cache")
            put("container_memory_rss", rss)
            put("container_memory_cache", cache)
        if usage is not None:
            usage = int(usage)
            put("container_memory_usage_bytes", usage)
            if stat is not None:
                put("container_memory_working_set_bytes", max(0, usage - (inactive or 0)))
        if self.mem_v2:
            ev = get("memory/memory.events")
            if ev is not None:
                ev = _keyed(ev)
                put("container_oom_events_total", ev.get("oom_kill"))
                put("container_memory_failcnt", ev.get("max"))  # times usage hit the limit
            lim = get("memory/memory.max")
        else:
            fail = get("memory/memory.failcnt")
            if fail is not None:
                put("container_memory_failcnt", int(fail))
            oc = get("memory/memory.oom_control")
            if oc is not None:
                put("container_oom_events_total", _pick(oc, b"oom_kill")[0])
            lim = get("memory/memory.limit_in_bytes")
        if lim is not None:
            put("container_spec_memory_limit_bytes", _number(lim) or 0)

        procs = get("pids/cgroup.procs")
        if procs is not None:
            put("container_processes", procs.count(b"\n"))
        threads = get("pids/pids.current")
        if threads is not None:
            put("container_threads", int(threads))

        if self.io_v2:
            for line in (get("io/io.stat") or b"").splitlines():
                dev, *fields = line.decode().split()
                kv = dict(f.split("=", 1) for f in fields)
                v.setdefault("container_fs_reads_bytes_total", []).append(
                    ({"device": dev}, int(kv.get("rbytes", 0))))
                v.setdefault("container_fs_writes_bytes_total", []).append(
                    ({"device": dev}, int(kv.get("wbytes", 0))))
        else:
            data = get("blkio/" + BLKIO)
            for line in (data or b"").splitlines():
                parts = line.decode().split()
                if len(parts) == 3 and parts[1] in ("Read", "Write"):
                    v.setdefault("container_fs_reads_bytes_total" if parts[1] == "Read"
                                 else "container_fs_writes_bytes_total", []).append(
                        ({"device": parts[0]}, int(parts[2])))

        for res, names in PRESSURE.items():
            # "some avg10=0.00 avg60=0.00 avg300=0.00 total=123" (and "full ...")
            for line in (get(f"unified/{res}.pressure") or b"").splitlines():
                name = names.get(line[:4])
                at = line.rfind(b" total=")
                if name and at > 0:
                    v[name] = [(NO, int(line[at + 7:]) / 1e6)]

        for line in (get("net/dev") or b"").splitlines()[2:]:
            name, _, rest = line.partition(b":")
            name = name.strip()
            if name.lower().startswith(IGNORED_INTERFACES):
                continue
            f = rest.split()
            extra = {"interface": name.decode()}
            for metric, i in NET_NAMES:
                v.setdefault(metric, []).append((extra, int(f[i])))

        put("container_start_time_seconds", started)
        put("container_last_seen", now)
        return v


class Sample:
    """One container's reading in one pass.  It is parsed into values only when
    something asks (a render, `top`, `stats`): with Prometheus scraping every
    15 s, 14 of 15 passes are never looked at, and a pass that only reads stays
    far under its 1% of a core."""

    __slots__ = ("labels", "annotations", "pid", "raw", "seen", "_target", "_values")

    def __init__(self, target, raw, seen):
        self.labels, self.annotations, self.pid = target.labels, target.annotations, target.pid
        self.raw, self.seen, self._target, self._values = raw, seen, target, None

    @property
    def values(self):
        """{metric: [(extra labels, value)]}, parsed once."""
        if self._values is None:
            t = self._target
            try:
                self._values = t.layout.values(self.raw, t.started, self.seen)
            except (ValueError, IndexError) as e:  # a file this parser does not know
                if not t.warned:
                    t.warned = True
                    t.log(f"overwatch: {t.id}: unreadable cgroup figures ({e}); "
                          "its metrics are left out")
                self._values = {}
        return self._values


_BOOT = []


def _boot_time():
    if not _BOOT:
        with open("/proc/stat") as f:
            _BOOT.append(next(int(line.split()[1]) for line in f if line.startswith("btime")))
    return _BOOT[0]


class Collector:
    """Watches every container under ROOT; `collect()` is one pass."""

    def __init__(self, root, log=lambda msg: None, mountinfo="/proc/self/mountinfo"):
        self.root = root
        self.log = log
        hierarchies = discover(mountinfo)
        self.ctl = controller_map(hierarchies)
        self.v2 = next((h for h in hierarchies if h.version == 2), None)
        self.targets = {}
        self.latest = {}
        self.taken = 0.0

    def collect(self):
        now = time.time()
        seen = set()
        out = {}
        for cid in state.list_ids(self.root):
            t = self.targets.get(cid)
            if t is None:
                try:
                    t = Target(self.root, cid, self.ctl, self.v2, self.log)
                except Exception:  # deleted or half-made: not a container to watch now
                    continue
                if not t.alive():
                    t.close()
                    continue
                self.targets[cid] = t
            seen.add(cid)
            out[cid] = t.read(now)
        # an init gone (before or during its sample): drop it rather than report half
        gone = set(self.targets) - seen
        poller, by_fd = select.poll(), {}
        for cid in seen:
            by_fd[self.targets[cid].pidfd] = cid
            poller.register(self.targets[cid].pidfd, select.POLLIN)
        gone.update(by_fd[fd] for fd, _ in poller.poll(0))
        for cid in gone:
            out.pop(cid, None)
            self.targets.pop(cid).close()
        self.latest, self.taken = out, now
        return out

    def close(self):
        for t in self.targets.values():
            t.close()
        self.targets.clear()
