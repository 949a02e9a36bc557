"""The reconciler, hosted the way the node hosts it: an aiohttp application on
127.0.0.1 with the service's routes, start() on the running loop."""

import asyncio
import json
import subprocess
import threading
import time

import pytest
from conftest import serving

from .conftest import net_doc, sh

pytestmark = pytest.mark.slow


def graph(netns, names):
    from emergence.relay.graph import Graph
    return Graph.from_dict({"networks": dict([net_doc("red")]),
                            "attachments": [{"network": "red", "container": n,
                                             "netns": netns.path(n)} for n in names]})


async def _until(pred, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return False


def _veths(host):
    return sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout.splitlines()


def test_reconciler_repairs_releases_and_resyncs(tmp_path, netns, host):
    from aiohttp import ClientSession

    from emergence.relay.engine import Relay
    from emergence.relay.service import Service
    state = str(tmp_path / "state")
    names = [netns.new(f"v{i}") for i in range(3)]
    r = Relay(state, host_netns=host)
    r.apply(graph(netns, names))
    r.close()
    logs = []

    async def scenario():
        svc = Service({"host_netns": host, "resync_interval": 1.0}, state, logs.append)
        async with serving(svc) as port:
            assert await _until(lambda: svc.stats["resyncs"] >= 1)
            assert svc.stats["changes"] == 0         # it was converged already
            # a veth deleted by hand comes back, with only that veth's operations
            applied = svc.relay.applied()["attachments"]
            victim = applied[f"att:red/{names[0]}/eth0"]["host"]
            svc.relay.kernel.ops.clear()
            before = svc.stats["reconciles"]
            sh("ip", "-n", host, "link", "del", victim)
            assert await _until(lambda: svc.stats["reconciles"] > before
                                and any(victim in line for line in _veths(host)))
            await asyncio.sleep(0.3)    # the events of its own repair: checked, no ops
            ops = list(svc.relay.kernel.ops)
            assert [o[0] for o in ops] == ["link.del", "veth.add", "sysctl", "link.set",
                                           "addr.add", "link.set", "route.add"]
            assert ops[1][1] == victim
            # the bridge's address removed by hand returns
            sh("ip", "-n", host, "addr", "flush", "dev", "rlred")
            assert await _until(lambda: "10.88.0.1/24" in sh(
                "ip", "-n", host, "addr", "show", "rlred").stdout)
            # a deleted netns: its attachment and address are released
            netns.remove(names[1])
            assert await _until(lambda: f"att:red/{names[1]}/eth0" not in
                                svc.relay.desired().attachments)
            assert len(svc.relay.ipam.holders("red")) == 2
            # unrelated events are ignored
            await asyncio.sleep(0.5)
            before = svc.stats["reconciles"]
            sh("ip", "-n", host, "link", "add", "rlunrel0", "type", "veth", "peer", "name",
               "rlunrel1")
            sh("ip", "-n", host, "link", "del", "rlunrel0")
            await asyncio.sleep(0.3)
            assert svc.stats["ignored"] >= 2 and svc.stats["reconciles"] == before
            # an address removed inside a container: the periodic full compare
            sh("ip", "-n", names[2], "addr", "flush", "dev", "eth0")
            assert await _until(lambda: "10.88.0." in subprocess.run(
                ["ip", "-n", names[2], "-4", "addr", "show", "eth0"], capture_output=True,
                text=True).stdout)
            async with ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/relay/v1/status") as resp:
                    st = json.loads(await resp.text())
            assert st["errors"] == 0 and st["resyncs"] >= 2
    asyncio.run(scenario())
    Relay(state, host_netns=host).apply(__import__("emergence.relay.graph",
                                                   fromlist=["Graph"]).Graph())


def test_lost_events_trigger_a_full_resync(tmp_path, netns, host):
    from emergence.relay.service import Service
    state = str(tmp_path / "state")

    async def scenario():
        # a tiny receive buffer and a burst of events: the kernel drops some (ENOBUFS)
        svc = Service({"host_netns": host, "resync_interval": 3600, "rcvbuf": 1024}, state,
                      lambda m: None)
        await svc.start()
        try:
            await _until(lambda: svc.stats["resyncs"] >= 1)
            # hold the listener at its next event while the burst lands, so the
            # kernel's queue overflows whatever the machine's load
            gate, on_event = threading.Event(), svc._on_event

            def slow(*ev):
                gate.wait(30)
                on_event(*ev)
            svc._on_event = slow
            burst = "".join(f"link add rlb{i} type veth peer name rlc{i}\n" for i in range(200))
            burst += "".join(f"link del rlb{i}\n" for i in range(200))
            subprocess.run(["ip", "-n", host, "-batch", "-"], input=burst, text=True,
                           check=True)
            gate.set()
            assert await _until(lambda: svc.stats["enobufs"] >= 1)
            assert await _until(lambda: svc.stats["resyncs"] >= 2)
        finally:
            await svc.stop()
    asyncio.run(scenario())
