"""nlmsg.py's requests are byte for byte what pyroute2 encodes for the same
request, and its decoding reads what pyroute2 reads (pyroute2 is the oracle,
here only; the kernel's acceptance of them is tested by every attach in
test_apply.py and test_cni.py)."""

from ipaddress import ip_address

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from emergence.relay import nlmsg


def pyroute2(cls, mtype, flags, seq, fields, attrs):
    msg = cls()
    for k, v in fields.items():
        msg[k] = v
    msg["attrs"] = attrs
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = 0x1 | 0x4 | flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("mac", [None, "02:42:ac:11:00:02"])
@pytest.mark.parametrize("names", [("rl1", "eth0"), ("rlabcdef0123456", "net1")])
def test_veth_add(mac, names):
    host, peer = names
    attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", 7), ("IFLA_MTU", 9000)]
    if mac:
        attrs.append(("IFLA_ADDRESS", mac))
    want = pyroute2(ifinfmsg, 16, 0x600, 41, {"index": 0, "flags": 1, "change": 1}, [
        ("IFLA_IFNAME", host), ("IFLA_MTU", 1400), ("IFLA_MASTER", 12),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {
            "attrs": [("VETH_INFO_PEER", {"attrs": attrs})]})]})])
    assert nlmsg.veth_add(41, host, 1400, 12, peer, 7, 9000, mac) == want


@pytest.mark.parametrize("up", [True, False])
def test_link_up(up):
    want = pyroute2(ifinfmsg, 16, 0, 3, {"index": 33, "flags": int(up), "change": 1}, [])
    assert nlmsg.link_up(3, 33, up) == want


def test_link_del():
    want = pyroute2(ifinfmsg, 17, 0, 9, {"index": 0}, [("IFLA_IFNAME", "rl0a1b2c3d4e5f")])
    assert nlmsg.link_del(9, "rl0a1b2c3d4e5f") == want


@pytest.mark.parametrize("addr,plen", [("10.88.3.17", 22), ("fd00:1:2::5", 64)])
def test_addr_add(addr, plen):
    a = ip_address(addr)
    v4 = a.version == 4
    want = pyroute2(ifaddrmsg, 20, 0x600, 5,
                    {"family": 2 if v4 else 10, "prefixlen": plen, "index": 4,
                     "flags": 0 if v4 else 0x80},
                    ([("IFA_LOCAL", addr)] if v4 else []) + [("IFA_ADDRESS", addr)])
    assert nlmsg.addr_add(5, 4, a, plen) == want


@pytest.mark.parametrize("gw", ["10.88.0.1", "fd00:1:2::1"])
def test_default_route(gw):
    g = ip_address(gw)
    want = pyroute2(rtmsg, 24, 0x500, 6,
                    {"family": 2 if g.version == 4 else 10, "dst_len": 0, "table": 254,
                     "proto": 3, "scope": 0, "type": 1}, [("RTA_GATEWAY", gw)])
    assert nlmsg.default_route(6, g) == want


def pyroute2_msg(cls, mtype, flags, seq, fields, attrs):
    """As pyroute2() above, with FLAGS taken as they are (no ack forced)."""
    msg = cls()
    for k, v in fields.items():
        msg[k] = v
    msg["attrs"] = attrs
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize("mac", [None, "02:aa:bb:cc:dd:ee"])
def test_bridge_add(mac):
    want = pyroute2(ifinfmsg, 16, 0x600, 4, {"index": 0, "flags": 1, "change": 1}, [
        ("IFLA_IFNAME", "rlred"), ("IFLA_MTU", 9000)] + ([("IFLA_ADDRESS", mac)] if mac else [])
        + [("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge"), ("IFLA_INFO_DATA", {
            "attrs": [("IFLA_BR_MCAST_SNOOPING", 0)]})]})])
    assert nlmsg.bridge_add(4, "rlred", 9000, mac) == want


@pytest.mark.parametrize("state,mtu,alias", [("up", 1400, None), (None, None, "emergence-relay:x"),
                                             ("down", 9000, "a")])
