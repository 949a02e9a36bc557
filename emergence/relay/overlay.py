"""The data plane of a cluster network: one VXLAN device per network,
flannel's layout.  Its peers -- per peer one FDB entry (its VTEP), one
neighbour entry and one route for its node subnet -- are nodes of Relay's
graph (peers.py), applied by the engine and repaired by the reconciler: a
peer joining or leaving costs each other node exactly three kernel
operations, whatever the cluster's size.

The VXLAN device holds the node subnet's first address as a /32 and a MAC
derived from the node and network, so a node that restarts (or whose
device is remade) looks the same to its peers: they change nothing.
Containers attach to a local Relay network with the node subnet, as on one
host; the agent (agent.py) makes it with the MTU derived here.
"""

import hashlib
import ipaddress

VXLAN_OVERHEAD = 50     # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


def device_name(net):
    """`evx-` and a hash of the network's name: ≤15 bytes whatever the name."""
    return "evx-" + hashlib.sha256(net.encode()).hexdigest()[:10]


def device_mac(node, net):
    """A locally administered unicast MAC, stable for (node, network)."""
    h = bytearray(hashlib.sha256(f"{node}\0{net}".encode()).digest()[:6])
    h[0] = (h[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in h)


def gateway_of(subnet):
    """The address the VXLAN device holds: the node subnet's network address."""
    return str(ipaddress.ip_network(subnet).network_address)


WHY = {50: "VXLAN over IPv4: outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14",
       80: "WireGuard: outer IPv6-sized 40 + UDP 8 + WireGuard 32"}


def derive_mtu(underlay_if, underlay_mtu, override=None, overhead=VXLAN_OVERHEAD):
    """(container MTU, how it was derived) for `net inspect`."""
    if override:
        return int(override), f"set by the network (--mtu {int(override)})"
    mtu = int(underlay_mtu) - overhead
    return mtu, f"underlay {underlay_if} MTU {underlay_mtu} - {overhead} ({WHY[overhead]})"


class Dataplane:
    """The VXLAN device of network NET on this host (its peers are nodes of
    Relay's graph, peers.py; WireguardPlane keeps its own, through sync)."""

    def __init__(self, net, vni, port, vtep, subnet, mac, ipr=None):
        from pyroute2 import IPRoute
        self.ipr = ipr or IPRoute()
        self.net, self.vni, self.port = net, int(vni), int(port)
        self.vtep, self.mac = vtep, mac
        self.subnet = ipaddress.ip_network(subnet) if subnet else None
        self.ifname = device_name(net)
        self.index = None
        self.peers = {}        # WireGuard's peers: node -> (subnet, endpoint, public key)
        self.known = set()
        self.ops = []          # every kernel change: (op, what)

    # -- the underlay ------------------------------------------------------------
    def underlay(self):
        """(ifname, index, mtu) of the interface holding the VTEP address."""
        for a in self.ipr.get_addr(family=2):
            if a.get_attr("IFA_ADDRESS") == self.vtep:
                link = self.ipr.get_links(a["index"])[0]
                return link.get_attr("IFLA_IFNAME"), a["index"], link.get_attr("IFLA_MTU")
        from ..errors import EmergenceError
        raise EmergenceError(f"no interface on this host has the VTEP address {self.vtep}; "
                             "pass --vtep with one of this host's addresses")

    def ensure(self, mtu):
        """Make (or keep) the device; MTU is the container MTU (= the device's)."""
        _, under, _ = self.underlay()
        found = self.ipr.link_lookup(ifname=self.ifname)
        if found:
            link = self.ipr.get_links(found[0])[0]
            info = dict(link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")["attrs"])
            if (info.get("IFLA_VXLAN_ID") != self.vni
                    or info.get("IFLA_VXLAN_LOCAL") != self.vtep
                    or info.get("IFLA_VXLAN_PORT") != self.port):
                self.ipr.link("del", index=found[0])
                self.ops.append(("link-del", self.ifname))
                found = []
        if not found:
            self.ipr.link("add", ifname=self.ifname, kind="vxlan", vxlan_id=self.vni,
                          vxlan_local=self.vtep, vxlan_port=self.port, vxlan_learning=0,
                          vxlan_link=under, address=self.mac, mtu=mtu)
            self.ops.append(("link-add", self.ifname))
            found = self.ipr.link_lookup(ifname=self.ifname)
        self.index = found[0]
        self.ipr.link("set", index=self.index, mtu=mtu, address=self.mac, state="up")
        gw = gateway_of(self.subnet)
        have = {a.get_attr("IFA_ADDRESS")
                for a in self.ipr.get_addr(index=self.index, family=2)}
        for a in have - {gw}:
            self.ipr.addr("del", index=self.index, address=a, prefixlen=32)
        if gw not in have:
            self.ipr.addr("add", index=self.index, address=gw, prefixlen=32)
        return self.index

    def repair(self):
        """Put back peer entries someone removed from the kernel; returns how many."""
        self._read_peers()
        lost = [n for n, v in self.peers.items() if v not in self.known]
        self.known = set()
        for node in lost:
            self.add_peer(node, *self.peers[node])
        return len(lost)

    def remove(self):
        found = self.ipr.link_lookup(ifname=self.ifname)
        if found:
            self.ipr.link("del", index=found[0])
            self.ops.append(("link-del", self.ifname))
        self.peers.clear()

    # -- peers (WireGuard's: wg.py gives add_peer, remove_peer, _read_peers) ------
    def sync(self, wanted):
        """Make the peers WANTED {node: (subnet, vtep, mac)}: only the
        differences touch the kernel.  Returns the number of kernel ops."""
        before = len(self.ops)
        for node in [n for n, v in self.peers.items() if wanted.get(n) != v]:
            self.remove_peer(node)
        for node, v in wanted.items():
            if node in self.peers:
                continue
            if v in self.known:         # already in the kernel (agent restarted)
                self.peers[node] = v
                continue
            self.add_peer(node, *v)
        wanted_values = set(wanted.values())
        for v in self.known - wanted_values:     # left while the agent was down
            self.peers[f"stale:{v[0]}"] = v
            self.remove_peer(f"stale:{v[0]}")
        self.known = set()
        return len(self.ops) - before
