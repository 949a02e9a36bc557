#!/usr/bin/env python3
"""Every hot runtime verb, side by side: runc, crun, Emergence warm (the C
front-end with the node's planner up) and Emergence cold (no node: the
front-end runs the Python CLI).  Interleaved rounds, medians, ratios.
Then the smallest memory limit under which `run /bin/true` succeeds, and
100 `run`s started at once.  Then what the warm path's trust costs: the
front-end's peer check (owner, mode, SO_PEERCRED) and its deadline with the
GO handshake, as warm `create` and `state` before/after (see trust_cost).

    sudo python3 bench/verbs.py [--rounds 40] [--parallel 100] [--trust-only]
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
SETTLE = 0.3  # s: longer than the planner's GRACE, so a new spare is ready


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


def _before_rev(repo):
    """The newest commit whose front-end had no peer check: the "before"."""
    revs = subprocess.run(["git", "-C", repo, "log", "-n", "500", "--format=%H"],
                          capture_output=True, text=True, check=True).stdout.split()
    for rev in revs:
        src = subprocess.run(["git", "-C", repo, "show", f"{rev}:csrc/front.c"],
                             capture_output=True, text=True, check=True).stdout
        if "SO_PEERCRED" not in src:
            return rev
    raise SystemExit("no front-end without the peer check in this repository's history")


def _warm_pair(emergence, workdir, name, front_src, planner_src):
    """A front-end built from FRONT_SRC and a planner running PLANNER_SRC, over a
    copy of the installed package (the same runtime on both sides), of a build
    of their own.  (front-end path, socket, planner process)"""
    python = os.path.join(os.path.dirname(emergence), "python3")
    pkg = subprocess.run([python, "-c", "import emergence, os; "
                          "print(os.path.dirname(emergence.__file__))"], cwd="/",
                         capture_output=True, text=True, check=True).stdout.strip()
    top = os.path.join(workdir, name)
    shutil.copytree(pkg, os.path.join(top, "lib", "emergence"))
    with open(os.path.join(top, "lib", "emergence", "node", "planner.py"), "w") as f:
        f.write(planner_src)
    with open(os.path.join(top, "lib", "emergence", "_build_id.py"), "w") as f:
        f.write(f'BUILD_ID = "{name}"\n')
    bin_dir = os.path.join(top, "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(top, "front.c"), "w") as f:
        f.write(front_src)
    exe = os.path.join(bin_dir, "emergence")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-static", "-s", f'-DBUILD_ID="{name}"',
                    os.path.join(top, "front.c"), "-o", exe], check=True)
    os.symlink(os.path.join(os.path.dirname(emergence), "emergence-py"),
               os.path.join(bin_dir, "emergence-py"))  # the cold path, if ever taken
    run = os.path.join(top, "run")
    os.mkdir(run, 0o700)
    sock = os.path.join(run, "planner.sock")
    planner = subprocess.Popen([python, "-m", "emergence.node.planner", sock], cwd="/",
                               env=dict(os.environ, PYTHONPATH=os.path.join(top, "lib")),
                               stdin=subprocess.DEVNULL)
    for _ in range(600):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return exe, sock, planner


def trust_cost(emergence, workdir, bundle_sleep, rounds, warmup):
    """Warm `create` (and `state`) with the front-end and planner of the last
    commit before the peer check ("before") and of this tree ("after"), each
    pair over its own copy of the installed package and its own planner, in
    interleaved rounds.  Returns {side: {verb: [seconds]}}."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rev = _before_rev(repo)
    sides = {}
    procs = []
    try:
        for name, where in (("before", rev), ("after", None)):
            def src(path, where=where):
                if where is None:
                    with open(os.path.join(repo, path)) as f:
                        return f.read()
                return subprocess.run(["git", "-C", repo, "show", f"{where}:{path}"],
                                      capture_output=True, text=True, check=True).stdout
            exe, sock, planner = _warm_pair(emergence, workdir, name, src("csrc/front.c"),
                                            src("emergence/node/planner.py"))
            procs.append(planner)
            env = dict(os.environ, EMERGENCE_PLANNER_SOCKET=sock)
            sides[name] = ([exe, "--root", f"{workdir}/state-trust-{name}"], env)
        times = {name: {"create": [], "state": [], "state?": []} for name in sides}
        for rnd in range(warmup + rounds):
            order = list(sides)
            random.shuffle(order)
            for name in order:
                cmd, env = sides[name]
                cid = f"t{rnd}-{name}"
                # each call finds its planner settled: spares forked and warm, and
                # the other side's successor spares not warming up beside it
                time.sleep(SETTLE)
                t = {"create": timed(cmd + ["create", "--bundle", bundle_sleep, cid], env)[0]}
                time.sleep(SETTLE)
                t["state"] = timed(cmd + ["state", cid], env)[0]
                timed(cmd + ["delete", "--force", cid], env)
                # the lightest call, where the handshake weighs most: more of them
                t["state?"] = []
                for _ in range(4):
                    time.sleep(SETTLE / 3)
                    t["state?"].append(timed(cmd + ["state", "no-such-id"], env, check=False)[0])
                if rnd >= warmup:
                    for v, dt in t.items():
                        times[name][v] += dt if isinstance(dt, list) else [dt]
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    print(f"\nwarm path trust (peer check + deadline + GO) vs the front-end and planner "
          f"of {rev[:10]}, {rounds} interleaved rounds, median ms")
    for v in ("create", "state", "state?"):
        b, a = (statistics.median(times[n][v]) * 1000 for n in ("before", "after"))
        print(f"  {v:8s} before {b:8.3f}  after {a:8.3f}  after/before {a / b:5.3f}  "
              f"added {a - b:+.3f} ms  (n={len(times['after'][v])})")
    print("  (state?: `state` of a missing id; the handshake is the same for every verb)")
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=100)
    ap.add_argument("--emergence", default=find_emergence())
    ap.add_argument("--trust-only", action="store_true",
                    help="only the cost of the warm path's peer check and deadline")
    args = ap.parse_args()
    if args.trust_only:
        workdir = tempfile.mkdtemp(prefix="emergence-bench-")
        try:
            sleep_dir = os.path.join(workdir, "s")
            os.mkdir(sleep_dir)
            bundle_sleep = make_bundle(sleep_dir, ["sleep", "3600"])
            trust_cost(args.emergence, workdir, bundle_sleep, args.rounds, args.warmup)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
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
    workdir = tempfile.mkdtemp(prefix="emergence-bench-")
    try:
        sleep_dir = os.path.join(workdir, "s")
        os.mkdir(sleep_dir)
        trust_cost(args.emergence, workdir, make_bundle(sleep_dir, ["sleep", "3600"]),
                   args.rounds, args.warmup)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
