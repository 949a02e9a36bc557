"""Measured load into the score: a host's own /proc figures as windows, the
Trimaran-style correction by tasks placed since a measurement, the fallback
to allocations (said in the record) when there is no fresh one, and a
worker that publishes its load so the leader's decision records it."""

import threading
import time

from emergence.place import tasks
from emergence.place.commander import Commander, hosts_view
from emergence.place.load import HostLoad, corrected
from emergence.place.worker import Worker


def test_host_load_measures_this_host_as_fractions():
    load = HostLoad()
    assert load.sample() is None and load.windows() is None  # a baseline first
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # keep one core busy between the samples
        pass
    fig = load.sample()
    assert set(fig) == {"cpu", "memory", "disk_io", "net"}
    assert all(0.0 <= v <= 1.0 for v in fig.values()), fig
    assert fig["cpu"] > 0.2 and fig["memory"] > 0.0, fig  # 1 of this machine's cores, at least
    w = load.windows()
    assert w["n"] == 1 and set(w["w1"]) == set(w["w5"]) == set(fig)
    assert w["w1"]["cpu"] == [round(fig["cpu"], 6), 0.0]


def test_windows_keep_five_minutes_and_one_minute_means():
    clock = [0.0]
    load = HostLoad(clock=lambda: clock[0])
    load.sample()
    figs = []
    for i in range(1, 400):  # a sample a second for 400 s; only the figures matter
        clock[0] = float(i)
        figs.append(load.sample())
    w = load.windows()
    assert w["n"] == 301  # the last five minutes
    cpu_last60 = [f["cpu"] for f in figs[-61:]]
    assert abs(w["w1"]["cpu"][0] - sum(cpu_last60) / 61) < 1e-5


def test_correction_by_tasks_placed_since_the_measurement():
    load = {"w1": {"cpu": [0.25, 0.01], "memory": [0.5, 0.0]}}
    cap = {"cpu": 4.0, "memory": 8.0}
    placed = [(99.0, {"cpu": 2.0}), (101.0, {"cpu": 1.0, "memory": 2.0})]
    util, how = corrected(load, 100.0, placed, cap, 105.0, 30.0)
    # only the task placed after the measurement (at 101) is added
    assert util == {"cpu": 0.5, "memory": 0.75} and how == "measured 5.0s ago + 1 placed since"
    assert corrected(load, 100.0, placed, cap, 200.0, 30.0) == (
        None, "telemetry stale (100s old)")
    assert corrected(None, None, [], cap, 1.0, 30.0) == (None, "no telemetry")


def test_hosts_view_uses_measured_load_or_says_it_fell_back():
    snap = {"members": {"a": {"role": "worker", "capacity": {"cpu": 4, "memory": 8}},
                        "b": {"role": "worker", "capacity": {"cpu": 4, "memory": 8}}},
            "telemetry": {"a": {"ts": 100.0, "load": {"w1": {"cpu": [0.9, 0.0]}}},
                          "b": {"ts": 10.0, "load": {"w1": {"cpu": [0.1, 0.0]}},
                                "util": {"cpu": 0.0}}},
            "tasks": {"t": {"demand": {"cpu": 2}}},
            "status": {"t": {"state": "assigned", "host": "b", "dispatched": 50.0}}}
    a, b = hosts_view(snap, at=101.0)
    assert a["util"]["cpu"] == 0.9 and a["load_source"] == "measured 1.0s ago"
    # b's measurement is 91 s old: its allocation (2 of 4 CPUs) stands in, and says so
    assert b["util"]["cpu"] == 0.5
    assert b["load_source"] == "allocations (telemetry stale (91s old))"


def test_a_worker_publishes_its_load_and_the_decision_records_it(cluster):
    log = []
    cmd = Commander(cluster, "ld-c", {"lease_ttl": 2}, log.append)
    w = Worker(cluster, "ld-w", {"lease_ttl": 2, "cpu": 2}, log.append)
    for n in (cmd, w):
        threading.Thread(target=n.run, daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                (cluster.get("telemetry", "ld-w") or {}).get("load")):
            time.sleep(0.1)
        load = cluster.get("telemetry", "ld-w")["load"]
        assert set(load["w1"]) == {"cpu", "memory", "disk_io", "net"}, load
        tasks.submit(cluster, {"kind": "sleep", "seconds": 0, "id": "ld-1"})
        while time.monotonic() < deadline and cluster.get("results", "ld-1") is None:
            time.sleep(0.05)
        st = cluster.get("status", "ld-1")
        assert st["load"].startswith("measured "), st
    finally:
        for n in (cmd, w):
            n.stop()
        cmd.resign()
