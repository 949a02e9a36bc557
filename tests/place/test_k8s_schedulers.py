"""Kubernetes' LeastAllocated and BalancedAllocation as scheduler choices:
their formulas, and the choice made through the `/place/api/scheduler` route
(stored in etcd's config/, as every command node reads it) against a real
etcd, where each picks a different host than D_max does."""

import time

from emergence.place import k8s, tasks

from .test_service import _serve


def test_formulas_are_kubernetes():
    h = {"capacity": {"cpu": 4, "memory": 8e9}, "allocated": {"cpu": 1, "memory": 2e9}}
    d = {"cpu": 1, "memory": 2e9}
    # used after placing: cpu 2/4, memory 4/8 -> free .5 and .5; balanced exactly
    assert k8s.least_allocated(h, d) == 50.0
    assert k8s.balanced_allocation(h, d) == 100.0
    d = {"cpu": 2, "memory": 0}  # cpu .75, memory .25: std .25
    assert k8s.least_allocated(h, d) == 50.0
    assert k8s.balanced_allocation(h, d) == 75.0
    # over capacity counts as full, never below 0; no capacity: full
    assert k8s.least_allocated(h, {"cpu": 9, "memory": 9e9}) == 0.0
    assert k8s.least_allocated({"capacity": {}, "allocated": {}}, d) == 0.0


def _host(cluster, name, alloc_cpu, alloc_mem, util_cpu):
    cluster.put({"name": name, "role": "worker", "capacity": {"cpu": 4, "memory": 8e9},
                 "arch": "amd64"}, "members", name)
    cluster.put({"ts": time.time(), "util": {"cpu": util_cpu, "memory": 0.2}},
                "telemetry", name)
    if alloc_cpu or alloc_mem:
        tid = f"held-{name}"
        tasks.submit(cluster, {"kind": "sleep", "id": tid, "seconds": 60,
                               "demand": {"cpu": alloc_cpu, "memory": alloc_mem}})
        cluster.put({"state": "assigned", "host": name, "attempt": 1,
                     "dispatched": time.time(), "history": []}, "status", tid)


def test_each_scheduler_chooses_by_its_own_score(cluster):
    # the task: 1 CPU, 1 GB.  After placing it (of 4 CPUs, 8 GB):
    #   empty     cpu .25, mem .125: LeastAllocated 81.25, Balanced 93.75 (but measured busy)
    #   balanced  cpu .75, mem .75 : LeastAllocated 25,    Balanced 100
    #   cpuheavy  cpu .875, mem .125: LeastAllocated 50,    Balanced 62.5
    _host(cluster, "empty", 0, 0, 0.95)
    _host(cluster, "balanced", 2, 5e9, 0.1)
    _host(cluster, "cpuheavy", 2.5, 0, 0.1)
    tasks.submit(cluster, {"kind": "sleep", "id": "t", "seconds": 1,
                           "demand": {"cpu": 1, "memory": 1e9}})
    out = _serve(cluster, [
        ("schedule", {"ID": "t"}, None),
        ("scheduler", {"model_name": "LeastAllocated"}, None),
        ("schedule", {"ID": "t"}, None),
        ("scheduler", {"model_name": "BalancedAllocation"}, None),
        ("schedule", {"ID": "t"}, None),
        ("schedule", {"ID": "t", "HOST_IDS": ["cpuheavy", "empty"]}, None),
        ("scheduler", {"model_name": "MostAllocated"}, None),
    ])
    dmax = out[0][1]["HOST_ID"]
    assert out[1] == (200, {"model_name": "LeastAllocated"})
    assert out[2] == (200, {"ID": "t", "HOST_ID": "empty"})
    assert out[3] == (200, {"model_name": "BalancedAllocation"})
    assert out[4] == (200, {"ID": "t", "HOST_ID": "balanced"})
    assert out[5] == (200, {"ID": "t", "HOST_ID": "empty"})
    # D_max sees what "empty" measures (95 % CPU busy) and goes elsewhere
    assert dmax != "empty"
    assert out[6][0] == 400 and "LeastAllocated" in out[6][1]["error"]
    assert cluster.get("config", "scheduler") == "BalancedAllocation"
