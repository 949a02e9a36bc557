"""An edit that names its keys (attach, detach) finds what an interrupted
apply left -- attachments desired but not applied, or applied but no longer
desired -- from sets the engine keeps key by key, not by comparing the whole
graph with the whole applied record: its own cost stays flat at any size, and
what another process left half done is still picked up."""

import os
import signal
import subprocess
import sys

from emergence.relay.engine import Relay, Tracked
from emergence.relay.graph import Network, StateNodes

from .conftest import sh

HALF = """
import sys, time
from emergence.relay.engine import Relay
import emergence.relay.kernel as k
def stuck(self, *a, **kw):
    print("midway", flush=True); time.sleep(60)
k.Kernel.veth_add = stuck
Relay(sys.argv[1], host_netns=sys.argv[2]).attach("red", sys.argv[3], sys.argv[4])
"""


def veths(host):
    return sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout.splitlines()


def test_an_attach_compares_no_whole_views(relay, netns, host, monkeypatch):
    relay.create_network(Network("red", "rlpd0", ["10.86.0.0/24"], veth_prefix="rl"))
    spread = [netns.new(f"p{i}") for i in range(3)]
    for i in range(30):
        relay.attach("red", f"c{i}", netns.path(spread[i % 3]), f"e{i}")
    calls = []

    def counted(self):
        calls.append(type(self).__name__)
        return dict.keys(self)
    monkeypatch.setattr(StateNodes, "keys", counted, raising=False)
    monkeypatch.setattr(Tracked, "keys", counted, raising=False)
    x = netns.new("x")
    relay.attach("red", "x", netns.path(x))
    relay.detach("red", "x")
    assert calls == [], calls
    assert len(veths(host)) == 30


def test_what_another_process_left_half_done_is_picked_up(relay, netns, host):
    """Another Relay records an attachment and is killed before its veth is
    made: this (long-lived, already loaded) Relay's next attach of another
    container applies it too; a detach of one the other process removed from
    the graph alone is finished the same way."""
    relay.create_network(Network("red", "rlpd0", ["10.86.0.0/24"], veth_prefix="rl"))
    a, b, c = netns.new("a"), netns.new("b"), netns.new("c")
    relay.attach("red", "a", netns.path(a))
    p = subprocess.Popen([sys.executable, "-c", HALF, relay.state_dir, host, "b",
                          netns.path(b)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "midway"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert len(veths(host)) == 1
    relay.attach("red", "c", netns.path(c))
    assert len(veths(host)) == 3
    applied = relay.applied()["attachments"]
    assert {"att:red/a/eth0", "att:red/b/eth0", "att:red/c/eth0"} <= set(applied)
    # another process drops a from the graph only (as a DEL killed before its
    # kernel work): the next edit here removes its veth
    other = Relay(relay.state_dir, host_netns=host)
    with other:
        other._load()
        g = other._g
        del g.attachments["att:red/a/eth0"]
        other._save_graph(g, {"att:red/a/eth0"})
    other.close()
    relay.detach("red", "c")
    assert len(veths(host)) == 1
    assert set(relay.applied()["attachments"]) == {"att:red/b/eth0"}
    assert [v["key"] for v in relay.ipam.holders("red").values()] == ["att:red/b/eth0"]
