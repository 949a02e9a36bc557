"""Relay across hosts, each host running its own `emergence node` (the issue's
layout): `[relay] cluster_networks` makes the node's relay service join the
network (lease, VXLAN device, peers), the peers' FDB entries, neighbours and
routes are nodes of Relay's graph that the node's reconciler puts back, and
`--encrypt wireguard` on a kernel without it is one line that leaves nothing.

The hosts, underlay and etcd are test_overlay's Lab (network namespaces and
a secure etcd, all removed at teardown); each node runs in the foreground as
a child that dies with the test run."""

import json
import os
import signal
import subprocess

import pytest
from place.conftest import emergence_command, wait_for

from emergence.lifetime import dies_with_us

from .test_overlay import (
    NET,
    UNDERLAY_MTU,
    admin,
    cli,
    lab_context,
    links,
    nsx,
    peer_entries,
    reaches,
    sh,
    transfer,
    wireguard_in_kernel,
)


@pytest.fixture(name="lab")
def _lab(tmp_path):
    with lab_context(tmp_path) as lab:
        yield lab


def start_node(lab, i, wait=True, networks=NET):
    """`emergence node start --foreground` in host I's netns: relay only,
    its own run and state dirs, the cluster material in <state>/cluster
    (the default [relay] cluster_dir), the network as a flag."""
    from emergence.cluster import bootstrap
    h = lab.hosts[i]
    root = os.path.join(lab.tmp, f"node-h{i}")
    h["state"] = os.path.join(root, "state", "relay")     # the relay service's state
    h["run"] = os.path.join(root, "run")
    if "creds" not in h:
        m = bootstrap.install(os.path.join(root, "state", "cluster"),
                              bootstrap.issue(lab.sec.material.dir, f"h{i}", ["worker"]))
        h["creds"] = m.dir
        with open(os.path.join(root, "node.toml"), "w") as f:
            f.write(f'[node]\nrun_dir = "{h["run"]}"\nstate_dir = "{root}/state"\n'
                    'planner = false\nservices = ["relay"]\n'
                    f'[relay]\ncluster_etcd = "{lab.url}"\ncluster_vtep = "{h["vtep"]}"\n'
                    'cluster_lease_ttl = 2.0\nresync_interval = 5.0\n')
    log = open(os.path.join(root, "node.log"), "a")
    p = subprocess.Popen(["ip", "netns", "exec", h["ns"]] + emergence_command() + [
        "node", "start", "--foreground", "--config", os.path.join(root, "node.toml"),
        "--relay-cluster-networks", networks], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        preexec_fn=dies_with_us())
    lab.agents[i] = p
    if wait and networks:
        assert wait_for(lambda: (net_status(lab, i) or {}).get("subnet"), 30), \
            (node_status(lab, i), open(log.name).read()[-3000:])
    return net_status(lab, i)


def node_status(lab, i):
    r = sh(*emergence_command(), "node", "status", "--json", "--node-run-dir",
           lab.hosts[i]["run"], check=False)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


def net_status(lab, i):
    """This network's entry in the node's status (its relay service's)."""
    st = node_status(lab, i) or {}
    relay = st.get("services", {}).get("relay", {})
    return relay.get("cluster_networks", {}).get(NET)


def overlay_file(lab, i):
    with open(os.path.join(lab.hosts[i]["state"], f"overlay-{NET}.json")) as f:
        return json.load(f)


def stop_node(lab, i):
    r = sh(*emergence_command(), "node", "stop", "--node-run-dir", lab.hosts[i]["run"],
           check=False)
    assert lab.agents[i].wait(timeout=30) == 0, r.stdout + r.stderr


def held(lab, i, container):
    """Whether host I's IPAM holds an address for CONTAINER on the network."""
    from emergence.relay.ipam import IPAM
    return any(f"/{container}/" in h["key"]
               for h in IPAM(lab.hosts[i]["state"]).holders(NET).values())


def repaired(lab, i, what, delete):
    """Delete one of host I's peer entries with `ip`/`bridge`; True once it is
    back, put back by the node's reconciler (its count of changes grew)."""
    changes = node_status(lab, i)["services"]["relay"]["changes"]
    nsx(lab.hosts[i]["ns"], *delete)
    return wait_for(lambda: what in "".join(peer_entries(lab, i)), 15) and \
        node_status(lab, i)["services"]["relay"]["changes"] > changes


