"""Overwatch inside `emergence node`: samples every `interval` seconds and
serves the latest sample at GET /metrics (Prometheus text format)."""

import asyncio
import time

from .. import DEFAULT_ROOT


class Service:
    """Long-running work of overwatch inside `emergence node`."""

    name = "overwatch"
    DEFAULTS = {"interval": 1.0, "root": DEFAULT_ROOT}

    def __init__(self, config, state_dir, log):
        from .collector import Collector
        from .exporter import registry_for
        self.config = {**self.DEFAULTS, **(config or {})}
        self.state_dir = state_dir
        self.log = log
        self.collector = Collector(self.config["root"], log)
        self.registry = registry_for(self.collector)
        self.task = None
        self.passes = 0
        self.pass_seconds = 0.0

    def routes(self):
        from aiohttp import web
        return [web.get("/metrics", self._metrics)]

    async def _metrics(self, request):
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def sample_once(self):
        t0 = time.thread_time()
        self.collector.collect()
        self.pass_seconds = time.thread_time() - t0
        self.passes += 1

    async def _loop(self):
        interval = float(self.config["interval"])
        while True:
            try:
                self.sample_once()
            except Exception as e:  # one bad pass must not end the service
                self.log(f"overwatch: sampling failed: {e}")
            await asyncio.sleep(interval)

    async def start(self):
        self.sample_once()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
        self.collector.close()

    def status(self):
        return {"containers": len(self.collector.latest), "passes": self.passes,
                "last_pass_cpu_seconds": round(self.pass_seconds, 6)}
