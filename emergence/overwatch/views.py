"""The numbers `podman stats` shows (CPU %, memory / limit, net and block I/O,
pids), plus throttling and pressure for `top`: two passes of the collector,
rates over the time between them."""

import time

from .collector import Collector


def _sum(values, name):
    points = values.get(name)
    return None if points is None else sum(v for _, v in points)


def _first(values, name):
    points = values.get(name)
    return None if not points else points[0][1]


def rows(before, after, seconds):
    """One dict per container present in both samples."""
    out = []
    for cid, entry in after.items():
        prev = before.get(cid)
        if prev is None:
            continue
        a, b = prev.values, entry.values
        cpu0, cpu1 = (_first(a, "container_cpu_usage_seconds_total"),
                      _first(b, "container_cpu_usage_seconds_total"))
        usage = _first(b, "container_memory_usage_bytes")
        net = 0 if entry.raw.get("net/dev") is not None else None
        limit = _first(b, "container_spec_memory_limit_bytes")
        if limit is not None and limit >= 1 << 62:
            limit = None
        row = {
            "id": cid,
            "cpu_percent": None if cpu0 is None or cpu1 is None
            else round(100 * (cpu1 - cpu0) / seconds, 2),
            "mem_usage": usage, "mem_limit": limit,
            "mem_percent": round(100 * usage / limit, 2) if usage is not None and limit
            else None,
            # as podman: lo (and veth*, left out as cAdvisor does) count for
            # nothing, so a netns with only those shows 0, not "unknown"
            "net_rx": _sum(b, "container_network_receive_bytes_total") or net,
            "net_tx": _sum(b, "container_network_transmit_bytes_total") or net,
            "block_read": _sum(b, "container_fs_reads_bytes_total"),
            "block_write": _sum(b, "container_fs_writes_bytes_total"),
            "pids": _first(b, "container_threads"),
            "throttled_periods": _first(b, "container_cpu_cfs_throttled_periods_total"),
            "cpu_pressure_seconds": _first(b, "container_pressure_cpu_waiting_seconds_total"),
        }
        out.append({k: (int(v) if isinstance(v, float) and v.is_integer()
                        and k != "cpu_percent" else v) for k, v in row.items()})
    return out


def measure(root, ids=None, seconds=1.0, collector=None, wait=None):
    """Rows over SECONDS.  WAIT(seconds), instead of sleeping, may end the
    measure early by returning true (a key asked to quit): then None."""
    own = collector is None
    c = collector or Collector(root)
    try:
        before = dict(c.collect())
        t0 = time.monotonic()
        if wait is not None:
            if wait(seconds):
                return None
        else:
            time.sleep(seconds)
        after = c.collect()
        found = rows(before, after, time.monotonic() - t0)
    finally:
        if own:
            c.close()
    if ids is not None:
        found = [r for r in found if r["id"] in ids]
    return found


def human(n):
    if n is None:
        return "--"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return str(n)


def table(found):
    """podman stats' columns."""
    lines = [f"{'ID':<20} {'CPU %':>7} {'MEM USAGE / LIMIT':>22} {'MEM %':>7} "
             f"{'NET IO':>17} {'BLOCK IO':>17} {'PIDS':>5} {'THROTTLED':>9}"]
    for r in found:
        cpu = "--" if r["cpu_percent"] is None else f"{r['cpu_percent']:.2f}%"
        mem = f"{human(r['mem_usage'])} / {human(r['mem_limit'])}"
        memp = "--" if r["mem_percent"] is None else f"{r['mem_percent']:.2f}%"
        net = f"{human(r['net_rx'])} / {human(r['net_tx'])}"
        blk = f"{human(r['block_read'])} / {human(r['block_write'])}"
        pids = "--" if r["pids"] is None else str(r["pids"])
        thr = "--" if r["throttled_periods"] is None else str(r["throttled_periods"])
        lines.append(f"{r['id'][:20]:<20} {cpu:>7} {mem:>22} {memp:>7} {net:>17} {blk:>17} "
                     f"{pids:>5} {thr:>9}")
    return "\n".join(lines) + "\n"


SORT_KEYS = {"cpu": "cpu_percent", "mem": "mem_usage", "net": "net_rx", "io": "block_read",
             "pids": "pids", "id": "id"}


def sort(found, key):
    field = SORT_KEYS[key]
    if field == "id":
        return sorted(found, key=lambda r: r["id"])
    return sorted(found, key=lambda r: (r[field] is None, -(r[field] or 0), r["id"]))


class Keyboard:
    """The terminal of a live view (`top`): keys come one by one, unechoed
    (cbreak; ^C still interrupts), and the terminal is put back exactly as it
    was on every way out -- `q`, ^C, SIGTERM, SIGHUP, an error."""

    QUIT = b"qQ"

    def __init__(self, fd=0, out=None):
        self.fd = fd
        self.out = out
        self.saved = None
        self.handlers = {}

    def __enter__(self):
        import os
        import signal
        if os.isatty(self.fd):
            import termios
            import tty
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)

        def leave(sig, _frame):
            raise KeyboardInterrupt  # through __exit__, which restores
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self.handlers[sig] = signal.signal(sig, leave)
        if self.out is not None and self.out.isatty():
            self.out.write("\x1b[?25l")  # no cursor blinking over the table
        return self

    def wait(self, seconds):
        """Sleep SECONDS, or less: true when a quit key was pressed."""
        import os
        import select
        if self.saved is None:
            time.sleep(seconds)
            return False
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                keys = os.read(self.fd, 64)
                if not keys or any(k in self.QUIT for k in keys):
                    return True

    def __exit__(self, *exc):
        import signal
        if self.out is not None and self.out.isatty():
            try:
                self.out.write("\x1b[?25h")
                self.out.flush()
            except OSError:
                pass
        if self.saved is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        for sig, how in self.handlers.items():
            signal.signal(sig, how)
