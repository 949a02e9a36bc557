"""A cluster stage's output, live, from the worker that runs it to the
runner's terminal (`pipeline run --cluster`), through etcd.

The worker (Shipper) appends the stage's output as numbered chunks under

  logs/HOST/TASK/ATTEMPT/SEQ     (SEQ 0000, 0001, ...; a JSON string each)

HOST is the worker's own name: etcd's RBAC lets a worker write only
logs/NAME/ (cluster/rbac.py), so it cannot write as another node.  The
runner (Follower) reads only logs/H/TASK/A/ where H and A are the host and
attempt the leader assigned (status/TASK, which only command nodes write):
what a worker writes under its own name for a task it was not given is read
by nobody.  The runner deletes each chunk once shown, so etcd (and the
leader's snapshots of it) holds only what is not read yet; chunks also ride
on a lease the worker renews while the stage runs, so they go LOG_TTL
seconds after it ends (or its worker dies) when no runner reads them.

Bounds: a chunk is at most CHUNK bytes and a task attempt at most
MAX_CHUNKS chunks (256 KiB in etcd); past that the worker drops the output
and its last chunk says "... N bytes dropped".  The runner reads no more
than that of any prefix, whatever a lying worker wrote there.  The whole
log still comes with the result, as before, for the reports.

Masking: secrets never reach a worker (dispatch.check, stagetask.check), so
a value can reach a remote stage only inside its inputs; the runner masks
every streamed line with the pipeline's secret values (execute.mask, as the
logs it writes; each line of a multi-line value too) before it is shown."""

import threading
import time

CHUNK = 4096          # bytes of output per etcd key
MAX_CHUNKS = 64       # keys per task attempt, the last one kept for the drop marker
FLUSH = 0.25          # seconds between writes while output comes
LOG_TTL = 120.0       # seconds the chunks outlive the stage (its lease)
LINE = 8192           # an unfinished line longer than this is shown in pieces
BATCH = 4             # keys per read (an etcd value may be 1.5 MiB: a lying worker's)


_TOLD = set()  # hosts whose role may not write logs/, said once


def prefix(host, tid, attempt):
    return ("logs", host, tid, str(attempt))


def _seq(n):
    return f"{n:04d}"


def _cut(buf, n):
    """N, or less so that BUF[:N] does not end inside a UTF-8 character."""
    if n >= len(buf):
        return len(buf)
    k = n
    while k > max(0, n - 3) and buf[k] & 0xC0 == 0x80:
        k -= 1
    return k if k > 0 else n


class Shipper:
    """The worker's side: feed() takes the stage's output (from the thread
    that reads its pipe, never blocked by etcd); a thread writes it out."""

    def __init__(self, cluster, host, tid, attempt, log=print):
        self.cluster, self.where, self.log = cluster, prefix(host, tid, attempt), log
        self.lock = threading.Lock()
        self.pending = bytearray()
        self.seq = 0
        self.dropped = 0
        self.ended_line = True  # the last byte sent was a newline (or nothing was sent)
        self.disabled = False
        self.lease = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"log {tid}/{attempt}")
        self.thread.start()

    def feed(self, data):
        with self.lock:  # held: at most what may still be sent (< 256 KiB)
            room = (MAX_CHUNKS - 1 - self.seq) * CHUNK - len(self.pending)
            if self.disabled or room <= 0:
                self.dropped += len(data)
                return
            self.pending += data[:room]
            self.dropped += max(0, len(data) - room)

    def close(self, timeout=10.0):
        """The stage ended: what is pending goes out, then the drop marker."""
        self.done.set()
        self.thread.join(timeout)

    def _put(self, text):
        if self.lease is None:
            self.lease = self.cluster.lease(LOG_TTL)
        self.cluster.put(text, *self.where, _seq(self.seq), lease=self.lease)
        self.seq += 1

    def _flush(self, final):
        with self.lock:
            if self.seq < MAX_CHUNKS - 1:
                data = bytes(self.pending[:_cut(self.pending, CHUNK)])
            else:  # full: the rest is dropped, said once at the end
                self.dropped += len(self.pending)
                self.pending.clear()
                data = b""
        if data:
            self._put(data.decode(errors="replace"))
            self.ended_line = data.endswith(b"\n")
            with self.lock:
                del self.pending[:len(data)]
        if final and not self.pending and self.dropped:
            nl = "" if self.ended_line else "\n"
            self._put(f"{nl}\u2026 {self.dropped} bytes dropped\n")
            self.dropped = 0
        return bool(self.pending)

    def _run(self):
        renewed = time.monotonic()
        while True:
            final = self.done.wait(FLUSH)
            try:
                while self._flush(final) and (final or len(self.pending) >= CHUNK):
                    pass
                if self.lease is not None and time.monotonic() - renewed > LOG_TTL / 3:
                    if self.lease.refresh() <= 0:
                        self.lease = None  # expired (etcd was away): a new one next
                    renewed = time.monotonic()
            except Exception as e:  # refused (an old role) or etcd away: logs come at the end
                from ..place.state import Refused
                if isinstance(e, Refused) or final:
                    with self.lock:
                        self.disabled = True
                        self.pending.clear()
                    if isinstance(e, Refused) and self.where[1] not in _TOLD:
                        _TOLD.add(self.where[1])  # once: a role from before logs/ was granted
                        self.log(f"worker {self.where[1]}: no live logs ({e}); stage logs "
                                 "come with their results")
                    return
            if final:
                return


