"""Placement inside `emergence node`: this node as a command node, a worker,
both or neither, and the HTTP API other tools use (shaped like the
interference-aware scheduler's: POST a schedule request, set the scheduler,
set the energy scalar; 200, or 400 with one line on malformed input).

  POST /place/api/schedule       {"ID": task, "HOST_IDS": [...]} -> {"ID", "HOST_ID"}
  POST /place/api/scheduler      {"model_name": "InterferenceAwareScheduler"|"RandomScheduler"
                                  |"LeastAllocated"|"BalancedAllocation"}
  POST /place/api/iaEnergyScalar {"energy_cost_scalar": number}
  GET  /place/api/status         this service's status
  POST /place/extender/filter     kube-scheduler's extender (extender.py): ExtenderArgs ->
  POST /place/extender/prioritize ExtenderFilterResult / HostPriorityList (scores 0..10)

Settings go to etcd (config/…), so every command node uses them.  With
`cluster_init` the service starts a local etcd itself (data in its state
dir), so one machine is a whole cluster: `emergence node start` with
role both.  The
nodes' loops are blocking (requests), so they run in threads; handlers call
etcd in the loop's executor.  The POSTs that change settings are `control`
routes (access.py): they need the node token or a client certificate.
"""

import math
import threading

from ..errors import EmergenceError

SCHEDULER_NAMES = {"InterferenceAwareScheduler": "InterferenceAwareScheduler",
                   "InteferenceAwareScheduler": "InterferenceAwareScheduler",  # background
                   "RandomScheduler": "RandomScheduler",
                   "LeastAllocated": "LeastAllocated",  # Kubernetes' defaults (k8s.py)
                   "BalancedAllocation": "BalancedAllocation"}


