"""What a host measures of its own load, for the leader's score: CPU busy,
memory in use (working set: total − available), disk busy time, network
throughput against the link, and PSI where the kernel has it — sampled from
/proc at every heartbeat and summarised as windows (1 and 5 minutes: mean and
variance), the shape Trimaran's load-aware plugins read.

Each figure is a fraction in [0, 1] like the score's utilisation, so a
window's mean can stand for U[h][r] directly.  Reading /proc costs a few
hundred microseconds; nothing here imports more than the stdlib.
"""

import math
import os
import time
from collections import deque

WINDOWS = {"w1": 60.0, "w5": 300.0}
RESOURCES = ("cpu", "memory", "disk_io", "net")
DEFAULT_LINK = 125e6  # bytes/s (1 Gbit/s) when the interfaces do not say


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cpu_times():
    line = _read("/proc/stat").split("\n", 1)[0].split()
    if not line or line[0] != "cpu":
        return None
    v = [int(x) for x in line[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v[:8]), idle


def _memory():
    info = {}
    for line in _read("/proc/meminfo").splitlines():
        k, _, rest = line.partition(":")
        if k in ("MemTotal", "MemAvailable"):
            info[k] = int(rest.split()[0])
    total = info.get("MemTotal")
    if not total:
        return 0.0
    return max(0.0, min(1.0, 1.0 - info.get("MemAvailable", total) / total))


def _disks():
    """Milliseconds spent doing I/O, per whole disk (not partitions)."""
    out = {}
    for line in _read("/proc/diskstats").splitlines():
        f = line.split()
        if len(f) > 12 and os.path.exists(f"/sys/block/{f[2]}") and \
                not f[2].startswith(("loop", "ram", "zram")):
            out[f[2]] = int(f[12])
    return out


def _net_bytes():
    total = 0
    for line in _read("/proc/net/dev").splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() != "lo":
            cols = rest.split()
            if len(cols) > 8:
                total += int(cols[0]) + int(cols[8])
    return total


def _psi():
    out = {}
    for r in ("cpu", "memory", "io"):
        first = _read(f"/proc/pressure/{r}").split("\n", 1)[0]
        for part in first.split()[1:]:
            k, _, v = part.partition("=")
            if k == "avg10":
                out[r] = float(v) / 100.0
    return out


class HostLoad:
    """Samples this host's load and keeps the last five minutes of samples.

    LINK is the network's capacity in bytes/s (both directions together
    count against it, as the score has one `net` resource)."""

    def __init__(self, link=None, clock=time.monotonic):
        self.link = float(link or DEFAULT_LINK)
        self.clock = clock
        self.samples = deque()  # (t, {resource: fraction})
        self.psi = {}
        self._last = None

    def _raw(self):
        return self.clock(), _cpu_times(), _disks(), _net_bytes()

    def sample(self):
        """Take one sample (the first call only sets the baseline)."""
        now = self._raw()
        last, self._last = self._last, now
        self.psi = _psi()
        if last is None:
            return None
        dt = now[0] - last[0]
        if dt <= 0:
            return None
        fig = {"memory": _memory()}
        if now[1] and last[1]:
            total, idle = now[1][0] - last[1][0], now[1][1] - last[1][1]
            fig["cpu"] = max(0.0, min(1.0, 1.0 - idle / total)) if total > 0 else 0.0
        busy = [now[2][d] - last[2][d] for d in now[2] if d in last[2]]
        fig["disk_io"] = max(0.0, min(1.0, max(busy, default=0) / (dt * 1000.0)))
        fig["net"] = max(0.0, min(1.0, (now[3] - last[3]) / dt / self.link))
        self.samples.append((now[0], fig))
        horizon = now[0] - max(WINDOWS.values())
        while self.samples and self.samples[0][0] < horizon:
            self.samples.popleft()
        return fig

    def windows(self):
        """{"w1": {r: [mean, variance]}, "w5": …, "n": samples, "psi": {…}}, or
        None before the second sample."""
        if not self.samples:
            return None
        end = self.samples[-1][0]
        out = {"n": len(self.samples), "psi": dict(self.psi)}
        for name, span in WINDOWS.items():
            figs = [f for t, f in self.samples if t >= end - span]
            w = {}
            for r in RESOURCES:
                xs = [f[r] for f in figs if r in f]
                if xs:
                    m = sum(xs) / len(xs)
                    w[r] = [round(m, 6), round(sum((x - m) ** 2 for x in xs) / len(xs), 8)]
            out[name] = w
        return out


def corrected(load, ts, placed, capacity, now, stale_after):
    """U[h] for the score from a host's published LOAD (measured at TS), in
    the manner of Trimaran's load-aware plugins: the 1-minute means, plus the
    demand of the tasks PLACED there since (dispatched after TS), which the
    measurement cannot have seen yet.  None when there is no usable
    measurement (absent, or older than STALE_AFTER): the caller falls back
    to allocations.  Returns (util, how) with HOW a short phrase for records."""
    if not load or not load.get("w1") or ts is None:
        return None, "no telemetry"
    age = now - ts
    if not math.isfinite(age) or age > stale_after:
        return None, f"telemetry stale ({age:.0f}s old)"
    util = {r: mv[0] for r, mv in load["w1"].items()}
    since = [d for at, d in placed if at > ts]
    for d in since:
        for r in RESOURCES:
            c = capacity.get(r)
            want = d.get(r, 0.0)
            if want:
                util[r] = util.get(r, 0.0) + (want / c if c else want)
    how = f"measured {age:.1f}s ago"
    if since:
        how += f" + {len(since)} placed since"
    return util, how
