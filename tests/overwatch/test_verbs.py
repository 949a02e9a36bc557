"""`emergence stats` and `emergence top` on real containers."""

import json

BURN = ["sh", "-c", "while true; do :; done"]





def test_stats_json_shows_podman_numbers(rt, running):
    busy = running(BURN, edit=lambda c: c["linux"]["resources"].update(
        memory={"limit": 64 << 20}))
    idle = running()
    p = rt("stats", "--json", "--interval", "1", busy, idle, check=True)
    rows = json.loads(p.stdout)
    assert [r["id"] for r in rows] == [busy, idle]
    b, i = rows
    # one busy loop: up to one core (less on this shared 2-core machine)
    assert 20 < b["cpu_percent"] <= 110, b
    assert i["cpu_percent"] < 5, i
    assert b["mem_limit"] == 64 << 20 and 0 < b["mem_usage"] < 64 << 20
    assert 0 < b["mem_percent"] < 100
    assert b["pids"] == 1 and b["net_rx"] is not None


def test_stats_table_and_errors(rt, running):
    cid = running()
    p = rt("stats", "--interval", "0.2", cid, check=True)
    head, row = p.stdout.splitlines()
    assert head.split()[:3] == ["ID", "CPU", "%"] and row.startswith(cid[:20])
    p = rt("stats", "ow-missing")
    assert p.returncode == 1 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    p = rt("stats")
    assert p.returncode == 2
    p = rt("stats", "--interval", "soon", cid)
    assert p.returncode == 2 and "--interval" in p.stderr


def test_top_once_json_sorted_by_cpu(rt, running):
    idle = running()
    busy = running(BURN)
    p = rt("top", "--once", "--json", "--interval", "1", check=True)
    rows = json.loads(p.stdout)
    assert [r["id"] for r in rows] == [busy, idle]
    p = rt("top", "--once", "--json", "--sort", "id", "--interval", "0.2", check=True)
    assert [r["id"] for r in json.loads(p.stdout)] == sorted([busy, idle])
    assert rt("top", "--sort", "colour", "--once").returncode == 2
    assert rt("top", "--json").returncode == 2
