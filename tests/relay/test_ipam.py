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


def test_a_torn_write_is_ignored_and_cut_off(tmp_path):
    ipam = IPAM(str(tmp_path))
    a = ipam.allocate("rlnet", SUBNET, GW, "k1")[0]
    # a crash midway through appending leaves a line without its newline
    path = os.path.join(str(tmp_path), "ipam", "rlnet.log")
    with open(path, "ab") as f:
        f.write(b'{"s":99,"c":{"10.60.0.9":{"key":"torn"')
    fresh = IPAM(str(tmp_path))
    assert {v["key"] for v in fresh.holders("rlnet").values()} == {"k1"}
    b = fresh.allocate("rlnet", SUBNET, GW, "k2")[0]
    assert b != a
    # the next writer cut the torn line off: every line of the log is whole JSON
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(x) for x in lines[:-1])
    assert {v["key"] for v in IPAM(str(tmp_path)).holders("rlnet").values()} == {"k1", "k2"}


def test_compaction_keeps_every_allocation(tmp_path, monkeypatch):
    from emergence.relay import journal
    monkeypatch.setattr(journal, "COMPACT_MIN", 512)
    ipam = IPAM(str(tmp_path))
    got = {str(ipam.allocate("rlnet", SUBNET, GW, f"k{i}")[0]) for i in range(40)}
    for i in range(0, 40, 2):
        ipam.release("rlnet", f"k{i}")
    snap = os.path.join(str(tmp_path), "ipam", "rlnet.snap")
    assert os.path.exists(snap)            # the log was folded in at least once
    held = IPAM(str(tmp_path)).holders("rlnet")
    assert {v["key"] for v in held.values()} == {f"k{i}" for i in range(1, 40, 2)}
    assert set(held) < got
