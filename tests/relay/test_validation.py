"""Bad input is refused at Relay's edges before anything changes: CNI
configurations and CNI_* variables (CNI 1.1 error JSON with the spec's codes,
never a traceback), `net` arguments and graph files (one line).  Each test
checks the kernel afterwards: links, addresses, routes, nft rules, leases."""

import json
import os
import subprocess
import sys

import pytest

from emergence.relay.engine import Relay

from .conftest import kernel, leases, sh
from .test_cni import cni, conf

EM = [os.path.join(os.path.dirname(sys.executable), "emergence")]


def graph_keys(state):
    r = Relay(state)
    try:
        g = r.desired()
        return sorted(k for k, _ in g.items())
    finally:
        r.close()


def test_a_19_byte_ifname_is_error_4_and_leaves_nothing(tmp_path, netns, host):
    c = conf(tmp_path)
    a = netns.new("a")
    before = kernel(host, a)
    rc, err = cni(host, "ADD", c, "c19", netns.path(a), ifname="eth0123456789abcdef")
    assert rc == 1 and err["code"] == 4 and err["cniVersion"] == "1.1.0", err
    assert "CNI_IFNAME" in err["msg"] and "19 bytes" in err["details"], err
    assert kernel(host, a) == before
    assert leases(c["stateDir"]) == {} and graph_keys(c["stateDir"]) == []
    # nothing recorded: the next ADD, and a DEL of the refused one, work
    rc, res = cni(host, "ADD", c, "ok", netns.path(a))
    assert rc == 0 and res["ips"][0]["address"] == "10.91.0.2/24", res
    assert cni(host, "DEL", c, "ok", netns.path(a)) == (0, None)


@pytest.mark.parametrize("ifname", ["a/b", "a:b", "a b", ".", "..", "eth\x01", "ünïcödé-nämé"])
def test_illegal_ifnames_are_error_4(tmp_path, netns, host, ifname):
    c = conf(tmp_path)
    a = netns.new("a")
    before = kernel(host, a)
    rc, err = cni(host, "ADD", c, "cx", netns.path(a), ifname=ifname)
    assert rc == 1 and err["code"] == 4 and "CNI_IFNAME" in err["msg"], err
    assert kernel(host, a) == before and leases(c["stateDir"]) == {}


def test_bad_container_id_and_netns_are_error_4(tmp_path, netns, host):
    c = conf(tmp_path)
    a = netns.new("a")
    for cid, ns, var in (("../x", netns.path(a), "CNI_CONTAINERID"),
                         ("a/b", netns.path(a), "CNI_CONTAINERID"),
                         ("-lead", netns.path(a), "CNI_CONTAINERID"),
                         ("ok", "var/run/netns/x", "CNI_NETNS")):
        rc, err = cni(host, "ADD", c, cid, ns)
        assert rc == 1 and err["code"] == 4 and var in err["msg"], (cid, err)
    assert graph_keys(c["stateDir"]) == []


BAD_CONFIGS = [
    ({"subnets": ["10.91.0.0/33"]}, "subnets"),
    ({"subnets": [5]}, "subnets"),
    ({"subnets": ["0.0.0.0/0"]}, "default route"),
    ({"subnets": ["::/0"]}, "default route"),
    ({"subnets": ["0.0.0.0/2"]}, "prefix length"),
    ({"subnets": ["10.91.0.0/31"]}, "prefix length"),
    ({"subnets": ["10.91.0.1/24"]}, "host bits"),
    ({"mtu": "1500"}, "mtu"),
    ({"mtu": 100}, "mtu"),
    ({"subnets": ["fd00:91::/64"], "mtu": 1000}, "mtu"),
    ({"nat": "yes"}, "nat"),
    ({"bridge": "rl" + "x" * 14}, "bridge"),
    ({"bridge": "rl/x"}, "bridge"),
    ({"veth_prefix": "x/y"}, "veth_prefix"),
    ({"gateway": "10.92.0.1"}, "gateway"),
    ({"network": 5}, "network"),
    ({"network": "a/b"}, "network"),
    ({"stateDir": "relative/dir"}, "stateDir"),
    ({"runtimeConfig": []}, "runtimeConfig"),
    ({"runtimeConfig": {"portMappings": "80:80"}}, "portMappings"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": "80", "containerPort": 80}]}},
     "host_port"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 80}]}},
     "host_port"),
    ({"runtimeConfig": {"portMappings": [{"containerPort": 80}]}}, "hostPort"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80,
                                          "protocol": "sctp"}]}}, "proto"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80,
                                          "hostIP": "nope"}]}}, "host_address"),
    ({"runtimeConfig": {"ips": ["10.91.0.300/24"]}}, "ips"),
    ({"runtimeConfig": {"ips": "10.91.0.3"}}, "ips"),
    ({"prevResult": "x"}, "prevResult"),
    ({"instance": "bad name"}, "instance"),
]


