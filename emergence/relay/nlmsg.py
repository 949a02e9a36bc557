"""rtnetlink, encoded and decoded with struct: the requests Relay makes and
the few fields it reads back.

Why: a netlink library costs its import (pyroute2: ~180 ms, more than a
whole CNI call of the reference plugins) and, in a freshly forked worker,
~0.2 ms a message of copy-on-write faults; Relay sends a dozen fixed shapes
and reads links, addresses and routes by a handful of attributes, which
take microseconds here.  The tests check the requests byte for byte
against pyroute2's encoding (the oracle) and the decoding against what
pyroute2 reads from the same kernel.
"""

import _socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFF_UP = 1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_F_PERMANENT = 1, 2, 3, 0x80
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
AF_INET, AF_INET6 = _socket.AF_INET, _socket.AF_INET6
# multicast groups of the events the reconciler follows: links, addresses, routes
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
RTMGRP_NEIGH = 0x4   # joined only by a cluster network's reconciler (peers.py)
EVENT_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR \
    | RTMGRP_IPV6_ROUTE


def attr(kind, payload):
    """One attribute: length, type, payload, padded to 4 bytes."""
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * (-n % 4)


def _name(s):
    return s.encode() + b"\0"


def _u32(v):
    return struct.pack("I", v)


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


def _family(address):
    return AF_INET if address.version == 4 else AF_INET6


def _raw(address):
    return _socket.inet_pton(_family(address), str(address))


def ifinfo(index=0, flags=0, change=0):
    """struct ifinfomsg: family, type, index, flags, change."""
    return struct.pack("BxHiII", 0, 0, index, flags, change)


def message(mtype, flags, seq, body, ack=True):
    """NLMSG header (a request wanting an ack, unless ACK is false) + BODY."""
    return struct.pack("IHHII", 16 + len(body), mtype,
                       NLM_F_REQUEST | (NLM_F_ACK if ack else 0) | flags, seq, 0) + body


# ---- requests ----------------------------------------------------------------------

def veth_add(seq, host_name, mtu, master, peer_name, netns_fd, peer_mtu, peer_mac=None):
    """A veth pair, the host end up and on MASTER, the peer created in the
    netns NETNS_FD refers to."""
    peer = attr(IFLA_IFNAME, _name(peer_name)) + attr(IFLA_NET_NS_FD, _u32(netns_fd)) \
        + attr(IFLA_MTU, _u32(peer_mtu))
    if peer_mac:
        peer += attr(IFLA_ADDRESS, mac_bytes(peer_mac))
    info = attr(IFLA_INFO_KIND, _name("veth")) \
        + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, ifinfo() + peer))
    body = ifinfo(0, IFF_UP, IFF_UP) + attr(IFLA_IFNAME, _name(host_name)) \
        + attr(IFLA_MTU, _u32(mtu)) + attr(IFLA_MASTER, _u32(master)) \
        + attr(IFLA_LINKINFO, info)
    return message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq, body)


IFLA_BR_MCAST_SNOOPING = 23


def bridge_add(seq, name, mtu, mac=None):
    """A bridge called NAME, up, with MTU (and MAC: see Kernel.bridge_add), and
    no multicast snooping (see Kernel.bridge_add)."""
    body = ifinfo(0, IFF_UP, IFF_UP) + attr(IFLA_IFNAME, _name(name)) \
        + attr(IFLA_MTU, _u32(mtu))
    if mac:
        body += attr(IFLA_ADDRESS, mac_bytes(mac))
    body += attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, _name("bridge"))
                 + attr(IFLA_INFO_DATA, attr(IFLA_BR_MCAST_SNOOPING, b"\0")))
    return message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def link_up(seq, index, up=True):
    return message(RTM_NEWLINK, 0, seq, ifinfo(index, IFF_UP if up else 0, IFF_UP))


def link_set(seq, index, state=None, mtu=None, ifalias=None):
    """Link INDEX brought up or down (STATE "up"/"down"), its MTU or alias set."""
    flags = change = 0
    if state is not None:
        flags, change = (IFF_UP if state == "up" else 0), IFF_UP
    body = ifinfo(index, flags, change)
    if mtu is not None:
        body += attr(IFLA_MTU, _u32(mtu))
    if ifalias is not None:
        body += attr(IFLA_IFALIAS, _name(ifalias))
    return message(RTM_NEWLINK, 0, seq, body)


IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 26, 8, 1


def link_no_ipv6_addresses(seq, name):
    """Link NAME makes no IPv6 addresses of its own (addr_gen_mode none): a
    bridge port has no use for a link-local address, and every one of them
    is a route the kernel walks when any port goes (fib6_ifdown) and a group
    it joins (MLD).  The kernel takes it on an existing link, not on create."""
    inet6 = attr(AF_INET6, attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE])))
    return message(RTM_NEWLINK, 0, seq,
                   ifinfo() + attr(IFLA_IFNAME, _name(name)) + attr(IFLA_AF_SPEC, inet6))


def link_del(seq, name):
    return message(RTM_DELLINK, 0, seq, ifinfo() + attr(IFLA_IFNAME, _name(name)))


