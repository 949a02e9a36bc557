"""Ownership: `net apply FILE` adds, changes and prunes only what FILE
declared; networks from `net create`, containers' attachments (CNI, `net
attach`) and another file's networks stay.  `net rm` of a network with
containers attached refuses and names them unless --force.  Each step is
checked in the kernel (bridges, veths, nft rules, leases)."""

import json
import os

from emergence.relay.engine import Relay

from .conftest import leases, nft_table, ping, sh
from .test_cni import cni, conf
from .test_validation import net


def bridges(host):
    return sorted(line.split(":")[1].strip() for line in
                  sh("ip", "-n", host, "-o", "link", "show", "type", "bridge").stdout
                  .splitlines())


def veths(host):
    return len(sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout.splitlines())


def rules(host, state):
    return sh("ip", "netns", "exec", host, "nft", "list", "table", "inet", nft_table(state),
              check=False).stdout


def owners(state):
    r = Relay(state)
    try:
        return {k: n.owner for k, n in r.desired().items()}
    finally:
        r.close()


def toml(path, *nets, atts=()):
    body = ""
    for name, subnet in nets:
        body += f'[networks.{name}]\nsubnets = ["{subnet}"]\nbridge = "rl{name}"\n'
    for n, c, ns in atts:
        body += f'[[attachments]]\nnetwork = "{n}"\ncontainer = "{c}"\nnetns = "{ns}"\n'
    path.write_text(body)
    return str(path)


def test_apply_changes_only_what_its_file_owns(tmp_path, netns, host):
    state = str(tmp_path / "s")
    a, b, c, d = (netns.new(x) for x in "abcd")
    # red from the CLI, a container on it through `net attach`, another through CNI
    assert net(host, state, "create", "red", "--subnet", "10.88.0.0/24",
               "--bridge", "rlred").returncode == 0
    assert net(host, state, "attach", "red", "ca", netns.path(a), "-p", "8080:80"
               ).returncode == 0
    cc = conf(tmp_path, network="red", stateDir=state)
    rc, res = cni(host, "ADD", cc, "cb", netns.path(b))
    assert rc == 0, res
    # file one declares blue (and a container on it); file two declares green
    one = toml(tmp_path / "one.toml", ("blue", "10.89.0.0/24"),
               atts=[("blue", "cc", netns.path(c))])
    two = toml(tmp_path / "two.toml", ("green", "10.90.0.0/24"))
    assert net(host, state, "apply", one).returncode == 0
    p = net(host, state, "apply", two)
    assert p.returncode == 0 and "- net:" not in p.stdout, p.stdout   # nothing pruned
    assert bridges(host) == ["rlblue", "rlgreen", "rlred"]
    assert veths(host) == 3 and ping(a, "10.88.0.1") and ping(b, "10.88.0.1")
    assert "dport 8080" in rules(host, state)
    own = owners(state)
    assert own["net:red"] == "cli" and own["att:red/ca/eth0"] == "cli"
    assert own["att:red/cb/eth0"] == "cni:cb" and own["pf:tcp/*/8080"] == "cli"
    assert own["net:blue"] == own["att:blue/cc/eth0"] == os.path.abspath(one)
    assert own["net:green"] == os.path.abspath(two)
    # file one now declares purple instead: blue (and its container) go, nothing else
    one = toml(tmp_path / "one.toml", ("purple", "10.91.0.0/24"))
    p = net(host, state, "apply", one)
    assert p.returncode == 0, p.stderr
    assert sorted(line for line in p.stdout.splitlines() if line.startswith("-")) == \
        ["- att:blue/cc/eth0", "- net:blue"]
    assert bridges(host) == ["rlgreen", "rlpurple", "rlred"] and veths(host) == 2
    assert set(leases(state)) == {"red"} and len(leases(state)["red"]) == 2
    # a file may not take another file's network, nor a container's forward
    bad = toml(tmp_path / "bad.toml", ("green", "10.90.0.0/24"))
    p = net(host, state, "apply", bad)
    assert p.returncode == 1 and f"net:green belongs to {os.path.abspath(two)}" in p.stderr
    assert bridges(host) == ["rlgreen", "rlpurple", "rlred"]
    # an empty file one: only purple goes
    assert net(host, state, "apply", toml(tmp_path / "one.toml")).returncode == 0
    assert bridges(host) == ["rlgreen", "rlred"] and veths(host) == 2
    # --prune-all: the old meaning, everything declared goes; red has containers: --force
    p = net(host, state, "apply", toml(tmp_path / "one.toml"), "--prune-all")
    assert p.returncode == 1 and "(ca, cb)" in p.stderr and "--force" in p.stderr, p.stderr
    assert bridges(host) == ["rlgreen", "rlred"] and veths(host) == 2
    p = net(host, state, "apply", toml(tmp_path / "one.toml"), "--prune-all", "--force")
    assert p.returncode == 0, p.stderr
    assert bridges(host) == [] and veths(host) == 0 and leases(state) == {}
    assert rules(host, state) == ""
    del d