@pytest.mark.slow
def test_three_nodes_carry_the_cluster_network(lab):
    cli(lab, "create", NET, "--cluster", "--subnet", "10.218.0.0/16", "--node-prefix", "24",
        "--grace", "4")
    for i in (1, 2, 3):
        lab.add_host(i)
    subnets = {i: start_node(lab, i)["subnet"] for i in (1, 2)}
    assert wait_for(lambda: net_status(lab, 1)["peers"] == ["h2"], 20)
    # a join costs each existing node three kernel operations: FDB, neighbour, route
    ops = {i: overlay_file(lab, i)["kernel_ops"] for i in (1, 2)}
    subnets[3] = start_node(lab, 3)["subnet"]
    assert len(set(subnets.values())) == 3
    for i in (1, 2, 3):
        assert wait_for(lambda i=i: len(net_status(lab, i)["peers"]) == 2, 20), \
            [net_status(lab, j) for j in (1, 2, 3)]
    assert [overlay_file(lab, i)["kernel_ops"] - ops[i] for i in (1, 2)] == [3, 3]

    ca, a_ip = lab.container(1, "ca")
    cb, b_ip = lab.container(2, "cb")
    cc, c_ip = lab.container(3, "cc")
    # the MTU derived from the underlay, in the container and in `net inspect`
    st = net_status(lab, 1)
    assert st["mtu"] == UNDERLAY_MTU - 50 and "underlay eth0 MTU 1400 - 50" in st["mtu_derived"]
    assert f"mtu {UNDERLAY_MTU - 50} " in nsx(ca, "ip", "link", "show", "eth0").stdout
    doc = json.loads(cli(lab, "inspect", NET, "--cluster", "--state", lab.hosts[1]["state"],
                         creds=lab.hosts[1]["creds"]).stdout)
    assert {n["node"] for n in doc["nodes"]} == {"h1", "h2", "h3"}
    assert doc["this_node"]["peers"] == ["h2", "h3"]
    assert "underlay eth0 MTU 1400 - 50" in doc["this_node"]["mtu_derived"]
    assert wait_for(lambda: reaches(ca, b_ip), 10) and reaches(ca, c_ip) and reaches(cb, c_ip)
    assert transfer(lab, ca, cc, c_ip) == (1 << 20, a_ip)     # DF set: no black hole

    # the peers are nodes of the node's Relay graph, and its reconciler repairs them:
    # an FDB entry, a neighbour and a route deleted by hand come back
    dev, h3 = st["device"], overlay_file(lab, 3)
    gw3 = subnets[3].split("/")[0]
    assert repaired(lab, 1, h3["mac"], ("bridge", "fdb", "del", h3["mac"], "dev", dev,
                                        "dst", h3["vtep"]))
    assert repaired(lab, 1, f"{gw3} lladdr", ("ip", "neigh", "del", gw3, "dev", dev))
    assert repaired(lab, 1, subnets[3], ("ip", "route", "del", subnets[3], "dev", dev))
    assert wait_for(lambda: reaches(ca, c_ip), 10)
    # the device itself deleted: remade, with both peers' entries
    nsx(lab.hosts[1]["ns"], "ip", "link", "del", dev)
    assert wait_for(lambda: all(s in peer_entries(lab, 1)[2] for s in
                                (subnets[2], subnets[3])), 15)
    assert wait_for(lambda: reaches(ca, c_ip), 10) and reaches(ca, b_ip)

    # host B killed and restarted: the same subnet, A's kernel entries never changed
    entries = peer_entries(lab, 1)
    lab.agents[2].send_signal(signal.SIGKILL)
    lab.agents[2].wait()
    assert peer_entries(lab, 1) == entries
    assert start_node(lab, 2)["subnet"] == subnets[2]
    assert wait_for(lambda: reaches(ca, b_ip), 10)
    assert peer_entries(lab, 1) == entries

    # IPAM GC: a container that no longer exists gives its address back (the node's
    # reconciler sees its netns gone)
    cx, x_ip = lab.container(2, "cx")
    assert held(lab, 2, "cx")
    sh("ip", "netns", "del", cx)
    assert wait_for(lambda: not held(lab, 2, "cx"), 30)

    # host C dies for good: after the grace its entries are gone from A and B
    lab.agents[3].send_signal(signal.SIGKILL)
    lab.agents[3].wait()
    assert wait_for(lambda: all(gw3 not in "".join(peer_entries(lab, i)) and
                                h3["mac"] not in peer_entries(lab, i)[0]
                                for i in (1, 2)), 30)
    assert reaches(ca, b_ip)
    # ... its subnet is free again: a new host D gets it; C, back after the grace,
    # gets another one, and the leases of its old containers are released
    assert held(lab, 3, "cc")
    lab.add_host(4)
    assert wait_for(lambda: subnets[3] not in json.dumps(
        admin(lab.sec).items("netclaim", NET)), 20)
    assert start_node(lab, 4)["subnet"] == subnets[3]
    back = start_node(lab, 3)["subnet"]
    assert back not in subnets.values() and not held(lab, 3, "cc")
    assert wait_for(lambda: net_status(lab, 1)["peers"] == ["h2", "h3", "h4"], 20)

    # B's node stops: a stop keeps its lease, device and peers' entries, so A changes
    # nothing and still reaches B's container while B's node is down
    entries = peer_entries(lab, 1)
    stop_node(lab, 2)
    assert reaches(ca, b_ip) and peer_entries(lab, 1) == entries
    # B started without the network in its configuration leaves it: the subnet is
    # released, A drops B at once, B's device goes
    start_node(lab, 2, networks="")
    assert wait_for(lambda: subnets[2] not in peer_entries(lab, 1)[2], 30)
    assert wait_for(lambda: nsx(lab.hosts[2]["ns"], "ip", "link", "show", dev,
                                check=False).returncode != 0, 15)
    rows = json.loads(cli(lab, "nodes", NET, "--cluster", "--json").stdout)
    assert sorted(r["node"] for r in rows) == ["h1", "h3", "h4"]
    for i in (1, 2, 3, 4):
        stop_node(lab, i)


def test_a_node_without_wireguard_says_so(lab):
    """A node told to join a WireGuard network on a kernel without it: its
    relay service runs on, status names the problem in one line, and
    nothing is leased or made."""
    from emergence.relay import leases
    lab.add_host(1)
    if wireguard_in_kernel(lab.hosts[1]["ns"]):
        pytest.skip("this kernel has WireGuard")
    leases.create_network(admin(lab.sec), NET, "10.218.0.0/16", 24, encrypt="wireguard")
    before = links(lab.hosts[1]["ns"])
    start_node(lab, 1, wait=False)
    assert wait_for(lambda: "error" in (net_status(lab, 1) or {}), 30)
    why = net_status(lab, 1)["error"]
    assert why.startswith("this kernel has no WireGuard") and "\n" not in why
    assert links(lab.hosts[1]["ns"]) == before
    assert admin(lab.sec).items("netlease") == {} and admin(lab.sec).items("netclaim") == {}
    stop_node(lab, 1)
