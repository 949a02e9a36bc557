"""QoS probes between network namespaces (containers, or named netns): ICMP echo
round trips (p50/p99) and a TCP stream's throughput, with a bounded history on
disk so a restart keeps recent figures.

A socket belongs to the netns it was created in, so the prober enters the
source netns (setns on this thread) only to create its socket, then returns.
The kernel answers echo requests, so the destination needs no server.
"""

import ctypes
import json
import os
import socket
import struct
import threading
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_NS_LOCK = threading.Lock()
RTT_BUCKETS = (.0005, .001, .0025, .005, .01, .015, .02, .025, .03, .05, .1, .25, .5, 1.0)


def netns_path(where):
    """A netns by name (/run/netns/NAME), path, or pid of a container's init."""
    if str(where).isdigit():
        return f"/proc/{where}/ns/net"
    return where if "/" in str(where) else f"/run/netns/{where}"


def in_netns(path, make):
    """MAKE() run with this thread in the netns at PATH; returns its result."""
    with _NS_LOCK:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(home)
            raise ConnectionError(f"netns {path} is gone ({e.strerror})") from None
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise ConnectionError(f"cannot enter netns {path}: "
                                      f"{os.strerror(ctypes.get_errno())}")
            try:
                return make()
            finally:
                if _libc.setns(home, CLONE_NEWNET) != 0:
                    raise SystemExit("overwatch: cannot return to its own netns")
        finally:
            os.close(target)
            os.close(home)


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def rtt(src_ns, dst_addr, count=20, gap=0.02, timeout=1.0):
    """COUNT echo round trips from SRC_NS to DST_ADDR: a list of seconds (lost ones
    left out)."""
    sock = in_netns(netns_path(src_ns), lambda: socket.socket(
        socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    ident = (os.getpid() ^ threading.get_ident()) & 0xFFFF
    out = []
    try:
        sock.settimeout(timeout)
        for seq in range(count):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"emergence-overwatch"
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident,
                                 seq) + payload
            sent = time.monotonic()
            sock.sendto(packet, (dst_addr, 0))
            while True:
                try:
                    data, _ = sock.recvfrom(2048)
                except (socket.timeout, OSError):
                    break
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if kind == 0 and rid == ident and rseq == seq:
                    out.append(time.monotonic() - sent)
                    break
            time.sleep(gap)
    finally:
        sock.close()
    return out


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def throughput(src_ns, dst_ns, dst_addr, seconds=1.0, port=5201):
    """Bytes per second of one TCP stream from SRC_NS to a listener in DST_NS."""
    listener = in_netns(netns_path(dst_ns), lambda: socket.create_server((dst_addr, port)))
    got = [0]

    def sink():
        conn, _ = listener.accept()
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    return
                got[0] += len(data)

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    try:
        sender = in_netns(netns_path(src_ns), lambda: socket.socket())
        with sender:
            sender.settimeout(5)
            sender.connect((dst_addr, port))
            block = b"\0" * (1 << 16)
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                sender.sendall(block)
            sender.shutdown(socket.SHUT_WR)
        t.join(5)
        return got[0] / (time.monotonic() - start)
    finally:
        listener.close()


class History:
    """The last LIMIT results as JSON lines in PATH (rewritten atomically)."""

    def __init__(self, path, limit=1000):
        self.path, self.limit = path, limit
        self.entries = []
        try:
            with open(path) as f:
                self.entries = [json.loads(line) for line in f if line.strip()][-limit:]
        except (OSError, ValueError):
            self.entries = []

    def add(self, entry):
        self.entries = (self.entries + [entry])[-self.limit:]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in self.entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class Prober:
    """Runs probes, keeps their metrics (a prometheus_client registry) and history."""

    def __init__(self, state_dir, log=lambda m: None, history_limit=1000):
        from prometheus_client import CollectorRegistry, Gauge, Histogram
        self.registry = CollectorRegistry(auto_describe=True)
        self.rtt_hist = Histogram("emergence_network_rtt_seconds",
                                  "Round-trip time between two containers or netns",
                                  ["src", "dst"], buckets=RTT_BUCKETS, registry=self.registry)
        self.tput = Gauge("emergence_network_throughput_bytes",
                          "Bytes per second of one TCP stream between two netns",
                          ["src", "dst"], registry=self.registry)
        self.history = History(os.path.join(state_dir, "qos-history.jsonl"), history_limit)
        self.log = log
        self.failing = set()
        self.results = 0  # probes that gave figures (a new one makes /metrics stale)

    def probe_rtt(self, src, dst, dst_addr, count=20, gap=0.02, src_ns=None):
        """SRC_NS: where to probe from when SRC is only a name (a container's)."""
        try:
            samples = rtt(src if src_ns is None else src_ns, dst_addr, count, gap)
        except (ConnectionError, OSError) as e:
            if (src, dst) not in self.failing:
                self.failing.add((src, dst))
                self.log(f"overwatch: rtt probe {src} -> {dst} failed: {e}")
            return None
        self.failing.discard((src, dst))
        if not samples:
            return None
        for s in samples:
            self.rtt_hist.labels(str(src), str(dst)).observe(s)
        result = {"kind": "rtt", "src": str(src), "dst": str(dst), "time": time.time(),
                  "p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99),
                  "sent": count, "received": len(samples)}
        self.history.add(result)
        self.results += 1
        return result

    def probe_throughput(self, src, dst, dst_addr, seconds=1.0, port=5201):
        bps = throughput(src, dst, dst_addr, seconds, port)
        self.tput.labels(str(src), str(dst)).set(bps)
        self.results += 1
        result = {"kind": "throughput", "src": str(src), "dst": str(dst),
                  "time": time.time(), "bytes_per_second": bps}
        self.history.add(result)
        return result
