"""Address management that never hands one address to two containers.

One journal per network under STATE/ipam/ (journal.py: a snapshot plus an
append-only log), read and changed under an exclusive flock of a sibling
lock file: concurrent processes serialise on the lock, and a process killed
at any point leaves every committed allocation for the next to read (lines
are not fdatasync'd: a power cut that could lose one ends its container
too).  An allocation appends one line, whatever the number of addresses held.  Each address is
recorded with the attachment key that holds it and the identity (device,
inode) of the netns it went to, so GC can tell a live holder from a dead one.
"""

import fcntl
import ipaddress
import os

from ..errors import EmergenceError
from .journal import Journal

LAST = "last:"   # key prefix of the round-robin cursor of a subnet


class IPAM:
    def __init__(self, state_dir):
        self.dir = os.path.join(state_dir, "ipam")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._journals = {}

    def _locked(self, network):
        j = self._journals.get(network)
        if j is None:
            j = self._journals[network] = _Allocations(os.path.join(self.dir, network))
        return _Locked(j, os.path.join(self.dir, network + ".lock"))

    def allocate(self, network, subnets, gateways, key, netns_id=None, wanted=None):
        """An address of each subnet for KEY (the same ones again if KEY holds some).
        WANTED: fixed addresses, refused if another key holds them."""
        with self._locked(network) as (allocs, changes):
            mine = [ipaddress.ip_address(a) for a in self._journals[network].held(key)]
            out = []
            for subnet, gw in zip(subnets, gateways):
                fixed = [a for a in (wanted or []) if a in subnet]
                held = [a for a in mine if a in subnet]
                if fixed:
                    addr = fixed[0]
                    holder = allocs.get(str(addr))
                    if holder and holder["key"] != key:
                        raise EmergenceError(f"address {addr} is already allocated to "
                                             f"{holder['key']}; choose another or omit it")
                    for a in held:
                        if a != addr:
                            changes[str(a)] = None
                elif held:
                    addr = held[0]
                else:
                    addr = _next_free(subnet, gw, allocs, changes)
                rec = {"key": key, "netns": netns_id}
                if allocs.get(str(addr)) != rec:
                    changes[str(addr)] = rec
                out.append(addr)
            return out

    def release(self, network, key):
        """Free every address KEY holds; return them."""
        with self._locked(network) as (allocs, changes):
            gone = self._journals[network].held(key)
            for a in gone:
                changes[a] = None
            return gone

    def holders(self, network):
        """{address: {"key", "netns"}} of NETWORK."""
        with self._locked(network) as (allocs, _):
            return {a: v for a, v in allocs.items() if not a.startswith(LAST)}

    def drop_network(self, network):
        with self._locked(network) as _:
            self._journals.pop(network).remove()
        try:
            os.unlink(os.path.join(self.dir, network + ".lock"))
        except FileNotFoundError:
            pass


def _next_free(subnet, gw, allocs, changes):
    # round-robin from the last handed out, as host-local does, so a freed
    # address is not reused at once by the next container
    last = allocs.get(LAST + str(subnet))
    first = int(subnet.network_address) + 1
    end = int(subnet.broadcast_address) if subnet.version == 4 else \
        int(subnet.network_address) + min(subnet.num_addresses - 1, 1 << 20)
    size = end - first
    start = (int(ipaddress.ip_address(last)) + 1) if last else first
    for i in range(size):
        n = first + (start - first + i) % size
        a = ipaddress.ip_address(n)
        if a != gw and str(a) not in allocs and str(a) not in changes:
            changes[LAST + str(subnet)] = str(a)
            return a
    raise EmergenceError(f"subnet {subnet} is full: no free address left; "
                         "free some with `emergence net gc` or use a larger subnet")


class _Allocations(Journal):
    """The journal of a network's addresses, with an index by holder (kept
    up to date with what refresh and commit change)."""

    def __init__(self, base):
        super().__init__(base)
        self._holder = {}     # address -> key
        self._by_key = {}     # key -> {address}

    def refresh(self):
        self._migrate()
        changed = super().refresh()
        if changed is None:
            self._holder, self._by_key = {}, {}
            changed = list(self.data)
        self._index(changed)
        return changed

    def commit(self, changes, sync=True):
        super().commit(changes, sync)
        self._index(changes)

    def _migrate(self):
        """NETWORK.json, written whole by earlier versions, becomes the
        journal's first line (once; the old file is kept aside)."""
        old = self.snap_path[:-len(".snap")] + ".json"
        if self._log_id is not None or not os.path.exists(old) \
                or os.path.exists(self.snap_path) or os.path.exists(self.log_path):
            return
        import json
        with open(old) as f:
            doc = json.load(f)
        items = dict(doc.get("allocations", {}))
        items.update({LAST + s: a for s, a in doc.get("last", {}).items()})
        super().refresh()
        self.commit(items)
        os.rename(old, old + ".migrated")

    def _index(self, addresses):
        for a in addresses:
            if a.startswith(LAST):
                continue
            old = self._holder.pop(a, None)
            if old is not None:
                self._by_key[old].discard(a)
                if not self._by_key[old]:
                    del self._by_key[old]
            v = self.data.get(a)
            if v is not None:
                self._holder[a] = v["key"]
                self._by_key.setdefault(v["key"], set()).add(a)

    def held(self, key):
        """The addresses KEY holds, in order."""
        return sorted(self._by_key.get(key, ()), key=ipaddress.ip_address)


class _Locked:
    """The network's allocations, brought up to date under its lock; the
    changes the body records are committed (one log line) on a clean exit."""

    def __init__(self, journal, lock_path):
        self.journal = journal
        self.lock_path = lock_path

    def __enter__(self):
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            self.journal.refresh()
        except BaseException:
            os.close(self.lock_fd)
            raise
        self.changes = {}
        return self.journal.data, self.changes

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                # not fdatasync'd: a lease lives as long as its container,
                # which a power cut ends too; a kill keeps the line (page cache)
                self.journal.commit(self.changes, sync=False)
        finally:
            os.close(self.lock_fd)
        return False
