"""Overwatch inside `emergence node`: samples every `interval` seconds and
serves the latest sample at GET /metrics (Prometheus text format)."""

import asyncio
import time

from .. import DEFAULT_ROOT


class Service:
    """Long-running work of overwatch inside `emergence node`."""

    name = "overwatch"
    # probe_pairs: "SRC DST ADDR" strings (netns name, path or init pid; DST's address)
    # annotations: OCI annotation keys exported as container_label_* (as cAdvisor does)
    # counters: the event counters' file (default: emergence.counters.path())
    # probe_annotation: containers with the same value of it are probed pairwise
    # ("" turns the automatic pairs off)
    DEFAULTS = {"interval": 1.0, "root": DEFAULT_ROOT, "probe_pairs": [],
                "probe_interval": 10.0, "history": 1000, "store": None, "annotations": [],
                "counters": None, "probe_annotation": "org.emergence.overwatch.probe-group"}

    def __init__(self, config, state_dir, log):
        from prometheus_client.registry import CollectorRegistry

        from .collector import Collector
        from .exporter import Rendered, SampleCollector
        from .node_metrics import NodeCollector
        self.config = {**self.DEFAULTS, **(config or {})}
        self.state_dir = state_dir
        self.log = log
        self.collector = Collector(self.config["root"], log)
        # the containers' series are written by SampleCollector.text (the same
        # bytes as generate_latest, ~7x cheaper); the node's own few by the library
        self.containers = SampleCollector(self.collector, self.config["annotations"])
        self.rendered = Rendered(self._body)
        self.node_metrics = NodeCollector(self.config["root"], self.config["store"],
                                          self.config["counters"], log)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.node_metrics)
        self.prober = None
        if self.config["probe_pairs"]:
            from .qos import Prober
            self.prober = Prober(state_dir, log, int(self.config["history"]))
        self.task = None
        self.probe_task = None
        self.passes = 0
        self.pass_seconds = self.pass_seconds_total = self.pass_wall = 0.0
        self.collect_seconds_total = 0.0  # of it, the reading (renders ahead left out)

    def routes(self):
        from aiohttp import web

        from ..node import access
        return [access.read(web.get("/metrics", self._metrics)),
                access.control(web.post("/overwatch/v1/probe", self._probe))]

    async def _probe(self, request):
        """A probe on request: {"src", "dst", "addr", "kind": "rtt"|"throughput",
        "count", "seconds"}; the figures join the metrics and the history."""
        from aiohttp import web
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            src, dst, addr = (str(body[k]) for k in ("src", "dst", "addr"))
            kind = body.get("kind", "rtt")
            if kind not in ("rtt", "throughput"):
                raise ValueError(f"kind must be rtt or throughput, not {kind!r}")
            count = int(body.get("count", 20))
            seconds = float(body.get("seconds", 1.0))
            if not (1 <= count <= 1000 and 0.1 <= seconds <= 60):
                raise ValueError("count must be 1..1000 and seconds 0.1..60")
        except (ValueError, KeyError, TypeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            return web.json_response({"error": f"bad probe request: {what}"}, status=400)
        if self.prober is None:
            from .qos import Prober
            self.prober = Prober(self.state_dir, self.log, int(self.config["history"]))
        why = "no answer"
        if kind == "rtt":
            result = await asyncio.to_thread(self.prober.probe_rtt, src, dst, addr, count, 0.02)
        else:
            try:
                result = await asyncio.to_thread(self.prober.probe_throughput, src, dst, addr,
                                                 seconds)
            except (ConnectionError, OSError) as e:
                result, why = None, str(e)
        if result is None:
            return web.json_response({"error": f"{kind} probe {src} -> {dst} ({addr}): {why}"},
                                     status=502)
        return web.json_response(result)

    def _body(self):
        from prometheus_client import generate_latest
        body = self.containers.text() + generate_latest(self.registry)
        if self.prober is not None:
            body += generate_latest(self.prober.registry)
        return body

    def _sample_key(self, passes=None):
        """What the text shows: the latest pass and the probes' results so far."""
        return (self.passes if passes is None else passes,
                self.prober.results if self.prober is not None else 0)

    async def _metrics(self, request):
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST
        key = self._sample_key()
        # a scraper is its address and agent: a curl on the same host does not blur
        # Prometheus's rhythm
        self.rendered.note((request.remote, request.headers.get("User-Agent")))
        # nobody expected this scrape: render it now, on the loop.  Not in a thread:
        # a pass's thousands of preads would each wait for the render's GIL (seconds)
        body = self.rendered.scrape(key)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def sample_once(self, started=None):
        """One pass: read, render if a scrape is due, publish.  On the event loop,
        not a thread: a busy thread would hold the GIL against every syscall of
        a scrape being served (the convoy effect: 100s of ms)."""
        started = time.monotonic() if started is None else started
        t0, w0 = time.thread_time(), time.perf_counter()
        self.collector.collect()
        self.collect_seconds_total += time.thread_time() - t0
        key = self._sample_key(self.passes + 1)
        # a render ahead must be done before the scrape it is for: twice the last pass
        self.rendered.publish(key, float(self.config["interval"]), started,
                              lead=max(0.05, 2 * self.pass_wall))
        self.passes += 1
        self.pass_wall = time.perf_counter() - w0
        self.pass_seconds = time.thread_time() - t0
        self.pass_seconds_total += self.pass_seconds

    async def _loop(self):
        """Passes at a fixed rate (the interval apart, start to start), so the
        render-ahead windows of two passes meet exactly."""
        interval = float(self.config["interval"])
        at = time.monotonic()
        while True:
            at += interval
            now = time.monotonic()
            if at < now:  # a pass overran: no burst to catch up
                at = now
            await asyncio.sleep(at - now)
            try:
                self.sample_once(at)
            except Exception as e:  # one bad pass must not end the service
                self.log(f"overwatch: sampling failed: {e}")

    async def _probe_loop(self):
        """The standing low-rate latency probe: 5 echoes per pair per round, over
        the pairs configured and those of the containers' probe groups (pairs.py)."""
        from .pairs import Pairs
        static = [(src, None, dst, addr) for src, dst, addr in
                  (p.split() for p in self.config["probe_pairs"])]
        grouped = Pairs(self.config["probe_annotation"], self.log)
        failed = set()
        while True:
            try:
                pairs = static + await asyncio.to_thread(grouped, self.collector.latest)
                if pairs and self.prober is None:
                    from .qos import Prober
                    self.prober = Prober(self.state_dir, self.log,
                                         int(self.config["history"]))
                for src, ns, dst, addr in pairs:
                    await asyncio.to_thread(self.prober.probe_rtt, src, dst, addr, 5, 0.05,
                                            ns)
            except Exception as e:  # one bad round must not end the standing probe
                if str(e) not in failed:  # said once, not every round
                    failed.add(str(e))
                    self.log(f"overwatch: probe round failed: {e}")
            await asyncio.sleep(float(self.config["probe_interval"]))

    async def start(self):
        for pair in self.config["probe_pairs"]:
            if len(pair.split()) != 3:
                from ..errors import EmergenceError
                raise EmergenceError(f"overwatch probe_pairs entry {pair!r}: write it as "
                                     "\"SRC DST ADDRESS\"")
        self.sample_once()
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._loop())
        if self.config["probe_pairs"] or self.config["probe_annotation"]:
            self.probe_task = loop.create_task(self._probe_loop())

    async def stop(self):
        for task in (self.task, self.probe_task):
            if task:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.task = self.probe_task = None
        self.collector.close()
        self.node_metrics.states.close()

    def status(self):
        return {"containers": len(self.collector.latest), "passes": self.passes,
                "renders": self.rendered.renders,
                "last_pass_cpu_seconds": round(self.pass_seconds, 6)}
