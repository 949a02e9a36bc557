"""`emergence-cni` driven by a direct CNI 1.1 call sequence, as a runtime would."""

import json
import os
import subprocess
import sys
import time

from conftest import marked_front_end

from emergence.relay.ipam import IPAM

from .conftest import ping, sh

CNI = os.path.join(os.path.dirname(sys.executable), "emergence-cni")


def cni(host, command, conf, cid="", netns="", ifname="eth0", stdin=None):
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": os.path.dirname(CNI),
           "EMERGENCE_PLANNER_SOCKET": "off"}  # cold; test_cni_on_demand.py: the default
    p = subprocess.run(["ip", "netns", "exec", host, CNI],
                       input=stdin if stdin is not None else json.dumps(conf),
                       capture_output=True, text=True, env=env, timeout=60)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out


def conf(tmp_path, **kw):
    c = {"cniVersion": "1.1.0", "name": "rlcni", "type": "emergence-cni",
         "bridge": "rlcni0", "subnets": ["10.91.0.0/24"], "veth_prefix": "rl",
         "stateDir": str(tmp_path / "state")}
    c.update(kw)
    return c


def test_add_check_del_gc_status_version(tmp_path, netns, host):
    c = conf(tmp_path)
    a, b = netns.new("a"), netns.new("b")
    rc, out = cni(host, "VERSION", {"cniVersion": "1.1.0"})
    assert rc == 0 and "1.1.0" in out["supportedVersions"]
    assert cni(host, "STATUS", c) == (0, None)
    rc, res = cni(host, "ADD", c, "ca", netns.path(a))
    assert rc == 0, res
    assert res["cniVersion"] == "1.1.0"
    assert res["interfaces"][1] == {"name": "eth0", "mac": res["interfaces"][1]["mac"],
                                    "mtu": 1500, "sandbox": netns.path(a)}
    assert res["ips"] == [{"address": "10.91.0.2/24", "gateway": "10.91.0.1", "interface": 1}]
    assert res["interfaces"][0]["name"].startswith("rl")
    rc, res_b = cni(host, "ADD", c, "cb", netns.path(b))
    assert rc == 0 and res_b["ips"][0]["address"] == "10.91.0.3/24"
    assert ping(a, "10.91.0.3")
    # ADD again is the same attachment, not a second one
    assert cni(host, "ADD", c, "ca", netns.path(a))[1]["ips"] == res["ips"]
    assert cni(host, "CHECK", dict(c, prevResult=res), "ca", netns.path(a)) == (0, None)
    # the container end removed by hand: CHECK says so
    sh("ip", "-n", a, "link", "del", "eth0")
    rc, err = cni(host, "CHECK", c, "ca", netns.path(a))
    assert rc == 1 and err["code"] == 100 and "missing" in err["details"]
    assert cni(host, "DEL", c, "ca", netns.path(a)) == (0, None)
    assert cni(host, "DEL", c, "ca", netns.path(a)) == (0, None)     # idempotent
    rc, err = cni(host, "CHECK", c, "ca", netns.path(a))
    assert rc == 1 and err["code"] == 3
    # GC with cb no longer valid: its veth and address go
    rc, _ = cni(host, "GC", dict(c, **{"cni.dev/valid-attachments": []}))
    assert rc == 0
    assert sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout == ""
    ipam = {"allocations": IPAM(str(tmp_path / "state")).holders("rlcni")}
    assert ipam["allocations"] == {}


def test_errors_are_spec_error_objects(tmp_path, netns, host):
    c = conf(tmp_path)
    rc, err = cni(host, "ADD", c, "cx", "/var/run/netns/rl-none")
    assert rc == 1 and err["code"] == 3 and err["cniVersion"] == "1.1.0"
    rc, err = cni(host, "ADD", c, "", "")
    assert rc == 1 and err["code"] == 4 and "CNI_CONTAINERID" in err["msg"]
    rc, err = cni(host, "ADD", c, stdin="{nope")
    assert rc == 1 and err["code"] == 6
    rc, err = cni(host, "ADD", dict(c, cniVersion="9.9.9"), "c", "/x")
    assert rc == 1 and err["code"] == 1
    a = netns.new("a")
    rc, err = cni(host, "ADD", dict(c, subnets=["10.91.0.0/33"]), "c", netns.path(a))
    assert rc == 1 and err["code"] == 7 and "subnets" in err["details"]
    rc, err = cni(host, "FROB", c)
    assert rc == 1 and err["code"] == 4


def test_warm_del_answers_early_and_still_finishes(tmp_path, netns, host, node):
    """Through the node's planner, DEL answers once the detach is committed and
    then deletes the veth while it still holds Relay's lock and sockets: the
    veth goes, the address is free, and the next ADD/DEL pair works too."""
    exe, marks = marked_front_end(tmp_path, "emergence-cni")
    c = conf(tmp_path)

    def call(command, cid, ns):
        e = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
             "CNI_NETNS": netns.path(ns), "CNI_IFNAME": "eth0",
             "CNI_PATH": os.path.dirname(exe), "EMERGENCE_PLANNER_SOCKET": node.socket}
        r = subprocess.run(["ip", "netns", "exec", host, exe], input=json.dumps(c),
                           capture_output=True, text=True, env=e, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout) if r.stdout.strip() else None

    def veths():
        return sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout

    for round_ in range(2):
        a = netns.new(f"w{round_}")
        res = call("ADD", f"cw{round_}", a)
        assert res["ips"][0]["address"].startswith("10.91.0.")
        assert veths() != ""
        assert call("DEL", f"cw{round_}", a) is None
        for _ in range(100):          # the veth goes after the answer
            if veths() == "":
                break
            time.sleep(0.02)
        assert veths() == ""
        assert IPAM(str(tmp_path / "state")).holders("rlcni") == {}
    assert marks.read_text() == "", "a call took the cold path"


def test_the_planners_rehearsal_leaves_no_trace(tmp_path):
    """warm_up/prefault (run by the node's planner and each worker before a
    call) go through a call's Python side on a scratch state: no attachment,
    address or kernel object is left, and a second worker's rehearsal works."""
    from emergence.relay import cni
    from emergence.relay.engine import Relay
    cni.warm_up(str(tmp_path))
    cni.prefault(str(tmp_path))
    cni.prefault(str(tmp_path))
    r = Relay(str(tmp_path / "relay"))
    try:
        g = r.desired()
        assert list(g.networks) == [cni.WARM] and len(g.attachments) == 0
        assert r.ipam.holders(cni.WARM) == {}
        assert r.kernel.index("rl-warm-up") is None  # the network was never applied
    finally:
        r.close()
