"""Relay's own rtnetlink (nlmsg.py, kernel.py) against the kernel: reads
agree with iproute2, and a bridge keeps its MAC as ports come and go."""

import json

from emergence.relay.graph import Network
from emergence.relay.instance import mark
from emergence.relay.kernel import ALIAS_PREFIX

from .conftest import sh


def test_reads_agree_with_iproute2(relay, netns, host):
    relay.create_network(Network("red", "rlred", ["10.88.0.0/24"], veth_prefix="rl"))
    a = netns.new("a")
    att = relay.attach("red", "c1", netns.path(a))
    k = relay.kernel
    br = json.loads(sh("ip", "-n", host, "-j", "-d", "link", "show", "rlred").stdout)[0]
    link = k.get_link("rlred")
    assert (link["index"], link["mtu"], link["mac"], link["kind"], link["up"]) == \
        (br["ifindex"], br["mtu"], br["address"], "bridge", True)
    assert link["alias"] == ALIAS_PREFIX + mark(relay.instance, "net:red")
    host_end = k.get_link(att.host_ifname("rl", relay.instance))
    assert host_end["master"] == br["ifindex"] and host_end["kind"] == "veth"
    assert k.get_link("rl-nonexistent") is None
    assert k.addresses(br["ifindex"]) >= {("10.88.0.1", 24)}
    sock = k.ns(netns.path(a))
    try:
        assert k.default_routes(sock) == {"10.88.0.1"}
        inner = k.get_link("eth0", sock)
        assert k.addresses(inner["index"], sock) >= {(str(att.addresses[0]), 24)}
    finally:
        k.forget_ns(netns.path(a))


def test_a_bridge_keeps_its_mac_when_a_port_with_a_lower_one_joins(relay, netns, host):
    """Without a MAC of its own a bridge takes its lowest port's, and every
    container's neighbour entry for the gateway goes stale."""
    relay.create_network(Network("red", "rlred", ["10.88.0.0/24"], veth_prefix="rl"))
    mac = relay.kernel.get_link("rlred")["mac"]
    for i in range(3):
        att = relay.attach("red", f"c{i}", netns.path(netns.new(f"m{i}")))
        sh("ip", "-n", host, "link", "set", att.host_ifname("rl", relay.instance), "address",
           f"02:00:00:00:00:0{i + 1}")
        assert relay.kernel.get_link("rlred")["mac"] == mac


def test_a_bridge_keeps_its_networks_mtu_when_a_port_with_a_smaller_one_joins(
        relay, netns, host):
    """The network's MTU is set on its bridge, not only made with it: the
    kernel then leaves it (and walks no ports to lower it on each attach)."""
    relay.create_network(Network("red", "rlred", ["10.88.0.0/24"], veth_prefix="rl", mtu=1450))
    assert relay.kernel.get_link("rlred")["mtu"] == 1450
    att = relay.attach("red", "c1", netns.path(netns.new("m")))
    sh("ip", "-n", host, "link", "set", att.host_ifname("rl", relay.instance), "mtu", "1400")
    sh("ip", "-n", host, "link", "add", "rlsmall", "mtu", "1300", "type", "veth", "peer", "name",
       "rlsmall1", "mtu", "1300")
    sh("ip", "-n", host, "link", "set", "rlsmall", "master", "rlred")
    assert relay.kernel.get_link("rlred")["mtu"] == 1450
