"""Node-level event counters that outlive the process that counted: `emergence
pull` and `emergence net apply` run as their own processes, the node exports.

A bump is one write(2) of a few text records to one file opened O_APPEND:
appends do not interleave, so no lock is taken and the cost is O(1) (open,
write, close).  Each record is framed by newlines and carries a CRC, so a
record cut short (a writer killed mid-write, a crash) is skipped without
taking its neighbours with it.  A bump never fails its caller: counting is
not worth a failed pull.

The reader (the node's exporter, `Totals`) folds the new records into a
snapshot (`PATH.sum`, written atomically, under an flock that only readers
take) and then punches the folded bytes out of the log (FALLOC_FL_PUNCH_HOLE):
writers keep appending, the offsets stay valid, and the disk use stays small.

File: $EMERGENCE_COUNTERS, else counters.log in the store's directory
(/var/lib/emergence).
"""

import binascii
import os

PUNCH_AFTER = 1 << 16  # bytes folded before the reader frees them


def path():
    env = os.environ.get("EMERGENCE_COUNTERS")
    if env:
        return env
    from . import default_store
    return os.path.join(default_store(), "counters.log")


def _record(name, label, amount):
    body = f"{name} {label or '-'} {int(amount)}"
    return f"\n{body} {binascii.crc32(body.encode()):08x}\n"


def bump(*items, where=None):
    """Add to counters: bump((name, "label=value" or "", amount), ...)."""
    data = "".join(_record(*item) for item in items if item[2]).encode()
    if not data:
        return
    try:
        fd = os.open(where or path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
    except OSError:
        return
    try:
        os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def share_pulled(bytes_from, where=None):
    """A finished pull; BYTES_FROM: {peer URL or "upstream": bytes}."""
    up = sum(n for s, n in bytes_from.items() if s == "upstream")
    peers = sum(n for s, n in bytes_from.items() if s != "upstream")
    source = ("mixed" if up and peers else "upstream" if up else "peer" if peers
              else "store")  # nothing fetched: every blob was already here
    bump(("emergence_share_pulls_total", f"source={source}", 1),
         ("emergence_share_pull_bytes_total", "source=peer", peers),
         ("emergence_share_pull_bytes_total", "source=upstream", up), where=where)


def relay_applied(ops, where=None):
    """An apply that changed the kernel; OPS: the kernel operations it issued,
    each a tuple whose first item is its kind ("veth.add", "nft.transaction")."""
    kinds = {}
    for op in ops:
        kinds[op[0]] = kinds.get(op[0], 0) + 1
    bump(("emergence_relay_applies_total", "", 1),
         *(("emergence_relay_operations_total", f"kind={k}", n) for k, n in kinds.items()),
         where=where)


class Totals:
    """The sums of every record so far: {(name, "label=value" or ""): total}."""

    def __init__(self, where=None):
        self.path = where or path()

    def _load(self):
        import json
        try:
            with open(self.path + ".sum") as f:
                doc = json.load(f)
            return doc["ino"], doc["offset"], {(n, lab): v for n, lab, v in doc["totals"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None, 0, {}

    def _save(self, ino, offset, totals):
        import json
        tmp = f"{self.path}.sum.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"ino": ino, "offset": offset,
                       "totals": [[n, lab, v] for (n, lab), v in sorted(totals.items())]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path + ".sum")

    def read(self):
        """Fold what was appended since the last read; return the totals (an
        empty dict where nothing was ever counted)."""
        import fcntl
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return self._load()[2]
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # readers only: writers never take it
            ino, offset, totals = self._load()
            st = os.fstat(fd)
            if ino != st.st_ino or st.st_size < offset:  # a new log: keep the sums
                ino, offset = st.st_ino, 0
            if st.st_size <= offset:
                return totals
            data = os.pread(fd, st.st_size - offset, offset)
            end = data.rfind(b"\n") + 1  # a record still being written waits
            if not end:
                return totals
            for line in data[:end].split(b"\n"):
                parts = line.split(b" ")
                if len(parts) != 4 or f"{binascii.crc32(b' '.join(parts[:3])):08x}" != \
                        parts[3].decode(errors="replace"):
                    continue  # blank (a frame) or cut short
                key = (parts[0].decode(), "" if parts[1] == b"-" else parts[1].decode())
                totals[key] = totals.get(key, 0) + int(parts[2])
            self._save(ino, offset + end, totals)
            if (offset + end) // PUNCH_AFTER > offset // PUNCH_AFTER:
                _punch(fd, (offset + end) & ~4095)
            return totals
        finally:
            os.close(fd)


def _punch(fd, length):
    """Free the log's first LENGTH bytes (already in the snapshot); where the
    filesystem cannot, the log just keeps them."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    libc.fallocate(fd, 0x02 | 0x01, 0, length)  # FALLOC_FL_PUNCH_HOLE | KEEP_SIZE