def test_a_file_adopts_a_cli_network_and_keeps_its_containers(tmp_path, netns, host):
    state = str(tmp_path / "s")
    a = netns.new("a")
    assert net(host, state, "create", "red", "--subnet", "10.88.0.0/24",
               "--bridge", "rlred").returncode == 0
    assert net(host, state, "attach", "red", "ca", netns.path(a)).returncode == 0
    f = toml(tmp_path / "f.toml", ("red", "10.88.0.0/24"))
    p = net(host, state, "apply", f)
    assert p.returncode == 0 and p.stdout == "no changes\n", p.stdout + p.stderr
    assert owners(state)["net:red"] == os.path.abspath(f)
    # the file no longer declares red: ca is attached, refused and named
    p = net(host, state, "apply", toml(tmp_path / "f.toml"))
    assert p.returncode == 1 and "(ca)" in p.stderr and "no longer declares" in p.stderr
    assert bridges(host) == ["rlred"] and ping(a, "10.88.0.1")
    f = toml(tmp_path / "f.toml", ("red", "10.88.0.0/24"))
    assert net(host, state, "apply", f).stdout == "no changes\n"


def test_net_rm_refuses_while_containers_are_attached(tmp_path, netns, host):
    state = str(tmp_path / "s")
    nss = [netns.new(f"c{i}") for i in range(10)]
    assert net(host, state, "create", "red", "--subnet", "10.88.0.0/24",
               "--bridge", "rlred").returncode == 0
    for i, ns in enumerate(nss):
        assert net(host, state, "attach", "red", f"c{i}", netns.path(ns)).returncode == 0
    p = net(host, state, "rm", "red")
    assert p.returncode == 1 and "c0, c1, c2" in p.stderr and "and 2 more" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert bridges(host) == ["rlred"] and veths(host) == 10
    assert len(leases(state)["red"]) == 10 and ping(nss[0], "10.88.0.1")
    # detached, it goes without --force
    for i in range(10):
        assert net(host, state, "detach", "red", f"c{i}").returncode == 0
    assert net(host, state, "rm", "red").returncode == 0
    assert bridges(host) == [] and leases(state) == {}


def test_net_rm_force_detaches_them(tmp_path, netns, host):
    state = str(tmp_path / "s")
    a = netns.new("a")
    assert net(host, state, "create", "red", "--subnet", "10.88.0.0/24",
               "--bridge", "rlred").returncode == 0
    assert net(host, state, "attach", "red", "ca", netns.path(a), "-p", "8080:80"
               ).returncode == 0
    assert net(host, state, "rm", "red", "--force").returncode == 0
    assert bridges(host) == [] and veths(host) == 0 and leases(state) == {}
    assert rules(host, state) == ""
    assert "eth0" not in sh("ip", "-n", a, "-o", "link").stdout


def test_state_without_owners_loads_as_cli(tmp_path, netns, host):
    """A graph written before owners existed (here the whole-file format the
    journals take over): its nodes are `cli`'s, a file apply that does not
    declare them leaves them, and one that does adopts them."""
    state = tmp_path / "s"
    state.mkdir()
    a = netns.new("a")
    (state / "graph.json").write_text(json.dumps({
        "networks": {"red": {"bridge": "rlred", "subnets": ["10.88.0.0/24"],
                             "veth_prefix": "rl"}},
        "attachments": [{"network": "red", "container": "ca", "netns": netns.path(a),
                         "origin": "file"}],
        "port_forwards": [], "routes": []}))
    r = Relay(str(state), host_netns=host)
    try:
        assert r.instance == ""          # existing state: the default instance's names
        r.apply()
        assert {k: n.owner for k, n in r.desired().items()} == \
            {"net:red": "cli", "att:red/ca/eth0": "cli"}
    finally:
        r.close()
    assert ping(a, "10.88.0.1")
    other = toml(tmp_path / "o.toml", ("blue", "10.89.0.0/24"))
    assert net(host, str(state), "apply", other).returncode == 0
    assert bridges(host) == ["rlblue", "rlred"] and ping(a, "10.88.0.1")
    f = toml(tmp_path / "f.toml", ("red", "10.88.0.0/24"), atts=[("red", "ca", netns.path(a))])
    p = net(host, str(state), "apply", f)
    assert p.returncode == 0 and p.stdout == "no changes\n", p.stdout + p.stderr
    assert owners(str(state))["att:red/ca/eth0"] == os.path.abspath(f)
    assert net(host, str(state), "apply", toml(tmp_path / "f.toml")).returncode == 0
    assert bridges(host) == ["rlblue"] and veths(host) == 0
    assert rules(host, str(state)) != "" and nft_table(str(state)) == "emergence"
    assert net(host, str(state), "apply", toml(tmp_path / "o.toml")).returncode == 0
    assert bridges(host) == [] and rules(host, str(state)) == ""
