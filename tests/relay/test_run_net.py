"""`emergence run --net NAME[:ip=IP] -p HOST:CONT`: the runtime adds OCI hooks
that attach on create and detach after the container stops.  The runtime
runs under nsenter in a test-made netns, which plays the host."""

import json
import os
import subprocess

import pytest
from conftest import base_config, emergence_command

from emergence.relay.ipam import IPAM

pytestmark = pytest.mark.slow
EM = emergence_command()


def test_run_net_attaches_on_create_and_detaches_on_delete(tmp_path, host, rootfs):
    state = str(tmp_path / "relay")
    env = {**os.environ, "EMERGENCE_RELAY_STATE": state}
    ns = ["nsenter", f"--net=/var/run/netns/{host}"]

    def em(*args, check=True):
        p = subprocess.run(ns + EM + list(args), env=env, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, p.stderr
        return p
    em("net", "create", "rlrun", "--subnet", "10.93.0.0/24", "--bridge", "rlrun0",
       "--veth-prefix", "rl")
    b = tmp_path / "bundle"
    b.mkdir()
    c = base_config(["sh", "-c", "ip -o -4 addr show eth0; ping -c1 -W2 10.93.0.1 >/dev/null "
                     "&& echo gw-ok; cat /proc/net/route | wc -l"], rootfs)
    for caps in c["process"]["capabilities"].values():
        caps.append("CAP_NET_RAW")      # for ping
    (b / "config.json").write_text(json.dumps(c))
    root = str(tmp_path / "root")
    p = em("--root", root, "run", "--bundle", str(b), "--net", "rlrun:ip=10.93.0.7",
           "-p", "8085:80", "rlrun1")
    assert "10.93.0.7/24" in p.stdout and "gw-ok" in p.stdout
    # deleted when it exited: poststop detached it
    allocs = IPAM(state).holders("rlrun")
    assert allocs == {}
    g = json.loads(em("net", "show").stdout)
    assert g["attachments"] == [] and g["port_forwards"] == []
    assert subprocess.run(["ip", "-n", host, "-o", "link", "show", "type", "veth"],
                          capture_output=True, text=True).stdout == ""
    # the same through the annotation alone, as an engine would ask
    c["annotations"] = {"org.emergence.relay.net": "rlrun"}
    (b / "config.json").write_text(json.dumps(c))
    p = em("--root", root, "run", "--bundle", str(b), "rlrun2")
    assert "10.93.0." in p.stdout and "gw-ok" in p.stdout
    assert IPAM(state).holders("rlrun") == {}
    # no network namespace: one line, before anything is made
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
    (b / "config.json").write_text(json.dumps(c))
    p = em("--root", root, "run", "--bundle", str(b), "rlrun3", check=False)
    assert p.returncode == 1 and "needs a new network namespace" in p.stderr
    em("net", "rm", "rlrun")
