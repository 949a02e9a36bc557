"""`events`: resource usage (`--stats` once, or every --interval) and OOM
notifications, as JSON lines shaped like runc's."""

import os
import sys
import time

from .. import fastjson
from ..errors import StateError
from .state import Container


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def _int(path, default=0):
    text = _read(path)
    try:
        return int(text.strip()) if text and text.strip() != "max" else default
    except ValueError:
        return default


def _keyed(path):
    out = {}
    for line in (_read(path) or "").splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


class Stats:
    """Reads the container's cgroup files, wherever each controller lives."""

    def __init__(self, rel):
        from .cgroups.hierarchy import controller_map, discover
        self.hierarchies = discover()
        self.ctl = controller_map(self.hierarchies)
        self.rel = rel

    def path(self, controller, name):
        h = self.ctl.get(controller)
        if h is None:
            h = next((x for x in self.hierarchies if x.version == 2), None)
            if h is None:
                return None
        return os.path.join(h.mountpoint, self.rel, name)

    def v1(self, controller):
        h = self.ctl.get(controller)
        return h is not None and h.version == 1

    def collect(self):
        data = {}
        if self.v1("cpuacct"):
            p = lambda n: self.path("cpuacct", n)  # noqa: E731
            st = _keyed(p("cpuacct.stat"))
            hz = os.sysconf("SC_CLK_TCK")
            data["cpu"] = {"usage": {
                "total": _int(p("cpuacct.usage")),
                "percpu": [int(x) for x in (_read(p("cpuacct.usage_percpu")) or "").split()],
                "kernel": st.get("system", 0) * 10**9 // hz,
                "user": st.get("user", 0) * 10**9 // hz}}
        else:
            st = _keyed(self.path("cpu", "cpu.stat") or "")
            data["cpu"] = {"usage": {"total": st.get("usage_usec", 0) * 1000,
                                     "kernel": st.get("system_usec", 0) * 1000,
                                     "user": st.get("user_usec", 0) * 1000}}
        cpu_stat = _keyed(self.path("cpu", "cpu.stat") or "")
        data["cpu"]["throttling"] = {"periods": cpu_stat.get("nr_periods", 0),
                                     "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                                     "throttledTime": cpu_stat.get("throttled_time",
                                                                   cpu_stat.get(
                                                                       "throttled_usec", 0)
                                                                   * 1000)}
        if self.v1("memory"):
            p = lambda n: self.path("memory", n)  # noqa: E731
            data["memory"] = {
                "usage": {"usage": _int(p("memory.usage_in_bytes")),
                          "max": _int(p("memory.max_usage_in_bytes")),
                          "limit": _int(p("memory.limit_in_bytes")),
                          "failcnt": _int(p("memory.failcnt"))},
                "swap": {"usage": _int(p("memory.memsw.usage_in_bytes")),
                         "limit": _int(p("memory.memsw.limit_in_bytes"))},
                "raw": _keyed(p("memory.stat"))}
        else:
            p = lambda n: self.path("memory", n)  # noqa: E731
            data["memory"] = {"usage": {"usage": _int(p("memory.current")),
                                        "max": _int(p("memory.peak")),
                                        "limit": _int(p("memory.max"))},
                              "swap": {"usage": _int(p("memory.swap.current")),
                                       "limit": _int(p("memory.swap.max"))},
                              "raw": _keyed(p("memory.stat"))}
        data["pids"] = {"current": _int(self.path("pids", "pids.current") or ""),
                        "limit": _int(self.path("pids", "pids.max") or "")}
        hugetlb = {}
        for size in ("2MB", "1GB"):
            h = self.ctl.get("hugetlb")
            if h is None:
                continue
            if h.version == 1:
                usage = _int(self.path("hugetlb", f"hugetlb.{size}.usage_in_bytes"), -1)
                failcnt = _int(self.path("hugetlb", f"hugetlb.{size}.failcnt"))
            else:
                usage = _int(self.path("hugetlb", f"hugetlb.{size}.current"), -1)
                failcnt = _keyed(self.path("hugetlb", f"hugetlb.{size}.events")).get("max", 0)
            if usage >= 0:
                hugetlb[size] = {"usage": usage, "failcnt": failcnt}
        data["hugetlb"] = hugetlb
        return data

    def oom_count(self):
        """OOM kills so far (memory.oom_control's oom_kill on v1, memory.events on v2)."""
        if self.v1("memory"):
            return _keyed(self.path("memory", "memory.oom_control")).get("oom_kill", 0)
        return _keyed(self.path("memory", "memory.events") or "").get("oom_kill", 0)


def events(root, container_id, stats_once=False, interval=5.0, out=None):
    out = out or sys.stdout
    with Container.open(root, container_id, lock=False) as c:
        if c.status() == "stopped":
            raise StateError(f"container {container_id!r} is stopped")
        cg = c.data.get("cgroup") or {"rel": f"emergence/{container_id}"}
    stats = Stats(cg["rel"])

    def emit(kind, data=None):
        event = {"type": kind, "id": container_id}
        if data is not None:
            event["data"] = data
        out.write(fastjson.dumps(event) + "\n")
        out.flush()

    if stats_once:
        emit("stats", stats.collect())
        return 0
    ooms = stats.oom_count()
    next_stats = time.monotonic()
    while True:
        count = stats.oom_count()
        if count > ooms:
            emit("oom")
            ooms = count
        with Container.open(root, container_id, lock=False) as c:
            if c.status() == "stopped":
                return 0  # (an OOM that killed the init was reported just above)
        now = time.monotonic()
        if now >= next_stats:
            emit("stats", stats.collect())
            next_stats = now + interval
        time.sleep(min(0.2, interval))
