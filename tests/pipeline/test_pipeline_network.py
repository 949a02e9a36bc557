"""`network = "NAME[:ip=IP]"`: a stage joins a Relay network (through the
runtime's `org.emergence.relay.net` annotation and Relay's hooks) and reaches
another stage on it; a stage without it does not.  Everything runs under
nsenter in a netns the test makes, which plays the host."""

import json
import os
import shutil
import subprocess
import uuid

import pytest
from cihelp import Ci
from conftest import emergence_command

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0,
                                 reason="needs root and nix-build")]

NET = """
[stages.server]
image = "image.nix"
command = "echo pong | nc -l -p 8080 -w 20; echo server done"
network = "plnet:ip=10.94.0.10"
timeout = 60

[stages.client]
image = "image.nix"
command = '''
for i in $(seq 1 40); do
  r=$(echo ping | nc -w 1 10.94.0.10 8080) && [ "$r" = pong ] && { echo "got $r"; exit 0; }
  sleep 0.25
done
exit 1
'''
network = "plnet"
timeout = 60

[stages.outside]
image = "image.nix"
command = "echo hi | nc -w 1 10.94.0.10 8080 && exit 1 || echo unreachable"
"""


@pytest.fixture
def host():
    name = f"plci-h-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name])


def test_stages_on_one_relay_network_reach_each_other(tmp_path, host):
    ci = Ci(tmp_path)
    state = str(tmp_path / "relay")
    env = {**os.environ, "EMERGENCE_RELAY_STATE": state, "EMERGENCE_PLANNER_SOCKET": "off"}
    ns = ["nsenter", f"--net=/var/run/netns/{host}"]

    def em(*args, check=0):
        p = subprocess.run(ns + emergence_command() + ["--root", ci.root, "--store", ci.store]
                           + list(args), env=env, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert "Traceback" not in p.stderr, p.stderr
        if check is not None:
            assert p.returncode == check, p.stdout + p.stderr
        return p
    em("net", "create", "plnet", "--subnet", "10.94.0.0/24", "--bridge", "plnet0",
       "--veth-prefix", "pl")
    try:
        ci.write("net.toml", NET)
        em("pipeline", "run", str(ci.dir / "net.toml"), "--jobs", "3", "--id-prefix", "plci-",
           "--logs", str(tmp_path / "logs"), "--json", str(tmp_path / "r.json"))
        doc = {s["name"]: s for s in json.loads((tmp_path / "r.json").read_text())["stages"]}
        assert all(s["state"] == "passed" for s in doc.values()), doc
        assert "got pong" in (tmp_path / "logs" / "client.log").read_text()
        assert "ping" in (tmp_path / "logs" / "server.log").read_text()
        assert "unreachable" in (tmp_path / "logs" / "outside.log").read_text()
        # detached when they ended: no attachment, no veth left
        g = json.loads(em("net", "show").stdout)
        assert g["attachments"] == []
        veths = subprocess.run(["ip", "-n", host, "-o", "link", "show", "type", "veth"],
                               capture_output=True, text=True).stdout
        assert veths == ""
        # a network the file names but Relay does not know: the stage cannot start
        ci.write("nonet.toml", '[stages.a]\nimage = "image.nix"\ncommand = "true"\n'
                 'network = "plnope"\n')
        p = em("pipeline", "run", str(ci.dir / "nonet.toml"), "--id-prefix", "plci-", check=1)
        assert "could not start" in p.stdout
    finally:
        em("net", "rm", "plnet", check=None)
        left = json.loads(em("list", "--format", "json").stdout or "[]")
        assert [c["id"] for c in left if c["id"].startswith("plci-")] == []
