"""The score against hand-computed cases of the background's formulas:
D[h] = Σ|(U+V) − Ū|, the D_max after placement, D_green = D + D(1 − g)s_green,
fit filtering, earliest finish for batch tasks, QoS exclusions, the EWMA."""

import os
import sys

import pytest

from emergence.errors import EmergenceError
from emergence.place import demand, score


def _hosts(green=None):
    # capacity 1 everywhere, so V is the demand itself (the background's V).
    utils = {"a": (0.1, 0.1), "b": (0.5, 0.5), "c": (0.9, 0.5), "d": (0.5, 0.9)}
    green = green or {}
    return [{"name": n, "util": {"cpu": c, "memory": m},
             "capacity": {"cpu": 1.0, "memory": 1.0}, "green": green.get(n, 0.0)}
            for n, (c, m) in utils.items()]


TASK = {"demand": {"cpu": 0.2, "memory": 0.1}}


def _by_name(ranked):
    return {r["name"]: r for r in ranked}


def test_mean_and_distance_by_hand():
    hosts = _hosts()
    mean = score.mean_utilisation(hosts)
    assert mean["cpu"] == pytest.approx(0.5) and mean["memory"] == pytest.approx(0.5)
    # a: |0.1+0.2-0.5| + |0.1+0.1-0.5| = 0.2 + 0.3
    assert score.distance(hosts[0]["util"], TASK["demand"], mean) == pytest.approx(0.5)
    # b before any placement: on the mean
    assert score.distance(hosts[1]["util"], {}, mean) == pytest.approx(0.0)


def test_dmax_after_placement_picks_the_host_that_lowers_the_worst():
    ranked = score.rank(_hosts(), TASK)
    r = _by_name(ranked)
    # a: D=0.5, others' max D0 = 0.4 (c, d)          -> D_max 0.5
    # b: D=|0.7-.5|+|0.6-.5| = 0.3, a's D0 = 0.8      -> D_max 0.8
    # c: D=|1.1-.5|+|0.6-.5| = 0.7, a's D0 = 0.8      -> D_max 0.8
    # d: D=|0.7-.5|+|1.0-.5| = 0.7                    -> D_max 0.8
    assert r["a"]["D"] == pytest.approx(0.5) and r["a"]["D_max"] == pytest.approx(0.5)
    assert r["b"]["D"] == pytest.approx(0.3) and r["b"]["D_max"] == pytest.approx(0.8)
    assert r["c"]["D"] == pytest.approx(0.7) and r["c"]["D_max"] == pytest.approx(0.8)
    assert r["d"]["D"] == pytest.approx(0.7) and r["d"]["D_max"] == pytest.approx(0.8)
    assert [x["name"] for x in ranked] == ["a", "b", "c", "d"]
    assert score.choose(_hosts(), TASK) == "a"
    # s_green = 0: D_green is D
    assert all(x["D_green"] == pytest.approx(x["D"]) for x in ranked)


def test_green_term_moves_the_choice_to_the_green_host():
    hosts = _hosts(green={"a": 0.0, "b": 1.0, "c": 0.5, "d": 1.0})
    r = _by_name(score.rank(hosts, TASK, s_green=1.0))
    # a: 0.5 + 0.5·(1−0)·1 = 1.0; b: 0.3 + 0 = 0.3; c: 0.7 + 0.7·0.5 = 1.05; d: 0.7
    assert r["a"]["D_green"] == pytest.approx(1.0)
    assert r["b"]["D_green"] == pytest.approx(0.3)
    assert r["c"]["D_green"] == pytest.approx(1.05)
    assert r["d"]["D_green"] == pytest.approx(0.7)
    # D_max: a 1.0, b 0.8, c 1.05, d 0.8 -> b and d tie, b's D_green is lower
    assert r["a"]["D_max"] == pytest.approx(1.0) and r["b"]["D_max"] == pytest.approx(0.8)
    assert score.choose(hosts, TASK, s_green=1.0) == "b"
    lines = score.explain(score.rank(hosts, TASK, s_green=1.0))
    assert "chosen" in lines[0] and lines[0].split()[0] == "b"
    assert any("same D_max, D_green higher" in x for x in lines)


