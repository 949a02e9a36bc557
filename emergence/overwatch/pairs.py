"""Which pairs the standing latency probe measures without being told: the
containers that placement (or the user) put in one probe group, by giving them
the same value of an OCI annotation (default `org.emergence.overwatch.probe-group`).
Every two running members of a group on this node are one pair, probed one
way (RTT is a round trip) from the first by name to the second's IPv4 address,
read from the second's netns (SIOCGIFCONF: its first address not on `lo`).

A member without such an address is left out and logged once.  A member's
netns is entered through a pidfd of its init (targets.Container), never by a
path or a bare pid.
"""

import array
import fcntl
import socket
import struct

SIOCGIFCONF = 0x8912
IFREQ = 40  # struct ifreq on 64-bit Linux: 16 bytes of name, 24 of union


def ipv4_addresses(where):
    """[(interface, address)] of the IPv4 addresses in the netns of WHERE (a
    targets.Container or targets.Path)."""
    from .qos import in_netns
    sock = in_netns(where, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with sock:
        buf = array.array("B", b"\0" * (IFREQ * 64))
        addr, _ = buf.buffer_info()
        got = struct.unpack("iL", fcntl.ioctl(sock.fileno(), SIOCGIFCONF,
                                              struct.pack("iL", len(buf), addr)))[0]
    data = buf.tobytes()[:got]
    return [(data[i:i + 16].split(b"\0", 1)[0].decode(),
             socket.inet_ntoa(data[i + 20:i + 24])) for i in range(0, got, IFREQ)]


class Pairs:
    """The annotated pairs of a sample (the collector's `latest`)."""

    def __init__(self, annotation, root, log=lambda m: None, limit=100):
        self.annotation = annotation
        self.root = root
        self.log = log
        self.limit = limit  # pairs per round at most: a group of n has n(n-1)/2
        self.warned = set()

    def address(self, cid):
        from ..errors import EmergenceError
        from .targets import Container
        try:
            found = [a for ifname, a in ipv4_addresses(Container(self.root, cid))
                     if ifname != "lo"]
        except (ConnectionError, OSError, EmergenceError) as e:
            found, why = [], str(e)
        else:
            why = "no IPv4 address outside lo"
        if not found and cid not in self.warned:
            if len(self.warned) >= 4096:
                self.warned.clear()  # bounded as containers come and go
            self.warned.add(cid)
            self.log(f"overwatch: probe group member {cid}: {why}; left out of its pairs")
        return found[0] if found else None

    def __call__(self, sample):
        """[(src name, src netns (a targets.Container), dst name, dst address)]
        for SAMPLE's groups."""
        from .targets import Container
        groups = {}
        for cid, entry in sorted(sample.items()):
            group = entry.annotations.get(self.annotation)
            if group and entry.pid:
                groups.setdefault(group, []).append(cid)
        out = []
        for members in groups.values():
            addrs = {cid: self.address(cid) for cid in members}
            for i, src in enumerate(members):
                for dst in members[i + 1:]:
                    if addrs[src] and addrs[dst] and len(out) < self.limit:
                        out.append((src, Container(self.root, src), dst, addrs[dst]))
        return out
