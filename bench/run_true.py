#!/usr/bin/env python3
"""Time `run` of a busybox bundle running /bin/true: emergence against runc and
crun, interleaved in one run, and print medians and the ratios emergence/peer.

    sudo python3 bench/run_true.py [--rounds 60] [--emergence PATH]

Debian's crun refuses hybrid cgroups while cgroup2 holds a controller; if
so, hugetlb is moved to a v1 mount for the run and moved back afterwards.
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HugetlbOnV1, find_emergence, interleave, make_bundle, report  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--emergence", default=find_emergence())
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="emergence-bench-")
    bundle = make_bundle(workdir, ["/bin/true"])
    runtimes = {"emergence": [args.emergence, "--root", f"{workdir}/state-em"]}
    for peer in ("runc", "crun"):
        path = shutil.which(peer)
        if path:
            runtimes[peer] = [path, "--root", f"{workdir}/state-{peer}"]
        else:
            print(f"note: {peer} not installed, skipped", file=sys.stderr)
    try:
        with HugetlbOnV1():
            times = interleave(runtimes, args.rounds, args.warmup,
                               lambda name, n: runtimes[name] + ["run", "--bundle", bundle,
                                                                 f"bench{n}"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(f"run /bin/true, {args.rounds} interleaved rounds", times)


if __name__ == "__main__":
    main()