class Service:
    """Long-running work of place inside `emergence node`."""

    name = "place"
    DEFAULTS = {"etcd": "https://127.0.0.1:2379", "prefix": "/emergence/", "role": "none",
                "node_name": "", "lease_ttl": 5.0, "ack_timeout": 3.0, "cpu": 0.0,
                "memory": 0.0, "cluster_init": False,
                "cluster_dir": "",   # default: <state_dir>/cluster (the cluster service's)
                "insecure": False,   # plain http etcd, no certificates: say so explicitly
                "allow_bundles": [],  # the worker's policy (emergence/cluster/policy.py):
                "allow_binds": [],    # where bundle tasks and their bind mounts may come from
                "root": "",          # the tasks' container state (default: the runtime's)
                "store": ""}         # the image store tasks run from (default: the node's)

    def __init__(self, config, state_dir, log):
        self.config = dict(self.DEFAULTS, **(config or {}))
        self.state_dir, self.log = state_dir, log
        if self.config["role"] not in ("none", "worker", "command", "both"):
            raise EmergenceError(f"place role {self.config['role']!r}: use none, worker, "
                                 "command or both")
        for key, low in (("lease_ttl", 1.0), ("ack_timeout", 0.1), ("cpu", 0.0),
                         ("memory", 0.0)):
            v = self.config[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                    not math.isfinite(v) or v < low:
                raise EmergenceError(f"[place] {key} = {v!r}: use a finite number >= {low:g}")
        self.nodes, self.threads = [], []
        self._cluster = None
        self.etcd = None  # the embedded etcd, when cluster_init

    @property
    def cluster(self):
        if self._cluster is None:
            from .state import Cluster
            if self.config["insecure"]:
                self.log("place: --insecure: etcd over plain http, no certificates")
                self._cluster = Cluster(self.config["etcd"], prefix=self.config["prefix"],
                                        insecure=True)
            else:
                self._cluster = Cluster(self.config["etcd"], prefix=self.config["prefix"],
                                        material=self._material())
        return self._cluster

    def _material(self):
        import os

        from ..cluster.files import Material
        return Material(self.config["cluster_dir"] or
                        os.path.join(os.path.dirname(self.state_dir.rstrip("/")), "cluster"))

    # -- lifecycle -------------------------------------------------------------
    async def start(self):
        import asyncio
        import socket
        role, c = self.config["role"], self.config
        if c["cluster_init"]:
            await asyncio.get_running_loop().run_in_executor(None, self._embedded_etcd)
        name = c["node_name"] or socket.gethostname()
        if role in ("command", "both"):
            from .commander import Commander
            self.nodes.append(Commander(self.cluster, name, {
                "lease_ttl": c["lease_ttl"], "ack_timeout": c["ack_timeout"]}, self.log))
        if role in ("worker", "both"):
            from .worker import Worker
            self.nodes.append(Worker(self.cluster, name, {
                "lease_ttl": c["lease_ttl"], "cpu": c["cpu"] or None,
                "memory": c["memory"] or None,
                "policy": {"bundles": c["allow_bundles"], "binds": c["allow_binds"]},
                **{k: c[k] for k in ("root", "store") if c[k]}},
                self.log))
        for n in self.nodes:
            t = threading.Thread(target=n.run, name=f"place-{type(n).__name__}",
                                 daemon=True)
            t.start()
            self.threads.append(t)

    async def stop(self):
        import asyncio
        for n in self.nodes:
            n.stop()
        loop = asyncio.get_running_loop()
        for t in self.threads:
            await loop.run_in_executor(None, t.join, 10)
        for n in self.nodes:
            if hasattr(n, "resign"):
                await loop.run_in_executor(None, n.resign)
        self.nodes, self.threads = [], []
        if self.etcd is not None:
            self.etcd.terminate()
            await loop.run_in_executor(None, self.etcd.wait)
            self.etcd = None

    def _embedded_etcd(self):
        """One local etcd for a single-machine cluster, data in the state dir,
        on the port of `etcd` (unless one already answers there)."""
        import os
        from urllib.parse import urlparse

        from ..cluster import bootstrap, etcd
        m = None if self.config["insecure"] else self._material()
        if m is not None and urlparse(self.config["etcd"]).scheme != "https":
            raise EmergenceError(f"place etcd {self.config['etcd']} is plain http: use "
                                 "https:// (a TLS etcd with certificates), or set place "
                                 "insecure = true")
        try:
            etcd.wait_ready(self.config["etcd"], timeout=0.3, material=m)
            self.log(f"place: etcd already answers at {self.config['etcd']}; using it")
            return
        except EmergenceError:
            pass
        port = urlparse(self.config["etcd"]).port or 2379
        data, log = os.path.join(self.state_dir, "etcd"), os.path.join(self.state_dir, "etcd.log")
        if m is None:
            self.etcd, url = etcd.start(data, client_port=port, log=log)
        else:
            self.etcd, url, _ = bootstrap.init(m.dir, data, name=self.config["node_name"] or None,
                                               prefix=self.config["prefix"], client_port=port,
                                               log=log)
        self.log(f"place: embedded etcd at {url}")

    def status(self):
        out = {"role": self.config["role"], "etcd": self.config["etcd"]}
        for n in self.nodes:
            kind = type(n).__name__.lower()
            out[kind] = dict(n.counts)
            if kind == "commander":
                out[kind]["leading"] = n.leading
        return out

    # -- HTTP ------------------------------------------------------------------------
    def routes(self):
        from aiohttp import web

        from .. import access
        return [access.control(web.post("/place/api/schedule", self._schedule)),
                access.control(web.post("/place/api/scheduler", self._scheduler)),
                access.control(web.post("/place/api/iaEnergyScalar", self._energy)),
                access.read(web.get("/place/api/status", self._status)),
                # control, as /place/api/schedule: they read every node's load and
                # cost a snapshot of etcd each; kube-scheduler authenticates with a
                # client certificate of the cluster CA (its extender tlsConfig)
                access.control(web.post("/place/extender/filter", self._extender_filter)),
                access.control(web.post("/place/extender/prioritize",
                                        self._extender_prioritize))]

    @staticmethod
    def _bad(msg):
        from aiohttp import web
        msg = msg if len(msg) <= 300 else msg[:300] + "…"  # never a client's value whole
        return web.json_response({"error": msg}, status=400)

    async def _body(self, request):
        try:
            body = await request.json()
        except Exception:
            return None, self._bad("the body is not JSON")
        if not isinstance(body, dict):
            return None, self._bad("the body must be a JSON object")
        return body, None

    async def _offload(self, fn, *args):
        import asyncio
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _schedule(self, request):
        from aiohttp import web
        body, err = await self._body(request)
        if err:
            return err
        tid, hosts = body.get("ID"), body.get("HOST_IDS")
        if not isinstance(tid, (str, int)) or isinstance(tid, bool):
            return self._bad("ID must be a task id (string or integer)")
        if hosts is not None and (not isinstance(hosts, list) or not hosts or not all(
                isinstance(h, (str, int)) and not isinstance(h, bool) for h in hosts)):
            return self._bad("HOST_IDS must be a non-empty list of host names")
        demand = body.get("DEMAND")
        if demand is not None and not isinstance(demand, dict):
            return self._bad("DEMAND must be an object of resource: amount")
        try:
            result = await self._offload(self._choose, str(tid), hosts, demand)
        except EmergenceError as e:
            return self._bad(str(e))
        return web.json_response({"ID": tid, "HOST_ID": result})

    def _choose(self, tid, hosts, demand):
        from .commander import DEFAULTS, candidates
        from .tasks import validate
        snap = self.cluster.snapshot()
        spec = snap.get("tasks", {}).get(tid)
        if spec is None:
            if demand is None:
                raise EmergenceError(f"no task {tid!r}; submit it or give DEMAND")
            spec = validate({"kind": "sleep", "id": "api", "demand": demand})
        settings = {k: DEFAULTS[k] for k in ("s_green", "scheduler", "cost")}
        settings.update(snap.get("config", {}))
        ranked = candidates(spec, snap, settings)
        if hosts is not None:
            allowed = {str(h) for h in hosts}
            ranked = [r for r in ranked if r["name"] in allowed]
        if not ranked:
            raise EmergenceError("no host in HOST_IDS can take the task")
        return ranked[0]["name"]

    async def _extender(self, request, fn):
        from aiohttp import web
        body, err = await self._body(request)
        if err:
            return err

        def decide():
            from .commander import DEFAULTS
            snap = self.cluster.snapshot()
            settings = {k: DEFAULTS[k] for k in ("s_green", "scheduler", "cost")}
            settings.update(snap.get("config", {}))
            return fn(body, snap, settings)
        try:
            return web.json_response(await self._offload(decide))
        except EmergenceError as e:
            return self._bad(str(e))

    async def _extender_filter(self, request):
        from .extender import filter_result
        return await self._extender(request, filter_result)

    async def _extender_prioritize(self, request):
        from .extender import priorities
        return await self._extender(request, priorities)

    async def _setting(self, request):
        """(body, None) of a settings call (authorised by its route's class), or
        (None, the error response)."""
        return await self._body(request)

    async def _scheduler(self, request):
        from aiohttp import web
        body, err = await self._setting(request)
        if err:
            return err
        name = SCHEDULER_NAMES.get(body.get("model_name"))
        if name is None:
            return self._bad(f"model_name must be one of {', '.join(sorted(SCHEDULER_NAMES))}")
        await self._offload(self.cluster.put, name, "config", "scheduler")
        return web.json_response({"model_name": name})

    async def _energy(self, request):
        from aiohttp import web
        body, err = await self._setting(request)
        if err:
            return err
        v = body.get("energy_cost_scalar")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0:
            return self._bad("energy_cost_scalar must be a finite number >= 0")
        await self._offload(self.cluster.put, float(v), "config", "s_green")
        return web.json_response({"energy_cost_scalar": v})

    async def _status(self, request):
        from aiohttp import web
        return web.json_response(self.status())
