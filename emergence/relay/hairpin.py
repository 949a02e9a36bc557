"""Hairpin: a container reaching its own published port through one of the
host's addresses.  Its packet is DNAT'd back to itself: the bridge must send
it out of the port it came in by (the port's hairpin mode; needed when the
bridge itself NATs, as with br_netfilter), and the reply must come back
through the host to be un-NAT'd, so such traffic is masqueraded (nft.py).
Only the ports of containers with published ports get hairpin mode: on
every port, a broadcast would come back to its sender (IPv6 duplicate
address detection then fails).

One RTM_SETLINK of family AF_BRIDGE with IFLA_PROTINFO { IFLA_BRPORT_MODE },
as `bridge link set dev VETH hairpin on` sends, over the host's plain
rtnetlink socket.
"""

import struct

RTM_SETLINK, AF_BRIDGE = 19, 7
IFLA_PROTINFO, NLA_F_NESTED, IFLA_BRPORT_MODE = 12, 0x8000, 4


def _attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * (-n % 4)


def request(seq, index, on=True):
    body = struct.pack("BxHiII", AF_BRIDGE, 0, index, 0, 0) + _attr(
        IFLA_PROTINFO | NLA_F_NESTED, _attr(IFLA_BRPORT_MODE, struct.pack("B", int(on))))
    return struct.pack("IHHII", 16 + len(body), RTM_SETLINK, 0x1 | 0x4, seq, 0) + body


def set_hairpin(kernel, name):
    """Port NAME (a host veth on its bridge) in hairpin mode; False if gone."""
    index = kernel.index(name)
    if index is None:
        return False
    kernel.ops.append(("brport.hairpin", name))
    kernel._host_sockets().raw.request(request, index)
    return True
