"""A cluster network's peers as nodes of Relay's graph (`peer:NET/NODE`):
per peer one FDB entry (its MAC at its VTEP), one neighbour entry (its
subnet's first address at that MAC) and one onlink route for its node
subnet, all on the network's VXLAN device (overlay.py).  The overlay agent
only edits the graph from etcd's watch; Relay's engine applies the edit
(three kernel operations a join, whatever the cluster's size), and the
node's reconciler (service.py) puts back an entry someone deleted, as it
does a bridge or a veth: its rtnetlink events name the peer's key.

The requests are plain rtnetlink (nlmsg.py's framing) over the Kernel's host
socket; a read of one peer is two neighbour dumps and a route dump,
filtered here (a host holds few neighbours)."""

import ipaddress
import struct

from . import nlmsg
from .nlmsg import RTM_DELNEIGH, RTM_GETNEIGH, RTM_NEWNEIGH, attr, mac_bytes, message

NDA_DST, NDA_LLADDR = 1, 2
AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NLM_F_APPEND = 0x800
RTNH_F_ONLINK = 4
ESRCH, ENOENT, ENODEV, EEXIST = 3, 2, 19, 17


class Peer:
    """Node NODE of cluster network NETWORK: SUBNET behind VTEP, its VXLAN
    device's MAC; DEVICE is this host's VXLAN device of NETWORK."""
    __slots__ = ("network", "node", "subnet", "vtep", "mac", "device", "owner")

    def __init__(self, network, node, subnet, vtep, mac, device, owner=None):
        self.network, self.node, self.device = network, node, device
        self.subnet = ipaddress.ip_network(subnet)
        self.vtep = str(ipaddress.IPv4Address(vtep))
        self.mac = mac.lower()
        self.owner = owner or f"cluster:{network}"

    @property
    def key(self):
        return f"peer:{self.network}/{self.node}"

    @property
    def gateway(self):
        """Where its subnet is routed: the subnet's first address, which the
        peer's VXLAN device holds (overlay.gateway_of)."""
        return str(self.subnet.network_address)

    def to_dict(self):
        return {"network": self.network, "node": self.node, "subnet": str(self.subnet),
                "vtep": self.vtep, "mac": self.mac, "device": self.device,
                "owner": self.owner}

    def __eq__(self, other):
        return isinstance(other, Peer) and self.to_dict() == other.to_dict()


