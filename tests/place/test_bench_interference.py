"""The trace replay's interference model (bench/place_replay.py) applies the
matrix measured by bench/place_interference.py: a task's rate on a host is
set by its co-located tasks' classes, and the recorder itself runs real
containers and leaves nothing behind."""

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")
sys.path.insert(0, BENCH)

import place_replay  # noqa: E402

CLASSES = ("cpu", "io", "memory", "net")


def _matrix(tmp_path, same=1.5, cross=1.1):
    m = {a: {b: same if a == b else cross for b in CLASSES} for a in CLASSES}
    m["cpu"]["io"] = 0.9  # noise below 1 must not speed a task up
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"cpus": 2, "separate": {"matrix": m}}))
    return str(path)


def _run_on_one_host(classes, matrix_path, cpus=8):
    """Replay CLASSES' tasks (run time 10 s alone, intensity 1) started at once
    on one host; returns each task's time on the host."""
    profs = place_replay.profiles()
    hosts = place_replay.make_hosts(1, __import__("random").Random(1))
    hosts[0]["capacity"].update(cpu=cpus, memory=1e6)
    tasks = []
    for i, c in enumerate(classes):
        use = dict(profs[c])
        tasks.append({"id": i, "at": 0.0, "run": 10.0, "class": c, "use": use,
                      "request": {"cpu": 0.0, "memory": 0.0}, "intensity": 1.0})
    rep = place_replay.Replay("Random", hosts, tasks, profs, 1,
                              place_replay.interference(matrix_path))
    rep.run()
    return [round(s * 10.0, 6) for s in rep.slowdowns]


def test_pairs_slow_down_as_measured(tmp_path):
    path = _matrix(tmp_path)
    assert _run_on_one_host(["io"], path) == [10.0]
    # disk and network are one device per host: the measured factor applies as is
    assert _run_on_one_host(["io", "io"], path) == [15.0, 15.0]
    assert _run_on_one_host(["net", "io"], path) == [11.0, 11.0]
    # an entry below 1 is noise, not a speed-up
    times = sorted(_run_on_one_host(["cpu", "io"], path))
    assert times[0] == 10.0
    # caches and memory bandwidth grow with the cores: 2 of 8 CPUs' worth
    assert _run_on_one_host(["memory", "memory"], path) == [11.25, 11.25]


def test_recorded_matrix_is_complete():
    m, cpus = place_replay.interference()
    assert cpus >= 2
    assert set(m) == set(CLASSES) and all(set(row) == set(CLASSES) for row in m.values())
    assert all(1.0 <= x < 100 for row in m.values() for x in row.values())


@pytest.mark.slow
def test_recorder_runs_and_cleans_up(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("runs containers and network namespaces: needs root")
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out = tmp_path / "m.json"
    p = subprocess.run([sys.executable, os.path.join(BENCH, "place_interference.py"),
                        "--reps", "1", "--shared-reps", "0", "--scale", "0.05",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert set(rec["separate"]["matrix"]) == set(CLASSES)
    assert "shared" not in rec
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert after.count("pt-") == before.count("pt-")
    for base in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.isdir(base):  # the sink's cgroup is gone
            assert not [d for d in os.listdir(base) if d.startswith("pi-sink-")], base
