"""A real Prometheus (Debian's package) scrapes the overwatch service on
loopback, and PromQL returns the container's CPU rate."""

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from conftest import serving

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("prometheus"),
                                 reason="needs Debian's prometheus package")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port, promql):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def test_prometheus_reads_cpu_rate(rt, tmp_path):

    from emergence.overwatch.service import Service
    b = rt.bundle(["sh", "-c", "while true; do :; done"])
    cid = rt.new_id("ow")
    rt("run", "--detach", "--bundle", b, cid, check=True)
    node_port, prom_port = free_port(), free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: emergence
    static_configs: [{{targets: ["127.0.0.1:{node_port}"]}}]
""")

    async def main():
        svc = Service({"root": rt.root, "interval": 0.5}, str(tmp_path), lambda m: None)
        async with serving(svc, node_port):
            prom = subprocess.Popen(["prometheus", f"--config.file={cfg}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{prom_port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                result = []
                deadline = time.monotonic() + 60
                promql = f'rate(container_cpu_usage_seconds_total{{name="{cid}"}}[5s])'
                while not result and time.monotonic() < deadline:
                    await asyncio.sleep(1)
                    try:
                        result = await asyncio.to_thread(query, prom_port, promql)
                    except OSError:
                        continue
                return result
            finally:
                prom.terminate()
                prom.wait(10)

    result = asyncio.run(main())
    assert len(result) == 1, result
    labels, (_, value) = result[0]["metric"], result[0]["value"]
    assert labels["id"] == f"/emergence/{cid}" and labels["cpu"] == "total"
    # A busy loop: up to one core; far above an idle container's ~0 even when
    # other work shares the 2 cores.
    assert 0.05 < float(value) <= 1.1, value
