#!/usr/bin/env python3
"""Time `exec` of /bin/true into a running container: emergence against runc
(and crun), interleaved, printing medians and the ratios emergence/peer.

    sudo python3 bench/exec_true.py [--rounds 60]
"""

import argparse
import os
import shutil
import subprocess
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
    bundle = make_bundle(workdir, ["sleep", "3600"])
    runtimes = {"emergence": [args.emergence, "--root", f"{workdir}/state-em"]}
    for peer in ("runc", "crun"):
        if shutil.which(peer):
            runtimes[peer] = [shutil.which(peer), "--root", f"{workdir}/state-{peer}"]
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
