#!/usr/bin/env python3
"""Time `exec` of /bin/true into a running container: emergence against runc
(and crun), interleaved, printing medians and the ratios emergence/peer.

    sudo python3 bench/exec_true.py [--rounds 60]
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HugetlbOnV1, interleave, make_bundle, parse_args, report  # noqa: E402
from common import runtimes as bench_runtimes  # noqa: E402


def main():
    args = parse_args(__doc__)
    workdir = tempfile.mkdtemp(prefix="emergence-bench-")
    bundle = make_bundle(workdir, ["sleep", "3600"])
    runtimes = bench_runtimes(args.emergence, workdir)
    started = []
    try:
        with HugetlbOnV1():
            try:
                for name, cmd in runtimes.items():
                    subprocess.run(cmd + ["run", "--detach", "--bundle", bundle, "target"],
                                   check=True, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    started.append(name)
                times = interleave(runtimes, args.rounds, args.warmup,
                                   lambda name, n: runtimes[name] + ["exec", "target",
                                                                     "/bin/true"])
            finally:
                # while hugetlb is still on its v1 mount, so its cgroups go too
                for name in started:
                    subprocess.run(runtimes[name] + ["delete", "--force", "target"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(f"exec /bin/true, {args.rounds} interleaved rounds", times)


if __name__ == "__main__":
    main()
