"""bench/place_cluster.py end to end, small: three worker nodes in network
namespaces, a command node and etcd, a few tasks of each class under both
schedulers; it prints every task's slowdown and the means, and leaves no
namespace behind."""

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "place_cluster.py")


@pytest.mark.slow
def test_place_cluster_bench_runs_both_schedulers():
    if os.geteuid() != 0:
        pytest.skip("runs containers and network namespaces: needs root")
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    p = subprocess.run([sys.executable, BENCH, "--tasks", "4", "--gap", "0.1"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out = p.stdout
    for cls in ("cpu", "memory", "io", "net"):
        assert f"alone {cls}" in out
    rows = [ln for ln in out.splitlines() if ln.startswith(("D_max-", "LeastAllocated-"))]
    assert len(rows) == 8 and all(ln.rstrip().endswith("x") for ln in rows), out
    assert "D_max           mean slowdown" in out and "LeastAllocated  mean slowdown" in out
    assert "D_max / LeastAllocated mean slowdown:" in out
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    new = {ln.split()[0] for ln in after.splitlines()} - \
        {ln.split()[0] for ln in before.splitlines()}
    assert not {n for n in new if n.startswith("pc-")}, new