@pytest.mark.parametrize("change,field", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_malformed_configs_are_error_7_and_leave_nothing(tmp_path, netns, host, change, field):
    c = conf(tmp_path, **change)
    a = netns.new("a")
    before = kernel(host, a)
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "cm",
           "CNI_NETNS": netns.path(a), "CNI_IFNAME": "eth0", "EMERGENCE_PLANNER_SOCKET": "off"}
    p = subprocess.run(["ip", "netns", "exec", host, EM[0] + "-cni"], input=json.dumps(c),
                       capture_output=True, text=True, env=env, timeout=60)
    err = json.loads(p.stdout)
    assert p.returncode == 1 and err["code"] == 7, err
    assert field in err["details"], err
    assert "Traceback" not in p.stderr, p.stderr
    assert kernel(host, a) == before
    assert leases(c["stateDir"]) == {}
    if os.path.isdir(c["stateDir"]):
        assert graph_keys(c["stateDir"]) == []


def test_add_refused_by_the_kernel_leaves_nothing_not_even_its_network(tmp_path, netns, host):
    """The container already has an interface of that name: the ADD fails
    after the network was created and the attachment recorded; all of it
    goes again (record, lease, veth, the network's bridge and nft table)."""
    c = conf(tmp_path, runtimeConfig={"portMappings": [{"hostPort": 8080,
                                                        "containerPort": 80}]})
    a = netns.new("a")
    sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "rlpeer")
    before = kernel(host, a)
    rc, err = cni(host, "ADD", c, "cz", netns.path(a))
    assert rc == 1 and err["code"] == 100 and "already exists" in err["details"], err
    assert kernel(host, a) == before
    assert leases(c["stateDir"]) == {} and graph_keys(c["stateDir"]) == []
    # a network that existed before the failed ADD stays, with its other containers
    b = netns.new("b")
    assert cni(host, "ADD", c, "cb", netns.path(b))[0] == 0
    rc, err = cni(host, "ADD", dict(c, runtimeConfig={}), "cz", netns.path(a))
    assert rc == 1 and err["code"] == 100, err
    assert graph_keys(c["stateDir"]) == ["att:rlcni/cb/eth0", "net:rlcni", "pf:tcp/*/8080"]
    assert list(leases(c["stateDir"])["rlcni"].values())[0]["key"] == "att:rlcni/cb/eth0"
    assert len(leases(c["stateDir"])["rlcni"]) == 1
    assert cni(host, "DEL", c, "cb", netns.path(b)) == (0, None)


