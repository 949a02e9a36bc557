#!/usr/bin/env python3
"""Every hot runtime verb, side by side: runc, crun, Emergence warm (the C
front-end with the node's planner up) and Emergence cold (no node: the
front-end runs the Python CLI).  Interleaved rounds, medians, ratios.
Then the smallest memory limit under which `run /bin/true` succeeds, and
100 `run`s started at once.

    sudo python3 bench/verbs.py [--rounds 40] [--parallel 100]
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HugetlbOnV1, find_emergence, make_bundle  # noqa: E402

VERBS = ("run", "exec", "create", "start", "state", "kill", "delete")


def contenders(emergence, workdir, planner_socket):
    out = {}
    for peer in ("runc", "crun"):
        path = shutil.which(peer)
        if path:
            out[peer] = ([path, "--root", f"{workdir}/state-{peer}"], None)
    base = dict(os.environ)
    out["em-warm"] = ([emergence, "--root", f"{workdir}/state-warm"],
                      dict(base, EMERGENCE_PLANNER_SOCKET=planner_socket))
    out["em-cold"] = ([emergence, "--root", f"{workdir}/state-cold"],
                      dict(base, EMERGENCE_PLANNER_SOCKET="off"))
    return out


def timed(cmd, env, check=True):
    # stderr to a file: a created container keeps the runtime's stdio open
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=err)
        dt = time.perf_counter() - t0
        if check and r.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode().strip()}")
    return dt, r.returncode


def wait_stopped(cmd, env, cid):
    import json
    for _ in range(400):
        r = subprocess.run(cmd + ["state", cid], env=env, capture_output=True)
        if r.returncode != 0 or json.loads(r.stdout)["status"] == "stopped":
            return
        time.sleep(0.005)


def verb_table(cs, bundle_true, bundle_sleep, rounds, warmup):
    times = {name: {v: [] for v in VERBS} for name in cs}
    for name, (cmd, env) in cs.items():  # the exec target of each
        timed(cmd + ["run", "--detach", "--bundle", bundle_sleep, f"target-{name}"], env)
    try:
        for rnd in range(warmup + rounds):
            order = list(cs)
            random.shuffle(order)
            for name in order:
                cmd, env = cs[name]
                cid = f"b{rnd}-{name}"
                t = {"run": timed(cmd + ["run", "--bundle", bundle_true, f"r{rnd}-{name}"], env)[0],
                     "exec": timed(cmd + ["exec", f"target-{name}", "/bin/true"], env)[0],
                     "create": timed(cmd + ["create", "--bundle", bundle_sleep, cid], env)[0],
                     "state": timed(cmd + ["state", cid], env)[0],
                     "start": timed(cmd + ["start", cid], env)[0],
                     "kill": timed(cmd + ["kill", cid, "KILL"], env)[0]}
                wait_stopped(cmd, env, cid)
                t["delete"] = timed(cmd + ["delete", cid], env)[0]
                if rnd >= warmup:
                    for v, dt in t.items():
                        times[name][v].append(dt)
    finally:
        for name, (cmd, env) in cs.items():
            subprocess.run(cmd + ["delete", "--force", f"target-{name}"], env=env,
                           capture_output=True)
    return times


def memory_floor(cs, workdir):
    """The smallest linux.resources.memory.limit (of a ladder) under which
    `run /bin/true` exits 0, per contender."""
    import json
    ladder = [256 << 10, 384 << 10, 512 << 10, 768 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20,
              16 << 20]
    out = {}
    for name, (cmd, env) in cs.items():
        out[name] = None
        for limit in ladder:
            b = os.path.join(workdir, f"mem-{name}-{limit}")
            os.makedirs(b)
            with open(os.path.join(workdir, "bundle-true", "config.json")) as f:
                c = json.load(f)
            c["linux"].setdefault("resources", {})["memory"] = {"limit": limit}
            with open(os.path.join(b, "config.json"), "w") as f:
                json.dump(c, f)
            cid = f"mem{limit}-{name}"
            _, rc = timed(cmd + ["run", "--bundle", b, cid], env, check=False)
            subprocess.run(cmd + ["delete", "--force", cid], env=env, capture_output=True)
            if rc == 0:
                out[name] = limit
                break
    return out


def parallel(cs, bundle_true, n):
    """Wall time for N `run`s started at once, failures, and state left."""
    out = {}
    for name, (cmd, env) in cs.items():
        t0 = time.perf_counter()
        errs = [tempfile.TemporaryFile() for _ in range(n)]
        procs = [subprocess.Popen(cmd + ["run", "--bundle", bundle_true, f"par{i}-{name}"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=errs[i]) for i in range(n)]
        codes = [p.wait() for p in procs]
        dt = time.perf_counter() - t0
        failed = sum(c != 0 for c in codes)
        for code, err in zip(codes, errs):
            if code != 0:
                err.seek(0)
                print(f"note: a parallel {name} run failed ({code}): "
                      f"{err.read().decode().strip()}", file=sys.stderr)
                break
        root = cmd[cmd.index("--root") + 1]
        left = len(os.listdir(root)) if os.path.isdir(root) else 0
        out[name] = (dt, failed, left)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=100)
    ap.add_argument("--emergence", default=find_emergence())
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="emergence-bench-")
    node_flags = ["--node-run-dir", f"{workdir}/node", "--node-state-dir", f"{workdir}/nodest",
                  "--node-services", ""]
    quiet = dict(os.environ, EMERGENCE_PLANNER_SOCKET="off")
    subprocess.run([args.emergence, "node", "start", *node_flags], check=True, env=quiet,
                   stdout=subprocess.DEVNULL)
    try:
        bundle_true = make_bundle(workdir, ["/bin/true"])
        os.rename(bundle_true, os.path.join(workdir, "bundle-true"))
        bundle_true = os.path.join(workdir, "bundle-true")
        sleep_dir = os.path.join(workdir, "s")
        os.mkdir(sleep_dir)
        bundle_sleep = make_bundle(sleep_dir, ["sleep", "3600"])
        cs = contenders(args.emergence, workdir, f"{workdir}/node/planner.sock")
        with HugetlbOnV1():
            times = verb_table(cs, bundle_true, bundle_sleep, args.rounds, args.warmup)
            floor = memory_floor(cs, workdir)
            par = parallel(cs, bundle_true, args.parallel)
    finally:
        subprocess.run([args.emergence, "node", "stop", *node_flags], env=quiet,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)

    names = list(cs)
    med = {n: {v: statistics.median(times[n][v]) * 1000 for v in VERBS} for n in names}
    print(f"runtime verbs, busybox bundle, {args.rounds} interleaved rounds, median ms")
    print(f"{'verb':8s}" + "".join(f"{n:>10s}" for n in names)
          + "".join(f"{'warm/' + p:>12s}" for p in ("runc", "crun") if p in cs)
          + f"{'cold/crun':>12s}")
    for v in VERBS:
        row = f"{v:8s}" + "".join(f"{med[n][v]:10.2f}" for n in names)
        for p in ("runc", "crun"):
            if p in cs:
                row += f"{med['em-warm'][v] / med[p][v]:12.2f}"
        if "crun" in cs:
            row += f"{med['em-cold'][v] / med['crun'][v]:12.2f}"
        print(row)
    print("\nsmallest memory limit for `run /bin/true`:")
    for n in names:
        print(f"  {n:10s} {floor[n] // 1024 if floor[n] else 'none <= 16384'} KiB")
    print(f"\n{args.parallel} `run /bin/true` started at once (2 cores here):")
    for n in names:
        dt, failed, left = par[n]
        print(f"  {n:10s} {dt:6.2f} s  failed {failed}  state left {left}")
    if "crun" in par:
        print(f"  ratio em-warm/crun {par['em-warm'][0] / par['crun'][0]:.2f}")


if __name__ == "__main__":
    main()
