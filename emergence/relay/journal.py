"""A dict of JSON values on disk whose edits cost what they change, not the
size of the dict: a snapshot (NAME.snap, written atomically) and an
append-only log (NAME.log, one line per commit, fdatasync'd once).

Why: Relay's graph, applied record and IPAM were files rewritten whole on
every edit, so one attachment cost O(attachments) bytes and time.  Here a
commit appends one line; when the log outgrows the snapshot it is folded in
(amortised O(1) per commit).  Crash safety: a commit is durable once its
line is synced; a line cut short by a crash is ignored (and cut off by the
next writer); a kill between writing a snapshot and emptying the log is
harmless, since each line carries a sequence number the snapshot covers.

Callers hold their own lock around refresh() + commit().  refresh() is
cheap when nobody else wrote (two stats), reads only the new lines when
another process appended, and reloads only after a compaction elsewhere.
"""

import _json
import os

from ..fastjson import loads

# the stdlib's C encoder, compact (json.dumps would import `re` and `enum`)
_dumps = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                            False, False, True)


def dumps(obj):
    return "".join(_dumps(obj, 0))


def _parse(raw):
    """RAW parsed with the cyclic GC paused: a snapshot of 1,000 attachments is
    ~10,000 containers, and the collections their allocation triggers (each
    walking every object still young) cost 5x the parse itself.  JSON makes
    no cycles, so nothing is left for the GC to find."""
    import gc
    if not gc.isenabled():
        return loads(raw)
    gc.disable()
    try:
        return loads(raw)
    finally:
        gc.enable()

COMPACT_MIN = 32 * 1024   # a fresh process reads at most this much log beyond 2x the snapshot


class Journal:
    def __init__(self, base):
        self.snap_path, self.log_path = base + ".snap", base + ".log"
        self.data = {}
        self.seq = 0
        self.appended = 0      # bytes of log lines written (tests measure this)
        self._snap_id = None   # (inode, mtime_ns) of the snapshot loaded
        self._log_id = None    # inode of the log read
        self._end = 0          # offset after the last whole line read
        self._snap_size = 0

    def refresh(self):
        """Bring data up to date with the files; returns the keys that changed
        (None after a full reload)."""
        try:
            st = os.stat(self.snap_path)
            snap_id = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            snap_id = None
        try:
            lst = os.stat(self.log_path)
            log_id, log_size = lst.st_ino, lst.st_size
        except FileNotFoundError:
            log_id, log_size = None, 0
        if snap_id != self._snap_id or log_id != self._log_id or log_size < self._end:
            self._reload(snap_id)
            return None
        if log_size == self._end:
            return set()
        return self._read_log()

    def _reload(self, snap_id):
        self.data, self.seq, self._snap_size = {}, 0, 0
        if snap_id is not None:
            with open(self.snap_path, "rb") as f:
                raw = f.read()
            doc = _parse(raw)
            self.data, self.seq, self._snap_size = doc["data"], doc["seq"], len(raw)
        self._snap_id = snap_id
        self._end = 0
        try:
            self._log_id = os.stat(self.log_path).st_ino
        except FileNotFoundError:
            self._log_id = None
        self._read_log()

    def _read_log(self):
        changed = set()
        try:
            f = open(self.log_path, "rb")
        except FileNotFoundError:
            return changed
        with f:
            f.seek(self._end)
            tail = f.read()
        pos = tail.rfind(b"\n") + 1     # after it: a line cut short by a crash
        try:   # every whole line at once: one parse, not one per line
            records = _parse(b"[" + tail[:pos - 1].replace(b"\n", b",") + b"]") \
                if pos else []
        except ValueError:
            records, pos = self._whole_lines(tail)
        for rec in records:
            if rec["s"] > self.seq:
                self._apply(rec["c"], changed)
                self.seq = rec["s"]
        self._end += pos
        return changed

    @staticmethod
    def _whole_lines(tail):
        """The records before the first line that is not whole JSON, and where it starts."""
        records, pos = [], 0
        while True:
            nl = tail.find(b"\n", pos)
            if nl < 0:
                return records, pos
            try:
                records.append(loads(tail[pos:nl]))
            except ValueError:
                return records, pos
            pos = nl + 1

    def _apply(self, changes, changed):
        for k, v in changes.items():
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v
            changed.add(k)

    def commit(self, changes, sync=True):
        """Apply CHANGES (key -> value, None deletes) and make them durable:
        one appended line, one fdatasync (SYNC False: the line survives a
        kill of this process, not a power cut)."""
        if not changes:
            return
        self._apply(changes, set())
        self.seq += 1
        line = dumps({"s": self.seq, "c": changes}).encode() + b"\n"
        new = self._log_id is None
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if new:
                self._log_id = os.fstat(fd).st_ino
            os.truncate(fd, self._end)   # drop a torn line left by a crash
            os.pwrite(fd, line, self._end)
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        if new:
            _sync_dir(self.log_path)
        self._end += len(line)
        self.appended += len(line)
        if self._end > max(COMPACT_MIN, 2 * self._snap_size):
            self.compact()

    def compact(self):
        """Fold the log into a new snapshot, then start an empty log.  A kill
        at any point loses nothing: until the rename the old snapshot and the
        whole log stand; after it, the new snapshot's seq covers every line
        still in the log, which readers skip; a temp file a killed compaction
        left is removed by the next (compactions run under the caller's lock,
        so any other temp file of this snapshot is such a leftover)."""
        self._drop_leftovers()
        raw = dumps({"seq": self.seq, "data": self.data}).encode()
        write_atomic(self.snap_path, raw, crashpoint)
        crashpoint("compact:renamed")
        st = os.stat(self.snap_path)
        self._snap_id, self._snap_size = (st.st_ino, st.st_mtime_ns), len(raw)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, 0)
            crashpoint("compact:truncated")
            os.fdatasync(fd)
            self._log_id = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        self._end = 0

    def _drop_leftovers(self):
        d, name = os.path.split(self.snap_path)
        for f in os.listdir(d or "."):
            if f.startswith(name + ".") and f.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(d, f))
                except FileNotFoundError:
                    pass

    def remove(self):
        for p in (self.snap_path, self.log_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        self.__init__(self.snap_path[:-len(".snap")])


def write_atomic(path, data, crash=None):
    """DATA at PATH or the old file, never a mix: temp file, fsync, rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view[:1 << 16])
            if crash is not None:
                crash("compact:writing")
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if crash is not None:
        crash("compact:written")
    os.rename(tmp, path)
    _sync_dir(path)


# The test seam, as the runtime's: EMERGENCE_CRASHPOINT=journal:STEP makes
# this process SIGKILL itself right after STEP of a compaction (writing,
# written, renamed, truncated).  Read once, at import; one comparison a step.
_CRASH = os.environ.get("EMERGENCE_CRASHPOINT", "")


def crashpoint(step):
    if _CRASH and _CRASH == "journal:" + step:
        os.kill(os.getpid(), 9)


def _sync_dir(path):
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
