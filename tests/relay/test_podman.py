"""podman's CNI backend runs a container on a Relay network through
`emergence-cni`; `podman rm` releases its address.  podman runs in a netns the
test made (nsenter, so /sys stays the host's), with its own config dir."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import podman_env, unmount_below

from emergence.relay.ipam import IPAM

from .conftest import nft_table

pytestmark = pytest.mark.slow


@pytest.fixture
def podman(host, rootfs):
    if not shutil.which("podman") or not shutil.which("conmon"):
        pytest.skip("needs podman and conmon")
    base = tempfile.mkdtemp(prefix="rlpod-")  # podman wants a short runroot
    plugins = os.path.join(base, "plugins")
    netdir = os.path.join(base, "net")
    os.makedirs(plugins)
    os.makedirs(netdir)
    os.symlink(os.path.join(os.path.dirname(sys.executable), "emergence-cni"),
               os.path.join(plugins, "emergence-cni"))
    with open(os.path.join(netdir, "rlpod.conflist"), "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "rlpod", "plugins": [
            {"type": "emergence-cni", "network": "rlpod", "bridge": "rlpod0",
             "subnets": ["10.92.0.0/24"], "veth_prefix": "rl",
             "stateDir": os.path.join(base, "state"),
             "capabilities": {"portMappings": True}}]}, f)
    env = podman_env(base, sections=f"""[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}", "/usr/lib/cni"]
network_config_dir = "{netdir}"
""")
    cmd = ["nsenter", f"--net=/var/run/netns/{host}", "podman", "--root",
           os.path.join(base, "root"), "--runroot", os.path.join(base, "runroot"),
           "--storage-driver", "vfs", "--runtime",
           os.path.join(os.path.dirname(sys.executable), "emergence")]

    def run(*args, check=True):
        p = subprocess.run(cmd + list(args), env=env, capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL, cwd=base)
        if check:
            assert p.returncode == 0, p.stderr
        return p
    run.base = base
    yield run
    run("rm", "-af", "-t", "0", check=False)
    unmount_below(base)
    shutil.rmtree(base, ignore_errors=True)


def test_podman_runs_a_container_on_a_relay_network(podman, rootfs, host):
    state = os.path.join(podman.base, "state")
    podman("run", "-d", "--name", "rlc1", "--network", "rlpod", "-p", "8089:80",
           "--rootfs", rootfs, "/bin/sh", "-c",
           "ip -o -4 addr show eth0; ping -c1 -W2 10.92.0.1 >/dev/null && echo gw-ok; "
           "sleep 60")
    for _ in range(50):
        out = podman("logs", "rlc1").stdout
        if "gw-ok" in out:
            break
        time.sleep(0.1)
    assert "10.92.0.2/24" in out and "gw-ok" in out
    allocs = IPAM(state).holders("rlpod")
    assert list(allocs) == ["10.92.0.2"]
    rules = subprocess.run(["ip", "netns", "exec", host, "nft", "list", "table", "inet",
                            nft_table(state)], capture_output=True, text=True).stdout
    assert "dport 8089 dnat ip to 10.92.0.2:80" in rules
    podman("rm", "-f", "-t", "0", "rlc1")
    allocs = IPAM(state).holders("rlpod")
    assert allocs == {}
    veths = subprocess.run(["ip", "-n", host, "-o", "link", "show", "type", "veth"],
                           capture_output=True, text=True).stdout
    assert veths == ""
