"""The CNI plugin's fast paths: a planner worker loads the recent state
directories before a call, which then reads only the journals' tails; a
cold DEL answers once committed and its child finishes the kernel work."""

import json
import os
import subprocess
import sys
import time

from emergence.relay.ipam import IPAM

from .conftest import sh

CNI = os.path.join(os.path.dirname(sys.executable), "emergence-cni")


def test_a_worker_loads_recent_state_before_the_call(tmp_path, monkeypatch):
    """(Journals only, written as another process would: nothing here is
    applied, so nothing touches a kernel.)"""
    from emergence.relay import cni, journal
    from emergence.relay.graph import Network
    state = str(tmp_path / "state")
    os.makedirs(state)

    def declare(net):
        j = journal.Journal(os.path.join(state, "graph"))
        j.refresh()
        j.commit({net.key: net.to_dict()}, sync=False)
    declare(Network("red", "rlred", ["10.88.0.0/24"]))
    scratch = tmp_path / "scratch"
    (scratch / "relay").mkdir(parents=True)
    monkeypatch.setattr(cni, "_scratch", str(scratch))
    monkeypatch.setattr(cni, "_warm", {})
    monkeypatch.setattr(cni, "_one_shot", lambda: None)   # keep this process's GC on
    first = cni._relay({"stateDir": state})        # a call on the warm path...
    first.close()
    assert (scratch / "relay" / "recent").read_text() == os.path.abspath(state)
    cni._preload()                                  # ...so the next worker loads it
    loaded = cni._warm[os.path.abspath(state)]
    reloads = []
    monkeypatch.setattr(journal.Journal, "_reload",
                        lambda self, snap, orig=journal.Journal._reload:
                        (self in (loaded._gj, loaded._aj) and reloads.append(self))
                        or orig(self, snap))
    declare(Network("blue", "rlblue", ["10.89.0.0/24"]))   # another process appends
    relay = cni._relay({"stateDir": state})
    assert relay is loaded                          # the call takes the loaded one
    # and leaves it referenced: the worker exits without freeing its journals
    assert cni._warm == {os.path.abspath(state): loaded}
    assert relay.network("blue") is not None        # and reads only what was appended
    assert relay.network("red") is not None
    assert reloads == []
    relay.close()


def test_a_cold_del_answers_and_its_child_finishes(tmp_path, netns, host):
    conf = json.dumps({"cniVersion": "1.1.0", "name": "rlcf", "type": "emergence-cni",
                       "bridge": "rlcf0", "subnets": ["10.92.0.0/24"], "veth_prefix": "rl",
                       "stateDir": str(tmp_path / "state")})
    a = netns.new("a")

    def call(command):
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": "cf",
               "CNI_NETNS": netns.path(a), "CNI_IFNAME": "eth0",
               "CNI_PATH": os.path.dirname(CNI), "EMERGENCE_PLANNER_SOCKET": "off"}
        return subprocess.run(["ip", "netns", "exec", host, CNI], input=conf,
                              capture_output=True, text=True, env=env, timeout=60)
    assert call("ADD").returncode == 0
    assert sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout != ""
    p = call("DEL")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    # the address is free at once (committed before the answer)
    assert IPAM(str(tmp_path / "state")).holders("rlcf") == {}
    for _ in range(250):                     # the veth goes after the answer
        if sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout == "":
            break
        time.sleep(0.02)
    assert sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout == ""
    # and a second DEL and ADD find everything in order (the child let go of the lock)
    assert call("DEL").returncode == 0
    assert call("ADD").returncode == 0 and call("DEL").returncode == 0