class Follower:
    """The runner's side for one task: poll() shows the new complete lines
    of the attempt the leader assigned; finish() the rest, then deletes them."""

    def __init__(self, cluster, tid, emit, secrets=()):
        self.cluster, self.tid, self.emit = cluster, tid, emit
        # lines are shown one by one: a multi-line value (a PEM key) is masked line by line
        self.secrets = sorted({p for s in secrets if s
                               for p in [s] + [x for x in s.splitlines() if len(x.strip()) >= 4]
                               }, key=len, reverse=True)
        self.at = None      # (host, attempt) followed
        self.seq = 0
        self.carry = b""

    def _line(self, raw):
        from .execute import mask
        self.emit(mask(raw, self.secrets).decode(errors="replace"))

    def _lines(self, data, final=False):
        self.carry += data
        *whole, self.carry = self.carry.split(b"\n")
        for raw in whole:
            self._line(raw)
        while len(self.carry) > LINE:
            n = _cut(self.carry, LINE)
            self._line(self.carry[:n])
            self.carry = self.carry[n:]
        if final and self.carry:
            self._line(self.carry)
            self.carry = b""

    def poll(self):
        st = self.cluster.get("status", self.tid) or {}
        host, attempt = st.get("host"), st.get("attempt")
        if st.get("state") == "assigned" and isinstance(host, str) and \
                isinstance(attempt, int) and (host, attempt) != self.at:
            if self.at is not None:  # the leader moved it (its worker died or went silent)
                self._lines(b"", final=True)
                self.emit(f"--- moved to {host} (placement attempt {attempt}) ---")
            self.at, self.seq = (host, attempt), 0
        self._read()

    def _read(self):
        while self.at is not None and self.seq < MAX_CHUNKS and self._batch():
            pass

    def _batch(self):
        """Read the next few chunks; True if a full batch came (more may wait)."""
        base = self.cluster.key(*prefix(self.at[0], self.tid, self.at[1])) + "/"
        kvs = self.cluster.client.get(base + _seq(self.seq), metadata=True,
                                      range_end=base + "~", limit=min(BATCH, MAX_CHUNKS - self.seq),
                                      sort_order="ascend", sort_target="key")
        import json
        first, full = self.seq, len(kvs) == BATCH
        for value, meta in kvs:
            key = meta["key"].decode(errors="replace")
            if key != base + _seq(self.seq):  # a gap or a key of another form: stop here
                full = False
                break
            try:
                text = json.loads(value)
            except ValueError:
                text = ""
            if not isinstance(text, str):
                text = ""
            self.seq += 1
            self._lines(text.encode(errors="replace")[:CHUNK + 64])
        if self.seq > first:  # shown: etcd holds only what is not read yet
            try:
                self.cluster.client.delete(base + _seq(first), range_end=base + _seq(self.seq))
            except Exception:
                pass  # the worker's lease takes them
        return full

    def finish(self):
        try:
            self.poll()
        except Exception:
            pass
        self._lines(b"", final=True)
        if self.at is not None:
            try:
                self.cluster.client.delete_prefix(
                    self.cluster.key("logs", self.at[0], self.tid) + "/")
            except Exception:
                pass  # the worker's lease takes them