def net(host, state, *args):
    return subprocess.run(["ip", "netns", "exec", host] + EM + ["net", "--state", state]
                          + list(args), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,word", [
    (["create", "red", "--subnet", "10.88.0.0/33"], "10.88.0.0/33"),
    (["create", "red", "--subnet", "0.0.0.0/0"], "default route"),
    (["create", "red", "--subnet", "10.88.0.0/24", "--mtu", "70000"], "mtu"),
    (["create", "red", "--subnet", "10.88.0.0/24", "--mtu", "x"], "--mtu"),
    (["create", "red", "--subnet", "10.88.0.0/24", "--bridge", "rl-sixteen-bytes"], "bridge"),
    (["create", "re/d", "--subnet", "10.88.0.0/24"], "name"),
    (["attach", "red", "c1", "/var/run/netns/x", "--ifname", "eth0123456789abcdef"], "19 bytes"),
    (["attach", "red", "c/1", "/var/run/netns/x"], "container"),
    (["attach", "red", "c1", "/var/run/netns/x", "-p", "99999:80"], "host_port"),
    (["attach", "red", "c1", "/var/run/netns/x", "--ip", "10.88.0.999"], "address"),
    (["detach", "red", "c1", "--ifname", "a b"], "--ifname"),
])
def test_cli_arguments_are_refused_in_one_line(tmp_path, netns, host, args, word):
    state = str(tmp_path / "s")
    a = netns.new("a")
    before = kernel(host, a)
    p = net(host, state, *args)
    assert p.returncode != 0 and word in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert kernel(host, a) == before and leases(state) == {}


@pytest.mark.parametrize("doc,word", [
    ('[networks.red]\nsubnets = ["10.88.0.0/24"]\nbridge = "rlred"\n'
     '[[attachments]]\nnetwork = "red"\ncontainer = "c1"\nnetns = "/x"\nifname = "'
     + "e" * 19 + '"\n', "19 bytes"),
    ('[networks.red]\nsubnets = ["10.88.0.0/24"]\nbridge = "rlred"\n'
     '[[routes]]\ndestination = "0.0.0.0/0"\nvia = "10.88.0.9"\n', "default route"),
    ('[networks.red]\nsubnets = ["10.88.0.0/24"]\nbridge = "rlred"\n'
     '[[routes]]\ndestination = "10.99.0.0/24"\nvia = "192.168.1.1"\n', "a route goes via"),
    ('[networks.red]\nsubnets = ["10.88.0.0/24"]\nbridge = "rlred"\n'
     '[[routes]]\ndestination = "10.88.0.0/25"\nvia = "10.88.0.9"\n', "overlaps"),
    ('[networks.red]\nsubnets = ["10.88.0.0/24"]\nmtu = "big"\n', "mtu"),
    ('[networks.red]\nsubnets = "10.88.0.0/24"\n[[port_forwards]]\nnetwork = "red"\n'
     'container = "c1"\nhost_port = 0\ncontainer_port = 80\n', "host_port"),
])
def test_graph_files_are_refused_in_one_line(tmp_path, netns, host, doc, word):
    state = str(tmp_path / "s")
    f = tmp_path / "net.toml"
    f.write_text(doc)
    before = kernel(host)
    p = net(host, state, "apply", str(f))
    assert p.returncode == 1 and word in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert kernel(host) == before


def test_state_from_before_these_checks_still_loads(tmp_path, host):
    """Values Relay itself accepted before (a non-ASCII name, a /7, a long
    container id with a colon) are refused in new input, not in its state."""
    state = tmp_path / "s"
    state.mkdir()
    (state / "graph.json").write_text(json.dumps({
        "networks": {"rëd": {"bridge": "rlred", "subnets": ["10.0.0.0/7"]}},
        "attachments": [{"network": "rëd", "container": "pod:c1", "netns": "/x",
                         "origin": "attach"}],
        "port_forwards": [{"network": "rëd", "container": "pod:c1", "host_port": 8080,
                           "container_port": 80}],
        "routes": []}))
    p = net(host, str(state), "ls", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["subnets"] == ["10.0.0.0/7"]
    r = Relay(str(state))
    try:
        assert sorted(k for k, _ in r.desired().items()) == \
            ["att:rëd/pod:c1/eth0", "net:rëd", "pf:tcp/*/8080"]
    finally:
        r.close()
    # new input with the same values is refused
    p = net(host, str(state), "create", "blü", "--subnet", "12.0.0.0/7")
    assert p.returncode == 1 and "name" in p.stderr
