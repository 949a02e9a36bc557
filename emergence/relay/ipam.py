"""Address management that never hands one address to two containers.

One JSON file per network under STATE/ipam/, read and rewritten under an
exclusive flock of a sibling lock file, written atomically (temp file, fsync,
rename): concurrent processes serialise on the lock, a crash leaves either the
old or the new file, and a restart reads what was committed.  Each address is
recorded with the attachment key that holds it and the identity (device,
inode) of the netns it went to, so GC can tell a live holder from a dead one.
"""

import fcntl
import ipaddress
import json
import os

from ..errors import EmergenceError


class IPAM:
    def __init__(self, state_dir):
        self.dir = os.path.join(state_dir, "ipam")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def _paths(self, network):
        base = os.path.join(self.dir, network)
        return base + ".json", base + ".lock"

    def _locked(self, network):
        return _Locked(*self._paths(network))

    def allocate(self, network, subnets, gateways, key, netns_id=None, wanted=None):
        """An address of each subnet for KEY (the same ones again if KEY holds some).
        WANTED: fixed addresses, refused if another key holds them."""
        with self._locked(network) as db:
            allocs = db.setdefault("allocations", {})
            mine = [ipaddress.ip_address(a) for a, v in allocs.items() if v["key"] == key]
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
                            del allocs[str(a)]
                elif held:
                    addr = held[0]
                else:
                    addr = self._next_free(db, subnet, gw, allocs)
                allocs[str(addr)] = {"key": key, "netns": netns_id}
                out.append(addr)
            return out

    @staticmethod
    def _next_free(db, subnet, gw, allocs):
        # round-robin from the last handed out, as host-local does, so a freed
        # address is not reused at once by the next container
        last = db.setdefault("last", {}).get(str(subnet))
        first = int(subnet.network_address) + 1
        end = int(subnet.broadcast_address) if subnet.version == 4 else \
            int(subnet.network_address) + min(subnet.num_addresses - 1, 1 << 20)
        size = end - first
        start = (int(ipaddress.ip_address(last)) + 1) if last else first
        for i in range(size):
            n = first + (start - first + i) % size
            a = ipaddress.ip_address(n)
            if a != gw and str(a) not in allocs:
                db["last"][str(subnet)] = str(a)
                return a
        raise EmergenceError(f"subnet {subnet} is full: no free address left; "
                             "free some with `emergence net gc` or use a larger subnet")

    def release(self, network, key):
        """Free every address KEY holds; return them."""
        with self._locked(network) as db:
            allocs = db.setdefault("allocations", {})
            gone = [a for a, v in allocs.items() if v["key"] == key]
            for a in gone:
                del allocs[a]
            return gone

    def holders(self, network):
        path, _ = self._paths(network)
        try:
            with open(path) as f:
                return json.load(f).get("allocations", {})
        except FileNotFoundError:
            return {}

    def drop_network(self, network):
        for p in self._paths(network):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


class _Locked:
    """The network's allocation file, loaded under its lock and written back
    atomically on a clean exit."""

    def __init__(self, path, lock_path):
        self.path = path
        self.lock_path = lock_path

    def __enter__(self):
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            with open(self.path) as f:
                self.db = json.load(f)
        except FileNotFoundError:
            self.db = {}
        self.before = json.dumps(self.db, sort_keys=True)
        return self.db

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and json.dumps(self.db, sort_keys=True) != self.before:
                write_atomic(self.path, json.dumps(self.db, sort_keys=True).encode())
        finally:
            os.close(self.lock_fd)
        return False


def write_atomic(path, data):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
