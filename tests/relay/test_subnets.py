"""Subnet safety: a Relay subnet or static route that would cover the host's
own addresses or routes (here the test's "host" netns: an uplink with an
address and a route through it) is refused, naming what it collides with,
and the host's network is only read -- unless --allow-overlap."""

import json
import subprocess

import pytest

from emergence.relay.engine import Relay

from .conftest import kernel, leases, sh
from .test_cni import cni, conf
from .test_validation import net


@pytest.fixture
def uplink(netns, host):
    """rlup0 in the host netns: 192.168.77.1/24, a route 172.30.0.0/16 via .254."""
    out = netns.new("up")
    sh("ip", "-n", host, "link", "add", "rlup0", "type", "veth", "peer", "name", "rlup1",
       "netns", out)
    sh("ip", "-n", host, "addr", "add", "192.168.77.1/24", "dev", "rlup0")
    sh("ip", "-n", host, "addr", "add", "fd77::1/64", "dev", "rlup0", "nodad")
    sh("ip", "-n", host, "link", "set", "rlup0", "up")
    sh("ip", "-n", host, "route", "add", "172.30.0.0/16", "via", "192.168.77.254")
    return host


@pytest.mark.parametrize("subnet,what", [
    ("192.168.77.0/25", "address 192.168.77.1/24 of host interface rlup0"),
    ("192.168.0.0/16", "address 192.168.77.1/24 of host interface rlup0"),
    ("172.30.5.0/24", "route 172.30.0.0/16 via 192.168.77.254 dev rlup0"),
    ("fd77::/64", "address fd77::1/64 of host interface rlup0"),
    ("127.0.0.0/16", "host interface lo"),
])
def test_a_subnet_over_the_hosts_is_refused_naming_it(tmp_path, uplink, subnet, what):
    state = str(tmp_path / "s")
    before = kernel(uplink)
    p = net(uplink, state, "create", "red", "--subnet", subnet, "--bridge", "rlred")
    assert p.returncode == 1 and what in p.stderr and "--allow-overlap" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert kernel(uplink) == before and leases(state) == {}
    assert json.loads(net(uplink, state, "ls", "--json").stdout) == []


def test_allow_overlap_takes_it_and_the_network_works(tmp_path, netns, uplink):
    state = str(tmp_path / "s")
    p = net(uplink, state, "create", "red", "--subnet", "172.30.5.0/24", "--bridge", "rlred",
            "--allow-overlap")
    assert p.returncode == 0, p.stderr
    assert "172.30.5.1/24" in sh("ip", "-n", uplink, "addr", "show", "rlred").stdout
    # its own bridge's address and route are no collision when it is remade or repaired
    sh("ip", "-n", uplink, "link", "del", "rlred")
    r = Relay(state, host_netns=uplink)
    try:
        assert [str(c) for c in r.apply(full=True)] == ["! net:red  (bridge missing)"]
    finally:
        r.close()
    assert "172.30.5.1/24" in sh("ip", "-n", uplink, "addr", "show", "rlred").stdout
    p = net(uplink, state, "rm", "red")
    assert p.returncode == 0, p.stderr


def test_default_routes_and_absurd_prefixes_are_refused(tmp_path, uplink):
    state = str(tmp_path / "s")
    before = kernel(uplink)
    for subnet, word in (("0.0.0.0/0", "default route"), ("::/0", "default route"),
                         ("10.0.0.0/31", "prefix length"), ("0.0.0.0/4", "prefix length"),
                         ("fd00::/127", "prefix length"), ("fd00::/16", "prefix length")):
        p = net(uplink, state, "create", "red", "--subnet", subnet, "--allow-overlap")
        assert p.returncode == 1 and word in p.stderr, (subnet, p.stderr)
    assert kernel(uplink) == before


def test_another_relay_network_is_named(tmp_path, uplink):
    state = str(tmp_path / "s")
    assert net(uplink, state, "create", "red", "--subnet", "10.88.0.0/24",
               "--bridge", "rlred").returncode == 0
    before = kernel(uplink)
    p = net(uplink, state, "create", "blue", "--subnet", "10.88.0.128/25", "--bridge", "rlblue",
            "--allow-overlap")
    assert p.returncode == 1 and "of network 'red'" in p.stderr, p.stderr
    assert kernel(uplink) == before
    assert net(uplink, state, "rm", "red").returncode == 0


def test_static_routes_over_the_hosts_need_allow_overlap(tmp_path, uplink):
    state = str(tmp_path / "s")
    f = tmp_path / "net.toml"
    f.write_text('[networks.red]\nsubnets = ["10.88.0.0/24"]\nbridge = "rlred"\n'
                 '[[routes]]\ndestination = "172.30.9.0/24"\nvia = "10.88.0.9"\n')
    before = kernel(uplink)
    p = net(uplink, state, "apply", str(f))
    assert p.returncode == 1 and "route:172.30.9.0/24.destination" in p.stderr \
        and "route 172.30.0.0/16 via 192.168.77.254" in p.stderr, p.stderr
    assert kernel(uplink) == before
    p = net(uplink, state, "apply", str(f), "--allow-overlap")
    assert p.returncode == 0, p.stderr
    assert "172.30.9.0/24 via 10.88.0.9" in sh("ip", "-n", uplink, "route").stdout
    # applied again: its own route is not a collision
    assert net(uplink, state, "apply", str(f)).stdout == "no changes\n"
    f.write_text("")
    assert net(uplink, state, "apply", str(f)).returncode == 0
    assert "172.30.9.0" not in sh("ip", "-n", uplink, "route").stdout


def test_cni_config_overlapping_the_host_is_error_7_and_leaves_nothing(tmp_path, netns, uplink):
    c = conf(tmp_path, subnets=["192.168.77.0/24"])
    a = netns.new("a")
    before = kernel(uplink, a)
    rc, err = cni(uplink, "ADD", c, "c1", netns.path(a))
    assert rc == 1 and err["code"] == 7 and "rlup0" in err["details"], err
    assert kernel(uplink, a) == before and leases(c["stateDir"]) == {}


def test_the_host_is_only_read(tmp_path, uplink):
    """Refusals and an accepted network leave the host's own routes as they were."""
    state = str(tmp_path / "s")
    routes = sh("ip", "-n", uplink, "route", "show", "table", "all").stdout
    net(uplink, state, "create", "red", "--subnet", "192.168.77.0/24")
    net(uplink, state, "create", "red", "--subnet", "10.88.0.0/24", "--bridge", "rlred")
    net(uplink, state, "rm", "red")
    assert sh("ip", "-n", uplink, "route", "show", "table", "all").stdout == routes
    assert subprocess.run(["ip", "-n", uplink, "link", "show", "rlred"],
                          capture_output=True).returncode != 0
