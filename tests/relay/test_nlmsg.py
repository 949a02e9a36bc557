"""nlmsg.py's requests are byte for byte what pyroute2 encodes for the same
request (pyroute2 is the oracle; the kernel's acceptance of them is tested
by every attach in test_apply.py and test_cni.py)."""

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