def test_cost_function_is_an_entry_point(tmp_path, monkeypatch):
    # a real distribution on sys.path registering F = 10 · (1 − g)
    dist = tmp_path / "plcost-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plcost\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[emergence.place.cost]\nflat = plcost_mod:flat\n")
    (tmp_path / "plcost_mod.py").write_text(
        "def flat(g, d, s_green, **_):\n    return 10.0 * (1.0 - g)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cost = score.load_cost("flat")
    assert cost(g=0.25, d=1.0, s_green=0.0) == pytest.approx(7.5)
    hosts = _hosts(green={"d": 1.0})
    assert score.choose(hosts, TASK, cost=cost) == "d"  # every other host pays 10
    assert score.load_cost("published") is score.published_cost
    with pytest.raises(EmergenceError, match="no cost function 'nope'"):
        score.load_cost("nope")
    sys.modules.pop("plcost_mod", None)


def test_only_hosts_that_fit_are_candidates():
    hosts = [
        {"name": "full", "util": {}, "capacity": {"cpu": 2, "memory": 4e9},
         "allocated": {"cpu": 1.5}, "arch": "amd64"},
        {"name": "arm", "util": {}, "capacity": {"cpu": 8, "memory": 4e9}, "arch": "arm64"},
        {"name": "nogpu", "util": {}, "capacity": {"cpu": 8, "memory": 4e9}, "arch": "amd64"},
        {"name": "gpu", "util": {"cpu": 0.9}, "capacity": {"cpu": 8, "memory": 4e9, "gpus": 1},
         "arch": "amd64", "labels": {"data": "local"}},
    ]
    task = {"demand": {"cpu": 1, "gpus": 1}, "arch": "amd64", "labels": {"data": "local"}}
    ranked = score.rank(hosts, task)
    assert ranked[0]["name"] == "gpu" and "excluded" not in ranked[0]
    why = {r["name"]: r.get("excluded") for r in ranked}
    assert why["full"] == "cpu: needs 1, 0.5 free"
    assert why["arm"] == "gpus: needs 1, 0 free"
    assert why["nogpu"] == "gpus: needs 1, 0 free"
    assert score.unfit_reason(hosts[1], {"arch": "amd64"}) == "arch: needs amd64, host is arm64"
    assert score.unfit_reason(hosts[2], {"labels": {"data": "local"}}) == \
        "label data=local missing"
    assert score.choose(hosts[:3], task) is None


def test_batch_tasks_take_the_earliest_finish():
    fast_busy = {"name": "fast", "util": {}, "speed": 2.0, "queue_wait": 10.0}
    slow_idle = {"name": "slow", "util": {}, "speed": 1.0, "queue_wait": 0.0}
    task = {"expect": 8.0}
    assert score.finish_time(fast_busy, task) == pytest.approx(14.0)  # 10 + 8/2
    assert score.finish_time(slow_idle, task) == pytest.approx(8.0)
    assert score.choose([fast_busy, slow_idle], task) == "slow"
    # the node that holds the input wins over an idle one that must fetch it
    holder = {"name": "x", "util": {}, "queue_wait": 2.0}
    idle = {"name": "y", "util": {}, "bandwidth": {"x": 25e6, "origin": 25e6}}
    task = {"expect": 8.0, "input_node": "x", "input_bytes": 100e6,
            "output_bytes": 25e6}
    # x: 2 + 8 + 25e6/?? (x has no bandwidth to origin: unreachable) -> inf
    holder["bandwidth"] = {"origin": 25e6}
    assert score.finish_time(holder, task, origin="origin") == pytest.approx(11.0)
    assert score.finish_time(idle, task, origin="origin") == pytest.approx(13.0)
    assert score.choose([holder, idle], task, origin="origin") == "x"
    # a service task with the same figures is placed by D_max instead
    ranked = score.rank([holder, idle], dict(task, service=True))
    assert "finish" not in ranked[0]


def test_qos_excludes_with_reasons():
    hosts = [
        {"name": "h1", "util": {"cpu": 0.9}},
        {"name": "h2", "util": {}, "rtt": {"h1": 0.005}, "bandwidth": {"h1": 1e9}},
        {"name": "h3", "util": {}},
        {"name": "h4", "util": {}, "rtt": {"h1": 0.001}, "bandwidth": {"h1": 1e6}},
        {"name": "h5", "util": {}, "rtt": {"h1": 0.0015}, "bandwidth": {"h1": 1e9}},
    ]
    task = {"near": [{"to": "task:db", "max_rtt": 0.002, "min_bandwidth": 1e8}]}
    ranked = score.rank(hosts, task, locate=lambda t: "h1" if t == "task:db" else None)
    why = {r["name"]: r.get("excluded") for r in ranked}
    assert why["h1"] is None and why["h5"] is None
    assert why["h2"] == "near task:db: RTT to h1 5.0 ms > 2.0 ms"
    assert why["h3"] == "near task:db: no RTT measured to h1"
    assert why["h4"].startswith("near task:db: bandwidth to h1 1e+06 B/s < 1e+08")
    assert [r["name"] for r in ranked if "excluded" not in r] == ["h5", "h1"]
    lines = score.explain(ranked)
    assert any("h2" in x and "excluded: near task:db: RTT" in x for x in lines)
    gone = score.rank(hosts, task, locate=lambda t: None)
    assert all(r["excluded"] == "near task:db: not running anywhere" for r in gone)


def test_unresponsive_hosts_rank_last():
    hosts = _hosts()
    hosts[0]["unresponsive"] = True
    ranked = score.rank(hosts, TASK)
    assert ranked[-1]["name"] == "a" and ranked[0]["name"] == "b"


def test_demand_ewma_per_image():
    est = demand.update(None, {"cpu": 1.0, "memory": 100.0})
    est = demand.update(est, {"cpu": 2.0, "memory": 100.0})
    assert est["runs"] == 2
    assert est["usage"]["cpu"] == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)
    v, src = demand.demand_of({"demand": {"memory": 50.0}}, est, default={"cpu": 0.1})
    assert v == {"memory": 50.0, "cpu": pytest.approx(1.3)}
    assert src == {"memory": "declared", "cpu": "estimated"}
    v, src = demand.demand_of({}, None, default={"cpu": 0.1})
    assert v == {"cpu": 0.1} and src == {"cpu": "default"}


def test_score_stays_pure():
    # no I/O module is pulled in by the score (the simulator imports it alone)
    import subprocess
    out = subprocess.run([sys.executable, "-c", "import sys, emergence.place.score;"
                          "print(' '.join(sorted(m for m in sys.modules if 'etcd' in m "
                          "or 'aiohttp' in m or 'requests' in m)))"],
                         capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0 and out.stdout.strip() == ""
