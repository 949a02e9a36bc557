"""The verbs through the installed `emergence`, against a real etcd: join a
command node and a worker, submit, tasks, place --explain, members, and
one-line errors."""

import json
import os
import signal
import subprocess
import time

from .conftest import emergence_command, nodes_up

EM = emergence_command()


def _em(url, prefix, *argv):
    return subprocess.run(EM + list(argv[:1]) + ["--etcd", url, "--prefix", prefix]
                          + list(argv[1:]), capture_output=True, text=True, timeout=60)


def test_submit_tasks_explain_members(cluster, tmp_path):
    url, prefix = cluster.endpoint, cluster.prefix
    procs = []
    try:
        for role, name in (("command", "pl-c1"), ("worker", "pl-w1"), ("worker", "pl-w2")):
            procs.append(subprocess.Popen(
                EM + ["cluster", "join", "--etcd", url, "--prefix", prefix, "--role", role,
                      "--name", name, "--cpu", "2", "--lease-ttl", "2"]
                + (["--label", "data=local"] if name == "pl-w2" else []),
                stderr=open(tmp_path / f"{name}.log", "w")))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and nodes_up(cluster) < 3:
            time.sleep(0.1)
        p = _em(url, prefix, "submit", "--sleep", "0.1", "--cpu", "0.5", "--id", "pl-a",
                "--wait")
        assert p.returncode == 0 and p.stdout.splitlines()[0] == "pl-a", p.stderr
        p = _em(url, prefix, "submit", "--sleep", "0", "--label", "data=local", "--id",
                "pl-b", "--wait")
        assert p.returncode == 0, p.stderr
        assert cluster.get("results", "pl-b")["host"] == "pl-w2"
        p = _em(url, prefix, "tasks")
        assert p.returncode == 0
        lines = p.stdout.splitlines()
        assert lines[0].split()[:4] == ["ID", "STATE", "HOST", "ATTEMPTS"]
        assert lines[1].split()[:2] == ["pl-a", "done"] and lines[2].split()[:3] == \
            ["pl-b", "done", "pl-w2"]
        rows = json.loads(_em(url, prefix, "tasks", "--json").stdout)
        assert {r["id"]: r["attempts"] for r in rows if r["id"] != "pl-near"} == \
            {"pl-a": 1, "pl-b": 1}
        # a spec file: a QoS bound no host can meet is explained, and the task waits
        (tmp_path / "near.json").write_text(json.dumps({
            "kind": "sleep", "id": "pl-near",
            "near": [{"to": "pl-w1", "max_rtt": 0.001}]}))
        p = _em(url, prefix, "submit", "--spec", str(tmp_path / "near.json"))
        assert p.returncode == 0, p.stderr
        p = _em(url, prefix, "place", "--explain", "pl-near")
        assert "pl-w1" in p.stdout and "chosen" in p.stdout  # the node itself is near
        assert "pl-w2            excluded: near pl-w1: no RTT measured to pl-w1" in p.stdout
        p = _em(url, prefix, "place", "--explain", "pl-b")
        assert p.returncode == 0, p.stderr
        assert "D[h] = sum_r" in p.stdout
        assert "pl-w2" in p.stdout and "chosen" in p.stdout
        assert "pl-w1" in p.stdout and "excluded: label data=local missing" in p.stdout
        p = _em(url, prefix, "cluster", "members")
        assert p.returncode == 0
        names = {ln.split()[0]: ln for ln in p.stdout.splitlines()[1:]}
        assert set(names) == {"pl-c1", "pl-w1", "pl-w2"} and "leader" in names["pl-c1"]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
    assert all(p.returncode == 0 for p in procs)
    assert "leads now" in (tmp_path / "pl-c1.log").read_text()


