"""With no node up -- how podman's CNI backend meets the plugin on most hosts
-- `emergence-cni`'s ADD, DEL or CHECK starts the default root's planner on
demand (ROOT/.planner/BUILD, as the runtime's hot verbs do) and runs cold; the
next calls run warm in it, with the same answers as cold ones: the same CNI
JSON, the same errors, the same kernel state afterwards."""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import marked_front_end
from node.test_warm_path import _listening, _planners, _until

from emergence.relay.ipam import IPAM

from .conftest import sh

IDLE = "5"


def _demand_dir():
    from emergence.node import BUILD_ID  # the installed build's: one dir per build
    return os.path.join("/run/emergence/.planner", BUILD_ID)


@pytest.fixture
def demand():
    """The default root's planner of this build: none before, none after."""
    if os.path.exists("/run/emergence/node/planner.sock"):
        pytest.skip("a node's planner is up on this host: the default path uses it")
    sock = os.path.join(_demand_dir(), "planner.sock")

    def stop():
        for pid in _planners(sock):
            os.kill(pid, signal.SIGKILL)
        _until(lambda: not _planners(sock))
    stop()
    yield sock
    stop()


def cni(exe, host, command, conf, cid, netns, ifname="eth0", planner=None):
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": os.path.dirname(exe),
           "EMERGENCE_PLANNER_IDLE": IDLE}
    if planner:
        env["EMERGENCE_PLANNER_SOCKET"] = planner
    p = subprocess.run(["ip", "netns", "exec", host, exe], input=json.dumps(conf),
                       capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr


def _plain(res):
    """An ADD's result without what differs between two attachments anyway
    (MACs, the host end's hashed name, the container's netns path)."""
    res = json.loads(json.dumps(res))
    for i in res.get("interfaces", []):
        i["mac"] = "MAC"
        if "sandbox" in i:
            i["sandbox"] = "NETNS"
    if res.get("interfaces"):
        res["interfaces"][0]["name"] = "HOST"
    return res


def test_a_cni_call_starts_a_planner_and_warm_calls_answer_as_cold(tmp_path, netns, demand):
    exe, marks = marked_front_end(tmp_path, "emergence-cni")

    def colds():
        return len(marks.read_text().splitlines())
    hosts = {"warm": netns.new("hw"), "cold": netns.new("hc"), "start": netns.new("hs")}
    confs = {way: {"cniVersion": "1.1.0", "name": "rlod", "type": "emergence-cni",
                   "bridge": "rlod0", "subnets": ["10.89.0.0/24"], "veth_prefix": "rl",
                   "stateDir": str(tmp_path / f"state-{way}")} for way in hosts}
    # a call that changes nothing starts none
    rc, out, _ = cni(exe, hosts["start"], "VERSION", {"cniVersion": "1.1.0"}, "", "")
    assert rc == 0 and "1.1.0" in out["supportedVersions"] and colds() == 1
    time.sleep(1)
    assert _planners(demand) == [] and not _listening(demand)
    # the first ADD runs cold and starts it
    first = netns.new("f")
    rc, res, err = cni(exe, hosts["start"], "ADD", confs["start"], "first", netns.path(first))
    assert rc == 0, err
    assert colds() == 2
    assert _until(lambda: _listening(demand)), "no planner came up"
    assert len(_planners(demand)) == 1
    assert os.stat(os.path.dirname(demand)).st_mode & 0o777 == 0o700
    assert os.stat(demand).st_mode & 0o777 == 0o600
    assert cni(exe, hosts["start"], "DEL", confs["start"], "first", netns.path(first))[0] == 0
    # the same calls, warm on one host and cold on the other: the same answers
    seen = {}
    # (on hosts of their own: the first ADD moved its IPAM's next address)
    for way, planner in (("warm", None), ("cold", "off")):
        before = colds()
        h, c, ns = hosts[way], confs[way], netns.new(way[0])
        got = []
        rc, res, err = cni(exe, h, "ADD", c, "ctr", netns.path(ns), planner=planner)
        assert rc == 0 and err == "", err
        got.append(_plain(res))
        got.append(cni(exe, h, "CHECK", dict(c, prevResult=res), "ctr", netns.path(ns),
                       planner=planner)[:2])
        got.append(cni(exe, h, "ADD", c, "long", netns.path(ns), ifname="x" * 19,
                       planner=planner)[:2])
        got.append(cni(exe, h, "ADD", c, "gone", "/var/run/netns/rl-no-such",
                       planner=planner)[:2])
        got.append(cni(exe, h, "ADD", dict(c, subnets=["0.0.0.0/0"], name="rlbad"), "bad",
                       netns.path(ns), planner=planner)[:2])
        got.append(cni(exe, h, "DEL", c, "ctr", netns.path(ns), planner=planner)[:2])
        seen[way] = got
        assert colds() - before == (0 if way == "warm" else len(got)), way
        assert _until(lambda h=h: sh("ip", "-n", h, "-o", "link", "show", "type",
                                     "veth").stdout == "", 10), f"{way}: a veth is left"
        assert IPAM(c["stateDir"]).holders("rlod") == {}
    assert seen["warm"] == seen["cold"]
    codes = [x[1]["code"] for x in seen["warm"][2:5]]
    assert codes == [4, 3, 7], seen["warm"]  # bad environment, no container, bad config
    assert seen["warm"][-1] == (0, None)
