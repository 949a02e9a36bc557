"""Two Relays on one host (two state directories, one netns playing the
host): each has its own nft table, bridge names and veth names, neither
touches the other's, and cleanup removes only its own."""

import pytest

from emergence.errors import EmergenceError
from emergence.relay.engine import Relay
from emergence.relay.instance import resolve

from .conftest import nft_table, ping, sh
from .test_cni import cni, conf
from .test_validation import net


def links(host, kind):
    return sorted(line.split(":")[1].strip().split("@")[0] for line in
                  sh("ip", "-n", host, "-o", "link", "show", "type", kind).stdout.splitlines())


def table(host, name):
    return sh("ip", "netns", "exec", host, "nft", "list", "table", "inet", name,
              check=False).stdout


def test_two_state_dirs_never_touch_each_others_objects(tmp_path, netns, host):
    sa, sb = str(tmp_path / "a"), str(tmp_path / "b")
    ca, cb = netns.new("ca"), netns.new("cb")
    # the same network name, container id and interface in both, default bridge names
    assert net(host, sa, "create", "red", "--subnet", "10.88.0.0/24").returncode == 0
    assert net(host, sb, "create", "red", "--subnet", "10.89.0.0/24").returncode == 0
    assert net(host, sa, "attach", "red", "c1", netns.path(ca), "-p", "8080:80"
               ).returncode == 0
    p = net(host, sb, "attach", "red", "c1", netns.path(cb), "-p", "8081:80")
    assert p.returncode == 0, p.stderr
    ta, tb = nft_table(sa), nft_table(sb)
    assert ta != tb and ta.startswith("emergence-") and tb.startswith("emergence-")
    bridges = links(host, "bridge")
    assert len(bridges) == 2 and all(b.endswith("-red") for b in bridges), bridges
    assert len(links(host, "veth")) == 2
    assert "dport 8080" in table(host, ta) and "dport 8080" not in table(host, tb)
    assert "dport 8081" in table(host, tb) and "dport 8081" not in table(host, ta)
    assert ping(ca, "10.88.0.1") and ping(cb, "10.89.0.1")
    # A's apply of its own graph leaves B's table alone (one transaction per table)
    ra = Relay(sa, host_netns=host)
    try:
        ra.apply(full=True)
    finally:
        ra.close()
    assert "dport 8081" in table(host, tb)
    # A goes entirely: B's bridge, veth, rules and leases stay
    assert net(host, sa, "rm", "red", "--force").returncode == 0
    assert table(host, ta) == "" and "dport 8081" in table(host, tb)
    assert len(links(host, "bridge")) == 1 and len(links(host, "veth")) == 1
    assert ping(cb, "10.89.0.1")
    assert "eth0" in sh("ip", "-n", cb, "-o", "link").stdout
    assert net(host, sb, "rm", "red", "--force").returncode == 0
    assert table(host, tb) == "" and links(host, "bridge") == []


def test_a_bridge_of_another_instance_is_not_taken_over(tmp_path, netns, host):
    """Before instances, a network of the same name and bridge in another
    state directory carried the same alias mark, and was adopted."""
    sa, sb = str(tmp_path / "a"), str(tmp_path / "b")
    assert net(host, sa, "create", "red", "--subnet", "10.88.0.0/24",
               "--bridge", "rlsame").returncode == 0
    p = net(host, sb, "create", "red", "--subnet", "10.89.0.0/24", "--bridge", "rlsame")
    assert p.returncode == 1 and "rlsame exists and is not Emergence's" in p.stderr, p.stderr
    assert "10.88.0.1/24" in sh("ip", "-n", host, "addr", "show", "rlsame").stdout
    assert "10.89.0.1" not in sh("ip", "-n", host, "addr", "show", "rlsame").stdout
    assert net(host, sa, "rm", "red").returncode == 0


def test_the_same_subnet_in_two_instances_is_refused(tmp_path, netns, host):
    sa, sb = str(tmp_path / "a"), str(tmp_path / "b")
    assert net(host, sa, "create", "red", "--subnet", "10.88.0.0/24").returncode == 0
    p = net(host, sb, "create", "red", "--subnet", "10.88.0.0/25")
    assert p.returncode == 1 and "10.88.0.1/24 of host interface" in p.stderr, p.stderr
    assert len(links(host, "bridge")) == 1
    assert net(host, sa, "rm", "red").returncode == 0


def test_cni_state_dirs_are_instances_too(tmp_path, netns, host):
    ca, cb = netns.new("ca"), netns.new("cb")
    c1 = conf(tmp_path, stateDir=str(tmp_path / "one"), bridge="rlone")
    c2 = conf(tmp_path, stateDir=str(tmp_path / "two"), bridge="rltwo",
              subnets=["10.92.0.0/24"], instance="second")
    assert cni(host, "ADD", c1, "c1", netns.path(ca))[0] == 0
    assert cni(host, "ADD", c2, "c1", netns.path(cb))[0] == 0
    assert nft_table(str(tmp_path / "two")) == "emergence-second"
    assert len(links(host, "veth")) == 2
    assert cni(host, "DEL", c1, "c1", netns.path(ca)) == (0, None)
    assert len(links(host, "veth")) == 1 and ping(cb, "10.92.0.1")
    assert cni(host, "DEL", c2, "c1", netns.path(cb)) == (0, None)


def test_instance_names(tmp_path):
    # explicit, recorded, and not changed later
    s = str(tmp_path / "x")
    Relay(s, instance="blue").close()
    assert resolve(s) == "blue" and nft_table(s) == "emergence-blue"
    with pytest.raises(EmergenceError, match="belongs to instance blue"):
        Relay(s, instance="green")
    with pytest.raises(EmergenceError, match="instance name"):
        Relay(str(tmp_path / "y"), instance="no/slash")
    # the default state directory keeps the names of before: table emergence
    d = tmp_path / "default"
    d.mkdir()
    assert resolve(str(d), default_state=str(d)) == ""
    # a state directory that already holds Relay's state too
    old = tmp_path / "old"
    old.mkdir()
    (old / "graph.log").write_text("")
    assert resolve(str(old)) == ""
    # a new one elsewhere: its own name, derived from its path, stable
    new = str(tmp_path / "new")
    Relay(new).close()
    assert resolve(new).startswith("s") and resolve(new) == Relay(new).instance
