"""Overwatch's cost for N running containers (busybox `sleep`) at a 1 s
interval, measured on the real service (`overwatch.service.Service`, served by
aiohttp on loopback as the node serves it):

- the node's CPU time (this process) as % of one core: first for SECONDS with
  nobody scraping (the collection's overhead: passes only), then for SECONDS
  while a scraper (another process) GETs /metrics every SCRAPE seconds (passes,
  renders, HTTP);
- each scrape's latency as the scraper sees it: the first (nobody expected it:
  rendered while it waits) and the rest (rendered by the pass before them);
- what one render costs (the whole /metrics text: a scrape without the cache),
  against prometheus_client's generate_latest writing the containers' series;
- a control: a 404 from the same listener after each scrape (the host's and the
  event loop's own latency, nothing rendered);
- resident memory growth per container.

The peer is what there was before: `emergence events --stats ID`, one process
per container and sample; the ratio is its wall time for one pass over all N
against our CPU time per pass.

Usage: python bench/overwatch_collect.py [N] [SECONDS] [SCRAPE]   (as root)
(defaults 100 containers, 30 s, a scrape every 5.3 s)
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import REPO, find_emergence, make_bundle

sys.path.insert(0, REPO)

SCRAPER = r"""
import json, sys, time, urllib.error, urllib.request
url, every, until = sys.argv[1], float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
out, control = [], []
while time.monotonic() < until:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as r:
        size = len(r.read())
    out.append(time.perf_counter() - t)
    c = time.perf_counter()  # the control: a 404 from the same listener, nothing rendered
    try:
        urllib.request.urlopen(url + "-none", timeout=10)
    except urllib.error.HTTPError:
        pass
    control.append(time.perf_counter() - c)
    time.sleep(max(0.0, min(every - (time.perf_counter() - t), until - time.monotonic())))
print(json.dumps({"latencies": out, "control": control, "bytes": size}))
"""


def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


async def serve(svc):
    from aiohttp import web
    app = web.Application()
    app.add_routes(svc.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def measure(root, work, n, seconds, every):
    from emergence.overwatch.service import Service
    # the baseline: the same service, served, over no container
    empty = Service({"root": os.path.join(work, "none")}, work, lambda m: None)
    empty_runner, _ = await serve(empty)
    await empty.start()
    empty._body()
    base_rss = rss_kb()
    svc = Service({"root": root, "interval": 1.0}, work, print)
    runner, port = await serve(svc)
    await svc.start()
    try:
        from prometheus_client import generate_latest

        from emergence.overwatch.exporter import registry_for
        # each render over a fresh pass, as a scrape nobody expected finds it
        # (its values not parsed yet); the first one also makes the label texts
        svc._body()
        svc.collector.collect()
        t0 = time.process_time()
        svc._body()
        render = time.process_time() - t0
        library = registry_for(svc.collector)
        svc.collector.collect()
        t0 = time.process_time()
        generate_latest(library)
        render_lib = time.process_time() - t0
        assert svc.status()["containers"] == n, svc.status()
        # first nobody scrapes: the node's CPU is the collection's overhead alone
        cpu0, wall0, passes0 = time.process_time(), time.monotonic(), svc.passes
        await asyncio.sleep(seconds)
        quiet = {"quiet_cpu": time.process_time() - cpu0, "quiet_wall": time.monotonic() - wall0,
                 "quiet_passes": svc.passes - passes0}
        cpu0, wall0, passes0 = time.process_time(), time.monotonic(), svc.passes
        pass_cpu0 = svc.pass_seconds_total
        collect_cpu0 = svc.collect_seconds_total
        scraper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics", str(every),
            str(seconds), stdout=subprocess.PIPE)
        out, _ = await scraper.communicate()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        scraped = json.loads(out)
        return {"cpu": cpu, "wall": wall, "passes": svc.passes - passes0, "render": render,
                "render_lib": render_lib,
                "rss": rss_kb() - base_rss, "renders": svc.rendered.renders,
                "ahead": svc.rendered.ahead, "pass_cpu": svc.pass_seconds_total - pass_cpu0,
                "collect_cpu": svc.collect_seconds_total - collect_cpu0,
                **quiet, **scraped}
    finally:
        await svc.stop()
        await empty.stop()
        await runner.cleanup()
        await empty_runner.cleanup()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30
    every = float(sys.argv[3]) if len(sys.argv) > 3 else 5.3
    emergence = find_emergence()
    work = tempfile.mkdtemp(prefix="owbench")
    root = os.path.join(work, "state")
    ids = [f"owb{i}" for i in range(n)]
    try:
        bundle = make_bundle(work, ["sleep", "3600"])
        t0 = time.monotonic()
        for cid in ids:
            subprocess.run([emergence, "--root", root, "run", "--detach", "--bundle", bundle,
                            cid], check=True, stdin=subprocess.DEVNULL)
        print(f"started {n} containers in {time.monotonic() - t0:.1f}s; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        r = asyncio.run(measure(root, work, n, seconds, every))
        lat = [1000 * x for x in r["latencies"]]
        rest = sorted(lat[1:])
        per_pass = r["cpu"] / r["passes"]
        print(f"nobody scraping, {r['quiet_passes']} passes in {r['quiet_wall']:.1f}s: node CPU "
              f"{100 * r['quiet_cpu'] / r['quiet_wall']:.2f}% of one core "
              f"({1000 * r['quiet_cpu'] / r['quiet_passes']:.1f} ms per pass): the "
              "collection's overhead")
        print(f"{r['passes']} passes over {n} containers in {r['wall']:.1f}s, "
              f"{len(lat)} scrapes every {every}s ({r['bytes']} bytes each)")
        print(f"node CPU: {100 * r['cpu'] / r['wall']:.2f}% of one core "
              f"({1000 * per_pass:.1f} ms per pass, scrapes and renders included)")
        print(f"of which the passes (renders ahead included): "
              f"{100 * r['pass_cpu'] / r['wall']:.2f}% of one core; the collection alone "
              f"(renders left out): {100 * r['collect_cpu'] / r['wall']:.2f}% "
              f"({1000 * r['collect_cpu'] / r['passes']:.1f} ms per pass)")
        print(f"one render of a fresh pass (a scrape without the cache): "
              f"{1000 * r['render']:.1f} ms CPU, against prometheus_client's generate_latest "
              f"of the containers' series alone: {1000 * r['render_lib']:.1f} ms "
              f"({r['render_lib'] / r['render']:.1f}x); {r['renders']} renders, {r['ahead']} "
              "ahead of their scrape")
        print(f"scrape latency: first {lat[0]:.1f} ms; the other {len(rest)}: median "
              f"{rest[len(rest) // 2]:.1f} ms, max {rest[-1]:.1f} ms")
        print("every scrape (ms): " + " ".join(f"{x:.1f}" for x in lat))
        ctl = sorted(1000 * x for x in r["control"])
        print(f"control (a 404 from the same listener, right after each scrape): median "
              f"{ctl[len(ctl) // 2]:.1f} ms, max {ctl[-1]:.1f} ms")
        print(f"resident memory growth: {r['rss'] / n:.1f} kB per container")
        p0 = time.monotonic()
        for cid in ids:
            subprocess.run([emergence, "--root", root, "events", "--stats", cid], check=True,
                           stdout=subprocess.DEVNULL)
        peer = time.monotonic() - p0
        print(f"one pass by `events --stats` per container: {1000 * peer:.0f} ms wall; "
              f"ours {1000 * per_pass:.1f} ms CPU: ratio {peer / per_pass:.0f}x")
    finally:
        for cid in ids:
            subprocess.run([emergence, "--root", root, "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
