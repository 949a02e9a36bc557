"""The rtnetlink requests of an attachment and a detach, encoded with struct.

Why: pyroute2's generic encoder builds an object per field and attribute;
in a freshly forked CNI worker that is ~0.2 ms a message, most of it
copy-on-write faults of touching its classes, and an attach sends five.
These few fixed shapes take microseconds.  Everything else -- dumps, lookups,
events, the reconciler -- stays pyroute2's, and the tests check these bytes
against pyroute2's own encoding of the same requests.
"""

import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFF_UP = 1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_NET_NS_FD = 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_F_PERMANENT = 1, 2, 0x80
RTA_GATEWAY = 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1


def attr(kind, payload):
    """One attribute: length, type, payload, padded to 4 bytes."""
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * (-n % 4)


def _name(s):
    return s.encode() + b"\0"


def _u32(v):
    return struct.pack("I", v)


def _mac(mac):
    return bytes.fromhex(mac.replace(":", ""))


def ifinfo(index=0, flags=0, change=0):
    """struct ifinfomsg: family, type, index, flags, change."""
    return struct.pack("BxHiII", 0, 0, index, flags, change)


def message(mtype, flags, seq, body):
    """NLMSG header (a request wanting an ack) + BODY."""
    return struct.pack("IHHII", 16 + len(body), mtype, NLM_F_REQUEST | NLM_F_ACK | flags,
                       seq, 0) + body


def veth_add(seq, host_name, mtu, master, peer_name, netns_fd, peer_mtu, peer_mac=None):
    """A veth pair, the host end up and on MASTER, the peer created in the
    netns NETNS_FD refers to."""
    peer = attr(IFLA_IFNAME, _name(peer_name)) + attr(IFLA_NET_NS_FD, _u32(netns_fd)) \
        + attr(IFLA_MTU, _u32(peer_mtu))
    if peer_mac:
        peer += attr(IFLA_ADDRESS, _mac(peer_mac))
    info = attr(IFLA_INFO_KIND, _name("veth")) \
        + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, ifinfo() + peer))
    body = ifinfo(0, IFF_UP, IFF_UP) + attr(IFLA_IFNAME, _name(host_name)) \
        + attr(IFLA_MTU, _u32(mtu)) + attr(IFLA_MASTER, _u32(master)) \
        + attr(IFLA_LINKINFO, info)
    return message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def link_up(seq, index, up=True):
    return message(RTM_NEWLINK, 0, seq, ifinfo(index, IFF_UP if up else 0, IFF_UP))


def link_del(seq, name):
    return message(RTM_DELLINK, 0, seq, ifinfo() + attr(IFLA_IFNAME, _name(name)))


def addr_add(seq, index, address, prefixlen):
    """ADDRESS (an ipaddress object) on link INDEX; IPv6 ones permanent, as
    pyroute2 and iproute2 make them."""
    if address.version == 4:
        raw = socket.inet_pton(socket.AF_INET, str(address))
        body = struct.pack("BBBBi", socket.AF_INET, prefixlen, 0, 0, index) \
            + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
    else:
        raw = socket.inet_pton(socket.AF_INET6, str(address))
        body = struct.pack("BBBBi", socket.AF_INET6, prefixlen, IFA_F_PERMANENT, 0, index) \
            + attr(IFA_ADDRESS, raw)
    return message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def default_route(seq, gateway):
    """The default route via GATEWAY in the main table (created or replaced)."""
    family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
    body = struct.pack("BBBBBBBBI", family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0) \
        + attr(RTA_GATEWAY, socket.inet_pton(family, str(gateway)))
    return message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, body)
