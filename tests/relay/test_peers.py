"""peers.py: a cluster network's peers as graph nodes.  The three requests a
peer costs are byte for byte what pyroute2 encodes (the oracle, here only;
the kernel's acceptance is tested by test_overlay_nodes.py's hosts), its
neighbour events decode as pyroute2 reads them, and peers live in the
graph like any node (documents, Relay's journal, a network's removal)."""

import ipaddress

import pytest
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from emergence.errors import ConfigError
from emergence.relay import peers
from emergence.relay.graph import Graph, network_from_dict

from .test_nlmsg import pyroute2

MAC, VTEP, GW = "02:1a:2b:3c:4d:5e", "10.217.3.2", "10.218.2.0"


@pytest.mark.parametrize("delete", [False, True])
def test_fdb(delete):
    want = pyroute2(ndmsg, 29 if delete else 28, 0 if delete else 0xC00, 7,
                    {"family": 7, "ifindex": 12, "state": 0x80, "flags": 2},
                    [("NDA_LLADDR", MAC), ("NDA_DST", VTEP)])
    assert peers.fdb(7, 12, MAC, VTEP, delete) == want


@pytest.mark.parametrize("delete", [False, True])
def test_neigh(delete):
    attrs = [("NDA_DST", GW)] + ([] if delete else [("NDA_LLADDR", MAC)])
    want = pyroute2(ndmsg, 29 if delete else 28, 0 if delete else 0x500, 8,
                    {"family": 2, "ifindex": 12, "state": 0x80}, attrs)
    assert peers.neigh(8, 12, GW, MAC, delete) == want


@pytest.mark.parametrize("delete", [False, True])
def test_route(delete):
    want = pyroute2(rtmsg, 25 if delete else 24, 0 if delete else 0x500, 9,
                    {"family": 2, "dst_len": 24, "table": 254, "proto": 3, "scope": 0,
                     "type": 1, "flags": 4},
                    [("RTA_DST", GW), ("RTA_GATEWAY", GW), ("RTA_OIF", 12)])
    assert peers.route(9, 12, ipaddress.ip_network("10.218.2.0/24"), GW, delete) == want


def test_neighbour_events_decode_as_pyroute2_reads_them():
    for family, dst in ((7, VTEP), (2, GW)):
        body = pyroute2(ndmsg, 29, 0, 1, {"family": family, "ifindex": 12, "state": 0x80},
                        [("NDA_DST", dst), ("NDA_LLADDR", MAC)])[16:]
        assert peers.decode_neigh(body) == {"family": family, "index": 12, "state": 0x80,
                                            "dst": dst, "mac": MAC}


def graph_with_peer():
    g = Graph()
    g.add_network(network_from_dict("ovl", {"subnets": ["10.218.1.0/24"],
                                            "owner": "cluster:ovl"}, "ovl"))
    p = peers.Peer("ovl", "h3", "10.218.2.0/24", VTEP, MAC, "evx-0123456789")
    g.peers[p.key] = p
    return g, p


def test_peers_are_graph_nodes():
    g, p = graph_with_peer()
    assert p.key == "peer:ovl/h3" and p.gateway == GW and g.get(p.key) is p
    doc = g.to_dict()
    assert doc["peers"] == [p.to_dict()] and "peers" not in Graph().to_dict()
    assert Graph.from_dict(doc).peers == {p.key: p}
    assert Graph.from_items(dict((k, n.to_dict()) for k, n in g.items())).peers == {p.key: p}
    # a peer names a network of the graph, and well-formed values
    bad = dict(doc, peers=[dict(p.to_dict(), network="nope")])
    with pytest.raises(ConfigError, match="no network 'nope'"):
        Graph.from_dict(bad)
    with pytest.raises(ConfigError, match="peers\\[0\\]"):
        Graph.from_dict(dict(doc, peers=[dict(p.to_dict(), vtep="not-an-address")]))
    with pytest.raises(ConfigError, match="device"):
        Graph.from_dict(dict(doc, peers=[dict(p.to_dict(), device="x" * 16)]))
    # the network's removal takes its peers with it
    from emergence.relay.owners import remove_network
    remove_network(g, "ovl")
    assert g.peers == {}
