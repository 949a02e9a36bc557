"""`emergence node start|stop|status`: one process, one config file whose every
key is also a flag, clean stop, clear errors."""

import json
import os
import stat
import subprocess

import pytest
from conftest import emergence_command

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node runs as root")


def node(tmp_path, *args, config=None):
    flags = ["--node-run-dir", str(tmp_path / "run"), "--node-state-dir", str(tmp_path / "st"),
             "--node-services", ""]
    if config:
        flags += ["--config", str(config)]
    verb, *rest = args  # the test's own flags come last, so they win
    return subprocess.run(emergence_command() + ["node", verb, *flags, *rest],
                          capture_output=True, text=True, timeout=60)


def test_start_status_stop(tmp_path):
    import emergence.node
    assert node(tmp_path, "status").returncode == 3
    p = node(tmp_path, "start")
    assert p.returncode == 0, p.stderr
    try:
        again = node(tmp_path, "start")
        assert again.returncode == 1 and "already running" in again.stderr
        st = json.loads(node(tmp_path, "status", "--json").stdout)
        assert st["running"] and st["planner"]["running"]
        assert st["build"] == emergence.node.BUILD_ID
        assert st["listen"] is None  # no service has routes: no port opened
        text = node(tmp_path, "status").stdout
        assert "planner: running" in text
        run_dir = tmp_path / "run"
        for name in ("planner.sock", "control.sock"):
            mode = os.stat(run_dir / name).st_mode
            assert stat.S_IMODE(mode) == 0o600, name  # root-only sockets
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
        planner = st["planner"]["pid"]
    finally:
        stop = node(tmp_path, "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert node(tmp_path, "status").returncode == 3
    assert sorted(os.listdir(tmp_path / "run")) == []
    assert not os.path.exists(f"/proc/{planner}")
    assert node(tmp_path, "stop").stdout == "the node is not running\n"


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nplanner = false\nlisten = "127.0.0.1:1"\n')
    p = node(tmp_path, "start", config=cfg)
    assert p.returncode == 0, p.stderr
    try:
        st = json.loads(node(tmp_path, "status", "--json").stdout)
        assert st["planner"] is None
    finally:
        node(tmp_path, "stop")


@pytest.mark.parametrize("text, words", [
    ("[node]\nlisen = 'x'\n", "[node] has no key 'lisen'"),
    ("[nodes]\n", "unknown section [nodes]"),
    ("[node]\nplanner = 'yes'\n", "[node] planner: expected true or false"),
    ("[node\n", "not valid TOML"),
])
def test_config_errors_name_the_place(tmp_path, text, words):
    cfg = tmp_path / "node.toml"
    cfg.write_text(text)
    p = node(tmp_path, "start", config=cfg)
    assert p.returncode == 1
    assert words in p.stderr and len(p.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_flag_errors(tmp_path):
    p = node(tmp_path, "start", "--node-planner", "maybe")
    assert p.returncode == 1 and "--node-planner: expected true or false" in p.stderr
    p = node(tmp_path, "start", "--node-nope", "1")
    assert p.returncode == 2 and "unknown option --node-nope" in p.stderr
    p = node(tmp_path, "frobnicate")
    assert p.returncode == 2


def test_cluster_init_is_a_one_machine_cluster(tmp_path):
    """`node start --cluster-init`: its own etcd, this node both commands and
    works; stop takes the etcd down with it."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    etcd = f"https://127.0.0.1:{port}"  # TLS: certificates in <state_dir>/cluster
    p = node(tmp_path, "start", "--cluster-init", "--place-etcd", etcd,
             "--node-services", "place")
    assert p.returncode == 0, p.stderr
    try:
        import time
        for _ in range(150):  # the command node leads and the worker has registered
            st = json.loads(node(tmp_path, "status", "--json").stdout)
            place = st["services"]["place"]
            members = subprocess.run(emergence_command() + [
                "cluster", "members", "--etcd", etcd, "--cluster-dir", str(tmp_path / "st" /
                                                                           "cluster")],
                                     capture_output=True, text=True, timeout=30)
            if place.get("commander", {}).get("leading") and \
                    os.uname().nodename in members.stdout:
                break
            time.sleep(0.1)
        assert place["state"] == "running" and place["role"] == "both"
        assert members.returncode == 0 and os.uname().nodename in members.stdout
    finally:
        node(tmp_path, "stop")
    import time
    for _ in range(100):  # the node's stop has signalled etcd; give it time to exit
        if subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"]).returncode == 1:
            break
        time.sleep(0.05)
    assert subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"]).returncode == 1


def test_the_node_serves_its_parts_on_one_listener(tmp_path):
    """The share service's routes are on the node's listener, on loopback."""
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = node(tmp_path, "start", "--node-services", "share", "--node-listen",
             f"127.0.0.1:{port}", "--share-store", str(tmp_path / "store"))
    assert p.returncode == 0, p.stderr
    try:
        st = json.loads(node(tmp_path, "status", "--json").stdout)
        assert st["listen"] == f"127.0.0.1:{port}" and st["services"]["share"]["state"] == \
            "running"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/share/v1/info", timeout=10) as r:
            info = json.loads(r.read())
        assert info  # the node's identity and key, served by share through the node
        assert oct(os.stat(tmp_path / "st" / "share").st_mode & 0o777) == "0o700"
    finally:
        node(tmp_path, "stop")
