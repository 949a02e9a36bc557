"""Overwatch's collection cost for N running containers (busybox `sleep`) at a
1 s interval: the collector's CPU time as % of one core, the time of one
/metrics scrape, and resident memory growth per container.  The peer is what
there was before: `emergence events --stats ID`, one process per container and
sample; the ratio is its wall time for one pass over all N against ours.

Usage: python bench/overwatch_collect.py [N] [SECONDS]   (as root)
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from common import REPO, find_emergence, make_bundle

sys.path.insert(0, REPO)


def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20
    from prometheus_client import generate_latest

    from emergence.overwatch.collector import Collector
    from emergence.overwatch.exporter import registry_for
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
        print(f"started {n} containers in {time.monotonic() - t0:.1f}s")
        empty = Collector(os.path.join(work, "none"))
        empty.collect()
        base_rss = rss_kb()
        c = Collector(root)
        reg = registry_for(c)
        c.collect()  # opens every file once
        generate_latest(reg)
        assert len(c.latest) == n, len(c.latest)
        cpu0, wall0 = time.process_time(), time.monotonic()
        passes, scrapes = 0, []
        while time.monotonic() - wall0 < seconds:
            c.collect()
            passes += 1
            s0 = time.perf_counter()
            body = generate_latest(reg)
            scrapes.append(time.perf_counter() - s0)
            time.sleep(max(0.0, wall0 + passes - time.monotonic()))  # a 1 s interval
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        grown = rss_kb() - base_rss
        collect_cpu = cpu - sum(scrapes)
        print(f"{passes} passes over {n} containers in {wall:.1f}s")
        print(f"collector CPU: {100 * collect_cpu / wall:.2f}% of one core "
              f"({1000 * collect_cpu / passes:.1f} ms per pass)")
        scrapes.sort()
        print(f"scrape of {n} ({len(body)} bytes): median {1000 * scrapes[len(scrapes) // 2]:.1f}"
              f" ms, max {1000 * scrapes[-1]:.1f} ms")
        print(f"resident memory growth: {grown / n:.1f} kB per container "
              f"(max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} kB)")
        # the peer: one `events --stats` process per container
        p0 = time.monotonic()
        for cid in ids:
            subprocess.run([emergence, "--root", root, "events", "--stats", cid], check=True,
                           stdout=subprocess.DEVNULL)
        peer = time.monotonic() - p0
        print(f"one pass by `events --stats` per container: {1000 * peer:.0f} ms wall; "
              f"ours {1000 * collect_cpu / passes:.1f} ms CPU: ratio "
              f"{peer / (collect_cpu / passes):.0f}x")
        c.close()
        empty.close()
    finally:
        for cid in ids:
            subprocess.run([emergence, "--root", root, "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
