#!/usr/bin/env python3
"""Time `run` of a busybox bundle running /bin/true: emergence against runc and
crun, interleaved in one run, and print medians and the ratios emergence/peer.

    sudo python3 bench/run_true.py [--rounds 60] [--emergence PATH]

Debian's crun refuses hybrid cgroups while cgroup2 holds a controller; if
so, hugetlb is moved to a v1 mount for the run and moved back afterwards.
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HugetlbOnV1, interleave, make_bundle, parse_args, report  # noqa: E402
from common import runtimes as bench_runtimes  # noqa: E402


def main():
    args = parse_args(__doc__)
    workdir = tempfile.mkdtemp(prefix="emergence-bench-")
    bundle = make_bundle(workdir, ["/bin/true"])
    runtimes = bench_runtimes(args.emergence, workdir)
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
