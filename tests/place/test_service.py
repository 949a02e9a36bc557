"""The HTTP API on a harness like the node's (an aiohttp app on 127.0.0.1 and
a free port), against a real etcd: 200 with the chosen host, 400 on
malformed bodies, settings stored in etcd for every command node."""

import asyncio
import contextlib

import aiohttp

from emergence import access
from emergence.cluster.etcd import free_port
from emergence.place import tasks
from emergence.place.service import Service

TOKEN = "pl-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def serving(svc):
    """SVC's routes as the node serves them: under access.py, node token TOKEN."""
    from aiohttp import web
    await svc.start()
    runner = web.AppRunner(access.application(svc.routes(), access.Policy(TOKEN)))
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
        await svc.stop()


def _host(cluster, name, cpu_util, green=0.0):
    cluster.put({"name": name, "role": "worker", "capacity": {"cpu": 4, "memory": 8e9},
                 "arch": "amd64", "green": green}, "members", name)
    cluster.put({"ts": 1, "util": {"cpu": cpu_util, "memory": 0.2}}, "telemetry", name)


def _serve(cluster, calls):
    async def main():
        svc = Service({"etcd": cluster.endpoint, "prefix": cluster.prefix,
                       "cluster_dir": cluster.material.dir},
                      "/nonexistent", lambda m: None)
        out = []
        async with serving(svc) as port:
            async with aiohttp.ClientSession() as s:
                for path, body, headers in calls:
                    kw = {"data": body} if isinstance(body, str) else {"json": body}
                    async with s.post(f"http://127.0.0.1:{port}/place/api/{path}",
                                      headers=AUTH if headers is None else headers,
                                      **kw) as r:
                        out.append((r.status, await r.json()))
                async with s.get(f"http://127.0.0.1:{port}/place/api/status") as r:
                    out.append((r.status, await r.json()))
        return out
    return asyncio.run(main())


def test_schedule_and_settings(cluster):
    _host(cluster, "busy", 0.9)
    _host(cluster, "idle", 0.1, green=1.0)
    _host(cluster, "mid", 0.5)
    tasks.submit(cluster, {"kind": "sleep", "id": "t1", "demand": {"cpu": 0.4}})
    out = _serve(cluster, [
        ("schedule", {"ID": "t1", "HOST_IDS": ["busy", "idle", "mid"]}, None),
        ("schedule", {"ID": "t1", "HOST_IDS": ["busy"]}, None),
        ("schedule", {"ID": 77, "DEMAND": {"cpu": 1}}, None),
        ("iaEnergyScalar", {"energy_cost_scalar": 5}, None),
        ("schedule", {"ID": "t1"}, None),
        ("scheduler", {"model_name": "RandomScheduler"}, None),
        ("scheduler", {"model_name": "InteferenceAwareScheduler"}, None),
    ])
    # Ū = (cpu .5, mem .2); V cpu = 0.4/4 = .1.  D0: busy .4, idle .4, mid 0.
    # idle: D |.2−.5| = .3, D_max .4; mid: D .1, D_max .4; busy: D .5, D_max .5
    # -> idle and mid tie on D_max, mid's D is lower
    assert out[0] == (200, {"ID": "t1", "HOST_ID": "mid"})
    assert out[1] == (200, {"ID": "t1", "HOST_ID": "busy"})
    # V = .25: idle D .15, mid D .25, both D_max .4 -> idle
    assert out[2] == (200, {"ID": 77, "HOST_ID": "idle"})
    assert out[3] == (200, {"energy_cost_scalar": 5})
    # s_green 5: mid's D_green = .1 + .1·5 = .6 > .4; idle is all green: .3, D_max .4
    assert out[4] == (200, {"ID": "t1", "HOST_ID": "idle"})
    assert out[5][0] == 200 and out[6] == (200, {"model_name": "InterferenceAwareScheduler"})
    assert cluster.get("config", "s_green") == 5.0
    assert cluster.get("config", "scheduler") == "InterferenceAwareScheduler"
    assert out[7] == (200, {"role": "none", "etcd": cluster.endpoint})


def test_malformed_bodies_are_400_with_one_line(cluster):
    _host(cluster, "h", 0.1)
    out = _serve(cluster, [
        ("schedule", "{not json", None),
        ("schedule", [1], None),
        ("schedule", {"HOST_IDS": ["h"]}, None),
        ("schedule", {"ID": "t", "HOST_IDS": "h"}, None),
        ("schedule", {"ID": "nosuch"}, None),
        ("schedule", {"ID": "x", "DEMAND": {"cpu": -1}}, None),
        ("scheduler", {"model_name": "Magic"}, None),
        ("iaEnergyScalar", {"energy_cost_scalar": "high"}, None),
        ("iaEnergyScalar", {"energy_cost_scalar": float("nan")}, None),
        ("iaEnergyScalar", '{"energy_cost_scalar": 1e400}', None),
        ("schedule", {"ID": "x", "DEMAND": {"cpu": float("nan")}}, None),
        ("iaEnergyScalar", {}, None),
    ])
    for status, body in out[:-1]:
        assert status == 400 and "\n" not in body["error"], (status, body)
    assert "no task 'nosuch'" in out[4][1]["error"]
    assert "demand.cpu" in out[5][1]["error"]
    assert "finite" in out[8][1]["error"] and "finite" in out[9][1]["error"]
    assert "demand.cpu" in out[10][1]["error"]
    assert cluster.get("config", "s_green") is None


def test_settings_need_the_node_token(cluster):
    out = _serve(cluster, [
        ("iaEnergyScalar", {"energy_cost_scalar": 1}, {}),
        ("iaEnergyScalar", {"energy_cost_scalar": 1}, {"Authorization": "Bearer s3"}),
        ("scheduler", {"model_name": "RandomScheduler"}, {}),
        ("iaEnergyScalar", {"energy_cost_scalar": 1}, AUTH),
    ])
    assert [o[0] for o in out[:4]] == [401, 401, 401, 200]
    assert cluster.get("config", "scheduler") is None


def test_one_machine_cluster_with_embedded_etcd(tmp_path):
    """cluster_init + role both: the service starts its own etcd and is a
    command node and a worker; a submitted task runs and is recorded.  The
    etcd is TLS with RBAC, its certificates in the node's cluster dir."""
    import time

    from emergence.cluster.files import Material
    from emergence.place.state import Cluster
    url = f"https://127.0.0.1:{free_port()}"
    state = tmp_path / "pl-state"
    state.mkdir()
    logs = []

    async def main():
        svc = Service({"etcd": url, "cluster_init": True, "role": "both",
                       "node_name": "pl-solo", "lease_ttl": 2, "cpu": 2},
                      str(state), logs.append)
        await svc.start()
        try:
            c = Cluster(url, material=Material(str(tmp_path / "cluster")))
            tasks.submit(c, {"kind": "sleep", "seconds": 0.05, "id": "solo"})
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and c.get("results", "solo") is None:
                await asyncio.sleep(0.1)
            return c.get("results", "solo"), svc.status(), svc.etcd.pid
        finally:
            await svc.stop()

    result, status, pid = asyncio.run(main())
    assert result and result["host"] == "pl-solo" and result["exit"] == 0, logs
    assert status["commander"]["leading"] is True and status["worker"]["won"] == 1
    assert (state / "etcd").is_dir()
    assert (tmp_path / "cluster" / "ca.key").stat().st_mode & 0o777 == 0o600
    import os
    assert not os.path.exists(f"/proc/{pid}") or \
        open(f"/proc/{pid}/stat").read().split()[2] == "Z"
