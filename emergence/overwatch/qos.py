"""QoS probes between network namespaces (containers, or named netns): ICMP echo
round trips (p50/p99) and a TCP stream's throughput, with a bounded history on
disk so a restart keeps recent figures.

A socket belongs to the netns it was created in, so the prober enters the
source netns (setns on this thread) only to create its socket, then returns.
The kernel answers echo requests, so the destination needs no server.  Which
netns, and how it is opened safely, is targets.py's business: a container's
through a checked pidfd of its init, root's configured names and paths through
O_PATH and an nsfs check.  The metrics keep a bounded number of (src, dst)
pairs (Prober.max_pairs, the least recently probed evicted).
"""

import ctypes
import json
import os
import socket
import struct
import threading
import time

from ..errors import EmergenceError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_NS_LOCK = threading.Lock()
RTT_BUCKETS = (.0005, .001, .0025, .005, .01, .015, .02, .025, .03, .05, .1, .25, .5, 1.0)


def in_netns(where, make):
    """MAKE() run with this thread in the netns of WHERE (a targets.Container or
    targets.Path, or a netns name, path or pid from root's configuration);
    returns its result."""
    from .targets import target
    where = target(where)
    with _NS_LOCK:
        ns = where.open()  # before our own: a refusal leaves nothing to undo
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(ns, CLONE_NEWNET) != 0:
                    raise ConnectionError(f"cannot enter the netns of {where}: "
                                          f"{os.strerror(ctypes.get_errno())}")
                try:
                    return make()
                finally:
                    if _libc.setns(home, CLONE_NEWNET) != 0:
                        raise SystemExit("overwatch: cannot return to its own netns")
            finally:
                os.close(home)
        finally:
            os.close(ns)


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def rtt(src_ns, dst_addr, count=20, gap=0.02, timeout=1.0, budget=30.0):
    """COUNT echo round trips from SRC_NS to DST_ADDR: a list of seconds (lost ones
    left out).  Each echo waits TIMEOUT at most, the whole BUDGET seconds at most,
    however many replies are lost or how much other ICMP arrives."""
    sock = in_netns(src_ns, lambda: socket.socket(
        socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    deadline = time.monotonic() + budget
    ident = (os.getpid() ^ threading.get_ident()) & 0xFFFF
    out = []
    try:
        for seq in range(count):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"emergence-overwatch"
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident,
                                 seq) + payload
            sent = time.monotonic()
            if sent >= deadline:
                break
            wait_until = min(sent + timeout, deadline)
            sock.sendto(packet, (dst_addr, 0))
            while True:
                left = wait_until - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    data, _ = sock.recvfrom(2048)
                    ihl = (data[0] & 0x0F) * 4
                    kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                except (socket.timeout, OSError):
                    break
                except (struct.error, IndexError):
                    continue  # not an ICMP message we could read
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
    listener = in_netns(dst_ns, lambda: socket.create_server((dst_addr, port)))
    listener.settimeout(10)  # the sink thread never outlives the probe for long
    got = [0]

    def sink():
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        return
                    got[0] += len(data)
        except OSError:
            return

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    try:
        sender = in_netns(src_ns, lambda: socket.socket())
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
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes an accept still waiting
        except OSError:
            pass
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
        # root's alone, like the rest of the node's state (O_NOFOLLOW: no planted link)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in self.entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class Prober:
    """Runs probes, keeps their metrics (a prometheus_client registry) and history.

    The metrics hold MAX_PAIRS (src, dst) label pairs at most: a new pair beyond
    that evicts the one least recently probed, its series removed, so probes on
    request cannot grow /metrics (and the node's memory) without bound."""

    def __init__(self, state_dir, log=lambda m: None, history_limit=1000, max_pairs=256):
        from collections import OrderedDict

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
        self.max_pairs = max(1, int(max_pairs))
        self.pairs = OrderedDict()  # (src, dst) in the metrics, least recently probed first
        self.pairs_lock = threading.Lock()  # the standing probe and a request's thread
        self.failing = set()
        self.results = 0  # probes that gave figures (a new one makes /metrics stale)

    def _use(self, src, dst):
        """(src, dst) is about to get a figure: the most recent pair now; the
        oldest pairs beyond the bound leave the metrics."""
        key = (src, dst)
        with self.pairs_lock:
            self.pairs[key] = True
            self.pairs.move_to_end(key)
            while len(self.pairs) > self.max_pairs:
                old, _ = self.pairs.popitem(last=False)
                for family in (self.rtt_hist, self.tput):
                    try:
                        family.remove(*old)
                    except KeyError:  # that pair had no series in this family
                        pass

    def _failed(self, src, dst, e, kind="rtt"):
        if (src, dst) not in self.failing:
            if len(self.failing) >= self.max_pairs:
                self.failing.clear()  # bounded too; at worst a failure is said again
            self.failing.add((src, dst))
            self.log(f"overwatch: {kind} probe {src} -> {dst} failed: {e}")

    def probe_rtt(self, src, dst, dst_addr, count=20, gap=0.02, src_ns=None, quiet=True):
        """SRC_NS: where to probe from when SRC is only a name (a container's).
        None if nothing came back; a failure to probe is logged once per pair
        (QUIET, the standing probe) or raised (a probe on request says why)."""
        src, dst = str(src), str(dst)
        try:
            samples = rtt(src if src_ns is None else src_ns, dst_addr, count, gap)
        except (ConnectionError, OSError, EmergenceError) as e:
            if not quiet:
                raise
            self._failed(src, dst, e)
            return None
        self.failing.discard((src, dst))
        if not samples:
            return None
        self._use(src, dst)
        child = self.rtt_hist.labels(src, dst)
        for s in samples:
            child.observe(s)
        result = {"kind": "rtt", "src": src, "dst": dst, "time": time.time(),
                  "p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99),
                  "sent": count, "received": len(samples)}
        self.history.add(result)
        self.results += 1
        return result

    def probe_throughput(self, src, dst, dst_addr, seconds=1.0, port=5201, src_ns=None,
                         dst_ns=None):
        """SRC_NS, DST_NS: where the stream runs, when SRC and DST are only names."""
        bps = throughput(src if src_ns is None else src_ns, dst if dst_ns is None else dst_ns,
                         dst_addr, seconds, port)
        src, dst = str(src), str(dst)
        self._use(src, dst)
        self.tput.labels(src, dst).set(bps)
        self.results += 1
        result = {"kind": "throughput", "src": src, "dst": dst,
                  "time": time.time(), "bytes_per_second": bps}
        self.history.add(result)
        return result