def peer_from_dict(d, where, trusted=False):
    from ..errors import ConfigError
    from .graph import _fields
    _fields(where, d, {"network", "node", "subnet", "vtep", "mac", "device", "owner"})
    try:
        p = Peer(d["network"], d["node"], d["subnet"], d["vtep"], d["mac"], d["device"],
                 d.get("owner"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{where}: a peer needs network, node, subnet, vtep, mac and "
                          f"device ({e})") from None
    if not trusted:
        from . import fields
        fields.ifname(f"{where}.device", p.device)
        if p.subnet.version != 4:
            raise ConfigError(f"{where}.subnet: IPv4 (VXLAN over IPv4)")
    return p


# ---- the kernel ------------------------------------------------------------------------

def _ndmsg(family, index, state=NUD_PERMANENT, flags=0):
    return struct.pack("BxxxiHBB", family, index, state, flags, 0)


def fdb(seq, index, mac, vtep, delete=False):
    body = _ndmsg(AF_BRIDGE, index, flags=NTF_SELF) + attr(NDA_LLADDR, mac_bytes(mac)) \
        + attr(NDA_DST, ipaddress.IPv4Address(vtep).packed)
    if delete:
        return message(RTM_DELNEIGH, 0, seq, body)
    return message(RTM_NEWNEIGH, nlmsg.NLM_F_CREATE | NLM_F_APPEND, seq, body)


def neigh(seq, index, gw, mac, delete=False):
    body = _ndmsg(nlmsg.AF_INET, index) + attr(NDA_DST, ipaddress.IPv4Address(gw).packed)
    if delete:
        return message(RTM_DELNEIGH, 0, seq, body)
    body += attr(NDA_LLADDR, mac_bytes(mac))
    return message(RTM_NEWNEIGH, nlmsg.NLM_F_CREATE | nlmsg.NLM_F_REPLACE, seq, body)


def route(seq, index, subnet, gw, delete=False):
    body = struct.pack("BBBBBBBBI", nlmsg.AF_INET, subnet.prefixlen, 0, 0, nlmsg.RT_TABLE_MAIN,
                       nlmsg.RTPROT_BOOT, nlmsg.RT_SCOPE_UNIVERSE, nlmsg.RTN_UNICAST,
                       RTNH_F_ONLINK)
    body += attr(nlmsg.RTA_DST, subnet.network_address.packed) \
        + attr(nlmsg.RTA_GATEWAY, ipaddress.IPv4Address(gw).packed) \
        + attr(nlmsg.RTA_OIF, struct.pack("I", index))
    if delete:
        return message(nlmsg.RTM_DELROUTE, 0, seq, body)
    return message(nlmsg.RTM_NEWROUTE, nlmsg.NLM_F_CREATE | nlmsg.NLM_F_REPLACE, seq, body)


def neigh_dump(seq, family):
    return message(RTM_GETNEIGH, nlmsg.NLM_F_DUMP, seq, _ndmsg(family, 0, 0), ack=False)


def decode_neigh(body):
    """An RTM_NEWNEIGH/RTM_DELNEIGH: family, index, state, dst, mac."""
    family, index, state, flags, _ = struct.unpack_from("BxxxiHBB", body)
    a = nlmsg.attrs(body, 12)
    mac = a.get(NDA_LLADDR)
    return {"family": family, "index": index, "state": state,
            "dst": nlmsg._ip(a[NDA_DST]) if NDA_DST in a else None,
            "mac": ":".join(f"{x:02x}" for x in mac) if mac else None}


def _ok(call, *codes):
    from .kernel import NetlinkError
    try:
        call()
    except NetlinkError as e:
        if e.code not in codes:
            raise


def device_index(kernel, p):
    from ..errors import EmergenceError
    index = kernel.index(p.device)
    if index is None:
        raise EmergenceError(f"{p.key}: the overlay device {p.device} is missing; the "
                             f"cluster network's agent makes it (`[relay] cluster_networks`)")
    return index


def add(kernel, p):
    """The peer's three entries (each created or replaced: idempotent)."""
    index, sock = device_index(kernel, p), kernel.host
    kernel._op("fdb.add", p.device, p.mac, p.vtep)
    _ok(lambda: sock.request(fdb, index, p.mac, p.vtep), EEXIST)
    kernel._op("neigh.add", p.device, p.gateway)
    sock.request(neigh, index, p.gateway, p.mac)
    kernel._op("route.add", p.device, str(p.subnet))
    sock.request(route, index, p.subnet, p.gateway)


def remove(kernel, p):
    """Its entries, each already gone or not (its device may be gone too)."""
    index, sock = kernel.index(p.device), kernel.host
    if index is None:
        return
    kernel._op("route.del", p.device, str(p.subnet))
    _ok(lambda: sock.request(route, index, p.subnet, p.gateway, True), ESRCH, ENOENT, ENODEV)
    kernel._op("neigh.del", p.device, p.gateway)
    _ok(lambda: sock.request(neigh, index, p.gateway, p.mac, True), ENOENT, ENODEV)
    kernel._op("fdb.del", p.device, p.mac)
    _ok(lambda: sock.request(fdb, index, p.mac, p.vtep, True), ENOENT, ENODEV)


def _dumps(kernel, cache):
    """The host's FDB entries, neighbours and routes as sets, read once per
    plan (CACHE) however many peers it checks."""
    if not cache:
        sock = kernel.host
        kernel.lookups += 1
        cache["fdb"] = {(d["index"], d["mac"], d["dst"]) for d in map(decode_neigh, sock.request(
            neigh_dump, AF_BRIDGE, want=RTM_NEWNEIGH))}
        cache["neigh"] = {(d["index"], d["dst"], d["mac"]) for d in map(
            decode_neigh, sock.request(neigh_dump, nlmsg.AF_INET, want=RTM_NEWNEIGH))}
        cache["route"] = set()
        for body in sock.request(nlmsg.route_dump, nlmsg.AF_INET, want=nlmsg.RTM_NEWROUTE):
            d = nlmsg.decode_route(body)
            if d["table"] == nlmsg.RT_TABLE_MAIN:
                cache["route"].add((d["oif"], f"{d['dst']}/{d['dst_len']}", d["gateway"]))
    return cache


def observe(kernel, p, cache=None):
    """What of the peer's entries the kernel lacks ("" if none).  CACHE: a
    dict shared by the checks of one plan."""
    index = kernel.index(p.device)
    if index is None:
        return "overlay device missing"
    seen = _dumps(kernel, {} if cache is None else cache)
    if (index, p.mac, p.vtep) not in seen["fdb"]:
        return "FDB entry missing"
    if (index, p.gateway, p.mac) not in seen["neigh"]:
        return "neighbour missing"
    if (index, str(p.subnet), p.gateway) not in seen["route"]:
        return "route missing"
    return ""
