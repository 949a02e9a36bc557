"""Overwatch inside `emergence node`: samples every `interval` seconds and
serves the latest sample at GET /metrics (Prometheus text format); runs the
standing QoS probe and, at POST /overwatch/v1/probe (a control route), one
probe at a time between two containers this node runs, named by id."""

import asyncio
import threading
import time

from .. import DEFAULT_ROOT


class Service:
    """Long-running work of overwatch inside `emergence node`."""

    name = "overwatch"
    # probe_pairs: "SRC DST ADDR" strings (netns name, path or init pid; DST's address),
    # root's own configuration: opened O_PATH and checked to be a netns (targets.Path)
    # probe_series: (src, dst) pairs kept in the metrics at most (the oldest evicted)
    # annotations: OCI annotation keys exported as container_label_* (as cAdvisor does)
    # counters: the event counters' file (default: emergence.counters.path())
    # probe_annotation: containers with the same value of it are probed pairwise
    # ("" turns the automatic pairs off)
    DEFAULTS = {"interval": 1.0, "root": DEFAULT_ROOT, "probe_pairs": [],
                "probe_interval": 10.0, "history": 1000, "probe_series": 256, "store": None,
                "annotations": [],
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
            self._prober()
        self.probe_slot = threading.Lock()  # probes on request: one at a time
        self.task = None
        self.probe_task = None
        self.passes = 0
        self.pass_seconds = self.pass_seconds_total = self.pass_wall = 0.0
        self.collect_seconds_total = 0.0  # of it, the reading (renders ahead left out)

    def routes(self):
        from aiohttp import web

        from .. import access
        return [access.read(web.get("/metrics", self._metrics)),
                access.control(web.post("/overwatch/v1/probe", self._probe))]

    async def _probe(self, request):
        """A probe on request between two containers this node runs: {"src", "dst"
        (container ids or att:NETWORK/ID/IFNAME keys), "addr" (optional: one of
        DST's IPv4 addresses; default its attachment's, else its first outside lo),
        "kind": "rtt"|"throughput", "count", "seconds"}; the figures join the
        metrics and the history.  Never a path or a pid (400), an unknown id is a
        404, and one probe runs at a time (429 while one does)."""
        from aiohttp import web

        from ..errors import NotFound
        from .targets import Container, RefusedName

        def error(status, message):
            return web.json_response({"error": message}, status=status)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            src, dst = body["src"], body["dst"]
            addr = body.get("addr")
            if addr is not None and not isinstance(addr, str):
                raise ValueError("addr must be an IPv4 address as a string")
            kind = body.get("kind", "rtt")
            if kind not in ("rtt", "throughput"):
                raise ValueError(f"kind must be rtt or throughput, not {str(kind)[:40]!r}")
            count = int(body.get("count", 20))
            seconds = float(body.get("seconds", 1.0))
            if not (1 <= count <= 1000 and 0.1 <= seconds <= 60):
                raise ValueError("count must be 1..1000 and seconds 0.1..60")
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else \
                "JSON nested too deep" if isinstance(e, RecursionError) else str(e)[:200]
            return error(400, f"bad probe request: {what}")
        root = self.config["root"]
        try:
            src, dst = Container.known(root, src), Container.known(root, dst)
        except RefusedName as e:
            return error(400, str(e))
        except NotFound as e:
            return error(404, str(e))
        # one slot, taken here and given back by the probe's own thread when it
        # ends: a client that hangs up cannot free it early and pile up threads
        if not self.probe_slot.acquire(blocking=False):
            return error(429, "a probe is already running on this node; try again when "
                         "it ends")
        prober = self._prober()
        status, payload = await asyncio.get_running_loop().run_in_executor(
            None, _probe_once, self.probe_slot, prober, kind, src, dst, addr, count, seconds)
        if status != 200:
            return error(status, payload)
        return web.json_response(payload)

    def _prober(self):
        if self.prober is None:
            from .qos import Prober
            self.prober = Prober(self.state_dir, self.log, int(self.config["history"]),
                                 int(self.config["probe_series"]))
        return self.prober

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
        grouped = Pairs(self.config["probe_annotation"], self.config["root"], self.log)
        failed = set()
        while True:
            try:
                pairs = static + await asyncio.to_thread(grouped, self.collector.latest)
                for src, ns, dst, addr in pairs:
                    await asyncio.to_thread(self._prober().probe_rtt, src, dst, addr, 5,
                                            0.05, ns)
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


def _probe_once(slot, prober, kind, src, dst, addr, count, seconds):
    """One probe on request, in a thread that holds SLOT and releases it at the
    end: (200, result) or (status, error line)."""
    from ..errors import EmergenceError
    try:
        try:
            addr = _destination(dst, addr)
        except ValueError as e:
            return 400, str(e)
        except (ConnectionError, OSError, EmergenceError) as e:
            return 409, f"cannot probe {dst}: {e}"
        why = "no answer"
        try:
            if kind == "rtt":
                result = prober.probe_rtt(src, dst, addr, count, 0.02, src, quiet=False)
            else:
                result = prober.probe_throughput(src, dst, addr, seconds, 5201, src, dst)
        except (ConnectionError, OSError, EmergenceError) as e:
            result, why = None, str(e)
        if result is None:
            return 502, f"{kind} probe {src} -> {dst} ({addr}): {why}"
        return 200, result
    finally:
        slot.release()


def _destination(dst, addr):
    """The address a probe to DST (a targets.Container) goes to: ADDR if it is one
    of DST's IPv4 addresses outside lo (ValueError if not), else its attachment's
    interface's address, else its first outside lo."""
    import ipaddress

    from .pairs import ipv4_addresses
    # a loopback address would be answered by the source's own lo: never DST's
    found = [(ifname, a) for ifname, a in ipv4_addresses(dst)
             if ifname != "lo" and not a.startswith("127.")]
    if addr is not None:
        try:
            addr = str(ipaddress.IPv4Address(addr))
        except ValueError:
            raise ValueError(f"addr {addr[:60]!r} is not an IPv4 address") from None
        if addr not in {a for _, a in found}:
            raise ValueError(f"addr {addr} is not an address of {dst}; leave addr out to "
                             "probe its first one")
        return addr
    if dst.ifname is not None:
        mine = [a for ifname, a in found if ifname == dst.ifname]
        if not mine:
            raise ValueError(f"{dst}: the container has no IPv4 address on {dst.ifname}")
        return mine[0]
    if not found:
        raise ValueError(f"container {dst} has no IPv4 address outside lo to probe")
    return found[0][1]