def link_get(seq, name):
    """RTM_GETLINK of one link by name (answered by one RTM_NEWLINK, or an error)."""
    return message(RTM_GETLINK, 0, seq, ifinfo() + attr(IFLA_IFNAME, _name(name)), ack=False)


def link_dump(seq):
    """RTM_GETLINK of every link (answered by RTM_NEWLINK parts)."""
    return message(RTM_GETLINK, NLM_F_DUMP, seq, ifinfo(), ack=False)


def addr_add(seq, index, address, prefixlen):
    """ADDRESS (an ipaddress object) on link INDEX; IPv6 ones permanent, as
    pyroute2 and iproute2 make them."""
    raw = _raw(address)
    if address.version == 4:
        body = struct.pack("BBBBi", AF_INET, prefixlen, 0, 0, index) \
            + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
    else:
        body = struct.pack("BBBBi", AF_INET6, prefixlen, IFA_F_PERMANENT, 0, index) \
            + attr(IFA_ADDRESS, raw)
    return message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def addr_dump(seq, family=0):
    return message(RTM_GETADDR, NLM_F_DUMP, seq, struct.pack("BBBBi", family, 0, 0, 0, 0),
                   ack=False)


def _rtmsg(family, dst_len):
    return struct.pack("BBBBBBBBI", family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)


def route(seq, gateway, dst=None, delete=False):
    """The route to DST (an ip_network; None: the default route) via GATEWAY
    in the main table: created or replaced, or (DELETE) deleted."""
    body = _rtmsg(_family(gateway), 0 if dst is None else dst.prefixlen)
    if dst is not None:
        body += attr(RTA_DST, _raw(dst.network_address))
    body += attr(RTA_GATEWAY, _raw(gateway))
    if delete:
        return message(RTM_DELROUTE, 0, seq, body)
    return message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def default_route(seq, gateway):
    """The default route via GATEWAY in the main table (created or replaced)."""
    return route(seq, gateway)


def route_dump(seq, family):
    return message(RTM_GETROUTE, NLM_F_DUMP, seq, struct.pack("BBBBBBBBI", family, 0, 0, 0,
                                                              0, 0, 0, 0, 0), ack=False)


# ---- reading the kernel's messages ----------------------------------------------------

def messages(data):
    """(type, flags, seq, body) of each message in one datagram."""
    off, n = 0, len(data)
    while off + 16 <= n:
        length, kind, flags, seq, _ = struct.unpack_from("IHHII", data, off)
        if length < 16:
            return
        yield kind, flags, seq, data[off + 16:off + length]
        off += (length + 3) & ~3


def attrs(data, off=0):
    """{type: payload} of the attributes in DATA from OFF (nested ones stay bytes)."""
    out = {}
    n = len(data)
    while off + 4 <= n:
        length, kind = struct.unpack_from("HH", data, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


def _str(b):
    return b.split(b"\0", 1)[0].decode(errors="replace")


def _ip(b):
    return _socket.inet_ntop(AF_INET if len(b) == 4 else AF_INET6, b)


def decode_link(body):
    """An RTM_NEWLINK/RTM_DELLINK as the dict Relay reads: index, flags,
    ifname, master, mtu, alias, mac, kind."""
    _, _, index, flags, _ = struct.unpack_from("BxHiII", body)
    a = attrs(body, 16)
    kind = None
    if IFLA_LINKINFO in a:
        k = attrs(a[IFLA_LINKINFO]).get(IFLA_INFO_KIND)
        kind = _str(k) if k is not None else None
    mac = a.get(IFLA_ADDRESS)
    return {"index": index, "flags": flags,
            "ifname": _str(a[IFLA_IFNAME]) if IFLA_IFNAME in a else None,
            "master": struct.unpack("I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else None,
            "mtu": struct.unpack("I", a[IFLA_MTU])[0] if IFLA_MTU in a else None,
            "alias": _str(a[IFLA_IFALIAS]) if IFLA_IFALIAS in a else None,
            "mac": ":".join(f"{x:02x}" for x in mac) if mac else None, "kind": kind}


def decode_addr(body):
    """An RTM_NEWADDR/RTM_DELADDR: family, prefixlen, index, address, label."""
    family, prefixlen, _, _, index = struct.unpack_from("BBBBi", body)
    a = attrs(body, 8)
    addr = a.get(IFA_ADDRESS) or a.get(IFA_LOCAL)
    return {"family": family, "prefixlen": prefixlen, "index": index,
            "address": _ip(addr) if addr else None,
            "label": _str(a[IFA_LABEL]) if IFA_LABEL in a else None}


def decode_route(body):
    """An RTM_NEWROUTE/RTM_DELROUTE: family, dst_len, table, type, dst, gateway, oif."""
    family, dst_len, _, _, table, _, _, rtype = struct.unpack_from("BBBBBBBB", body)
    a = attrs(body, 12)
    if RTA_TABLE in a:
        table = struct.unpack("I", a[RTA_TABLE])[0]
    return {"family": family, "dst_len": dst_len, "table": table, "type": rtype,
            "dst": _ip(a[RTA_DST]) if RTA_DST in a else None,
            "gateway": _ip(a[RTA_GATEWAY]) if RTA_GATEWAY in a else None,
            "oif": struct.unpack("I", a[RTA_OIF])[0] if RTA_OIF in a else None}
