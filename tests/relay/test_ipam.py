"""IPAM: distinct across processes, kept across restarts, freed by GC."""

import ipaddress
import json
import multiprocessing
import os

from emergence.relay.ipam import IPAM

SUBNET = [ipaddress.ip_network("10.60.0.0/23")]
GW = [ipaddress.ip_address("10.60.0.1")]


def _worker(state, n, who, out):
    ipam = IPAM(state)
    got = []
    for i in range(n):
        got += [str(a) for a in ipam.allocate("rlnet", SUBNET, GW, f"att:{who}/{i}")]
    out.put(got)


def test_200_concurrent_allocations_from_4_processes_are_distinct(tmp_path):
    state = str(tmp_path)
    q = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_worker,
                                                         args=(state, 50, w, q))
             for w in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
        assert p.exitcode == 0
    addrs = [a for r in results for a in r]
    assert len(addrs) == 200 and len(set(addrs)) == 200
    assert "10.60.0.1" not in addrs
    # a restart (a new IPAM over the same directory) sees every allocation
    holders = IPAM(state).holders("rlnet")
    assert set(holders) == set(addrs)
    # the same key asks again: the same address, not a new one
    held = [a for a, v in holders.items() if v["key"] == "att:0/0"]
    again = IPAM(state).allocate("rlnet", SUBNET, GW, "att:0/0")
    assert [str(a) for a in again] == held
    assert len(IPAM(state).holders("rlnet")) == 200


def test_release_and_no_immediate_reuse(tmp_path):
    ipam = IPAM(str(tmp_path))
    a = ipam.allocate("rlnet", SUBNET, GW, "k1")[0]
    b = ipam.allocate("rlnet", SUBNET, GW, "k2")[0]
    assert ipam.release("rlnet", "k1") == [str(a)]
    c = ipam.allocate("rlnet", SUBNET, GW, "k3")[0]
    assert c not in (a, b)


def test_a_torn_write_leaves_the_old_file(tmp_path):
    ipam = IPAM(str(tmp_path))
    ipam.allocate("rlnet", SUBNET, GW, "k1")
    # a crash between writing the temp file and the rename leaves only a temp file
    path = os.path.join(str(tmp_path), "ipam", "rlnet.json")
    with open(path + ".999.tmp", "w") as f:
        f.write("{garbage")
    assert list(json.load(open(path))["allocations"].values())[0]["key"] == "k1"
    assert len(IPAM(str(tmp_path)).holders("rlnet")) == 1
