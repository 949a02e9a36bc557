"""containerd runs a container on a Relay network through `emergence-cni`:
a containerd of the test's own (its socket, root and state under tmp), and
`ctr run --cni`, which reads /etc/cni/net.d and /opt/cni/bin -- so ctr runs
in a mount namespace of its own where both are tmpfs the test fills, inside
a netns playing the host.  Nothing of the host's CNI config is touched."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import emergence_command

from emergence.relay.ipam import IPAM

from .conftest import sh

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (shutil.which("containerd") and shutil.which("ctr")
         and os.path.exists("/usr/lib/cni/loopback")),
    reason="needs containerd, ctr and the CNI loopback plugin")]

CONFIG = """version = 2
root = "{t}/root"
state = "{t}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{t}/c.sock"
[ttrpc]
  address = "{t}/c.sock.ttrpc"
[debug]
  address = "{t}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{t}/opt"
"""

CTR = """set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /etc/cni/net.d
mount -t tmpfs tmpfs /opt
mkdir -p /opt/cni/bin
ln -s "$EMCNI" /opt/cni/bin/emergence-cni
ln -s /usr/lib/cni/loopback /opt/cni/bin/loopback
cat > /etc/cni/net.d/10-relay.conflist <<EOF
{"cniVersion": "1.0.0", "name": "rlctr", "plugins": [
 {"type": "emergence-cni", "bridge": "rlctr0", "subnets": ["10.97.0.0/24"],
  "veth_prefix": "rl", "stateDir": "$STATE"}]}
EOF
ctr --address "$SOCK" run --cni --rm --env PATH=/bin:/sbin:/usr/bin:/usr/sbin \
  --rootfs "$ROOTFS" "$ID" /bin/sh -c \
  'ip -4 -o addr show dev eth0; ping -c1 -W2 10.97.0.1 >/dev/null && echo gateway-ok'
"""


def test_ctr_run_cni_attaches_and_releases(tmp_path, host, rootfs):
    t = str(tmp_path)
    os.makedirs(f"{t}/opt")
    with open(f"{t}/config.toml", "w") as f:
        f.write(CONFIG.format(t=t))
    log = open(f"{t}/containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", f"{t}/config.toml"], stdout=log,
                              stderr=subprocess.STDOUT)
    cid = f"rlctr-{os.getpid()}"
    try:
        for _ in range(100):
            if os.path.exists(f"{t}/c.sock"):
                break
            time.sleep(0.1)
        state = f"{t}/relay"
        emcni = os.path.join(os.path.dirname(emergence_command()[0]), "emergence-cni")
        env = dict(os.environ, EMCNI=emcni, STATE=state, SOCK=f"{t}/c.sock", ROOTFS=rootfs,
                   ID=cid, EMERGENCE_PLANNER_SOCKET="off")
        p = subprocess.run(["ip", "netns", "exec", host, "unshare", "-m", "sh", "-c", CTR],
                           env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "inet 10.97.0." in p.stdout and "gateway-ok" in p.stdout, p.stdout
        # the address came from Relay's IPAM, and ctr's --rm ran CNI DEL: it is
        # free again and the veth gone
        addr = p.stdout.split("inet ")[1].split("/")[0]
        with open(os.path.join(state, "ipam", "rlctr.log")) as f:
            assert f'"{addr}":{{"key":"att:rlctr/' in f.read()
        assert IPAM(state).holders("rlctr") == {}
        assert sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout == ""
    finally:
        subprocess.run(["ctr", "--address", f"{t}/c.sock", "task", "kill", "-s", "KILL", cid],
                       capture_output=True)
        subprocess.run(["ctr", "--address", f"{t}/c.sock", "container", "rm", cid],
                       capture_output=True)
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        print(open(f"{t}/containerd.log").read()[-2000:], file=sys.stderr)