def test_link_set(state, mtu, alias):
    attrs = ([("IFLA_MTU", mtu)] if mtu else []) + ([("IFLA_IFALIAS", alias)] if alias else [])
    fields = {"index": 7, "flags": int(state == "up"), "change": int(state is not None)}
    want = pyroute2(ifinfmsg, 16, 0, 8, fields, attrs)
    assert nlmsg.link_set(8, 7, state, mtu, alias) == want


@pytest.mark.parametrize("dst,gw", [("10.1.0.0/16", "10.88.0.9"), ("fd00:9::/48", "fd00:1::9")])
@pytest.mark.parametrize("delete", [False, True])
def test_route_to_a_destination(dst, gw, delete):
    from ipaddress import ip_network
    d, g = ip_network(dst), ip_address(gw)
    want = pyroute2(rtmsg, 25 if delete else 24, 0 if delete else 0x500, 12,
                    {"family": 2 if g.version == 4 else 10, "dst_len": d.prefixlen,
                     "table": 254, "proto": 3, "scope": 0, "type": 1},
                    [("RTA_DST", str(d.network_address)), ("RTA_GATEWAY", gw)])
    assert nlmsg.route(12, g, d, delete) == want


def test_gets_and_dumps():
    assert nlmsg.link_get(3, "rlred") == pyroute2_msg(ifinfmsg, 18, 0x1, 3, {"index": 0},
                                                      [("IFLA_IFNAME", "rlred")])
    assert nlmsg.addr_dump(4) == pyroute2_msg(ifaddrmsg, 22, 0x301, 4, {"family": 0}, [])
    assert nlmsg.route_dump(5, 10) == pyroute2_msg(rtmsg, 26, 0x301, 5, {"family": 10}, [])


def test_decoding_matches_pyroute2s_reading():
    """Messages as the kernel sends them (encoded by pyroute2 here) read back
    with the fields pyroute2 reads."""
    link = pyroute2_msg(ifinfmsg, 16, 0, 1, {"index": 12, "flags": 0x1003, "change": 0}, [
        ("IFLA_IFNAME", "rlabc"), ("IFLA_MTU", 1450), ("IFLA_MASTER", 4),
        ("IFLA_IFALIAS", "emergence-relay:net:red"), ("IFLA_ADDRESS", "02:42:ac:11:00:02"),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]})])
    kind, _, seq, body = next(nlmsg.messages(link))
    assert (kind, seq) == (16, 1)
    assert nlmsg.decode_link(body) == {
        "index": 12, "flags": 0x1003, "ifname": "rlabc", "master": 4, "mtu": 1450,
        "alias": "emergence-relay:net:red", "mac": "02:42:ac:11:00:02", "kind": "veth"}
    addr = pyroute2_msg(ifaddrmsg, 20, 0, 2, {"family": 2, "prefixlen": 24, "index": 4},
                        [("IFA_LOCAL", "10.88.0.1"), ("IFA_ADDRESS", "10.88.0.1"),
                         ("IFA_LABEL", "rlred")])
    assert nlmsg.decode_addr(next(nlmsg.messages(addr))[3]) == {
        "family": 2, "prefixlen": 24, "index": 4, "address": "10.88.0.1", "label": "rlred"}
    route = pyroute2_msg(rtmsg, 24, 0, 3, {"family": 10, "dst_len": 48, "table": 252},
                         [("RTA_TABLE", 1000), ("RTA_DST", "fd00:9::"),
                          ("RTA_GATEWAY", "fd00:1::9"), ("RTA_OIF", 5)])
    assert nlmsg.decode_route(next(nlmsg.messages(route))[3]) == {
        "family": 10, "dst_len": 48, "table": 1000, "type": 0, "dst": "fd00:9::",
        "gateway": "fd00:1::9", "oif": 5}
    # two messages in one datagram, as a dump sends them
    assert [m[2] for m in nlmsg.messages(link + addr)] == [1, 2]


def test_link_no_ipv6_addresses():
    want = pyroute2(ifinfmsg, 16, 0, 5, {"index": 0}, [
        ("IFLA_IFNAME", "rl0a1b2c3d4e5f"),
        ("IFLA_AF_SPEC", {"attrs": [("AF_INET6", {"attrs": [
            ("IFLA_INET6_ADDR_GEN_MODE", 1)]})]})])
    assert nlmsg.link_no_ipv6_addresses(5, "rl0a1b2c3d4e5f") == want