def test_errors_are_one_line(cluster, tmp_path):
    url, prefix = cluster.endpoint, cluster.prefix
    for argv, code, frag in [
        (("submit",), 2, "usage: emergence submit IMAGE"),
        (("submit", "--sleep", "x"), 2, "--sleep 'x' is not a number"),
        (("submit", "img", "--memory", "lots"), 2, "--memory 'lots' is not a number"),
        (("place", "--explain", "nosuch"), 1, "no task 'nosuch'"),
        (("cluster", "fly"), 2, "usage: emergence cluster init|join|members"),
        (("cluster", "join", "--role", "king"), 2, "--role is worker or command"),
        (("submit", "--sleep", "1", "--id", "bad/id"), 1, "task id 'bad/id'"),
        (("submit", "--spec", "/nonexistent.json"), 1, "--spec /nonexistent.json: No such"),
        (("submit", "--sleep", "nan"), 2, "--sleep 'nan' is not a finite number"),
        (("submit", "--sleep", "1", "--cpu", "1e400"), 2, "--cpu '1e400' is not a finite"),
        (("cluster", "join", "--green", "nan"), 2, "--green 'nan' is not a finite number"),
        (("cluster", "join", "--green", "1.5"), 2, "--green is a share between 0 and 1"),
        (("cluster", "join", "--speed", "inf"), 2, "--speed 'inf' is not a finite number"),
    ]:
        p = _em(url, prefix, *argv)
        assert p.returncode == code, (argv, p.stderr)
        assert p.stderr.count("\n") == 1 and frag in p.stderr, (argv, p.stderr)
    p = subprocess.run(EM + ["tasks", "--etcd", "https://127.0.0.1:9"], capture_output=True,
                       text=True, env=dict(os.environ))
    assert p.returncode == 1 and "cannot reach etcd" in p.stderr and \
        p.stderr.count("\n") == 1
    p = subprocess.run(EM + ["tasks", "--etcd", "http://127.0.0.1:9"], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "pass --insecure" in p.stderr and \
        p.stderr.count("\n") == 1, p.stderr
    p = subprocess.run(EM + ["tasks", "--etcd", "http://127.0.0.1:9", "--insecure"],
                       capture_output=True, text=True)
    warn, err = p.stderr.splitlines()
    assert p.returncode == 1 and warn.startswith("warning: --insecure") and \
        "cannot reach etcd" in err


def test_cluster_init_starts_a_local_etcd(tmp_path):
    import re

    from emergence.cluster.etcd import free_port
    url = f"https://127.0.0.1:{free_port()}"
    data = tmp_path / "pl-init" / "etcd"
    certs = tmp_path / "pl-init" / "cluster"
    plain = subprocess.run(EM + ["cluster", "init", "--etcd", url.replace("https", "http"),
                                 "--data-dir", str(data), "--cluster-dir", str(certs)],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and "--insecure" in plain.stderr, plain.stderr
    assert plain.stderr.count("\n") == 1 and not data.exists()
    p = subprocess.run(EM + ["cluster", "init", "--etcd", url, "--data-dir", str(data),
                             "--cluster-dir", str(certs), "--name", "pl-init"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pid = int(re.search(r"\(pid (\d+),", p.stdout).group(1))
    try:
        assert p.stdout.startswith(f"etcd at {url} ")
        assert oct(certs.stat().st_mode & 0o777) == "0o700"
        for secret in ("ca.key", "node.key", "etcd.password", "etcd-root.password"):
            assert (certs / secret).stat().st_mode & 0o777 == 0o600, secret
        again = subprocess.run(EM + ["cluster", "init", "--etcd", url,
                                     "--cluster-dir", str(certs)], capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 0 and "already answers" in again.stdout, again.stderr
        m = subprocess.run(EM + ["cluster", "members", "--etcd", url, "--json",
                                 "--cluster-dir", str(certs)],
                           capture_output=True, text=True, timeout=60)
        assert m.returncode == 0 and json.loads(m.stdout) == [], m.stderr
        assert (data / "member").is_dir()
    finally:
        os.kill(pid, signal.SIGKILL)
        for _ in range(50):  # detached: init's child, reaped by init(1), not us
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
