#!/usr/bin/env python3
"""Every hot runtime verb, side by side: Emergence on its default path (no node
started: the planner the front-end starts on demand for the state root),
Emergence opted out (--no-planner: the Python CLI in a process of its own),
runc and crun.  Interleaved rounds (random order), medians and p95, ratios;
the same back to back (one contender's calls with no gap); `run` and `create`
after a pause, as engines call them; then 100 `run`s started at once; the
planner's and the front-end's memory; the smallest memory limit under which
`run /bin/true` succeeds; `podman --runtime R run --rm` in a loop for each
runtime.  Then what the warm path's trust costs:
the front-end's peer check (owner, mode, SO_PEERCRED) and its deadline with
the GO handshake, as warm `create` and `state` before/after (see trust_cost).

    sudo python3 bench/verbs.py [--rounds 100] [--parallel 100] [--podman 50]
                                [--trust-only]

On a shared machine use fewer rounds (--rounds 10) and read the figures as noise.
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
SETTLE = 0.3  # s: longer than the planner's QUIET, so its pool is refilled and warm
PAUSE = 0.1  # s: an engine's gap between containers; the cgroup lock idles after ~30 ms
NODE_SOCKET = "/run/emergence/node/planner.sock"


def contenders(emergence, workdir):
    out = {}
    base = dict(os.environ)
    base.pop("EMERGENCE_PLANNER_SOCKET", None)
    out["em-default"] = ([emergence, "--root", f"{workdir}/state-default"], base)
    out["em-cold"] = ([emergence, "--root", f"{workdir}/state-cold", "--no-planner"], base)
    for peer in ("runc", "crun"):
        path = shutil.which(peer)
        if path:
            out[peer] = ([path, "--root", f"{workdir}/state-{peer}"], None)
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


def planner_up(workdir, timeout=30):
    """Start the default path's planner (a hot verb starts it), and wait until it
    serves; its pid, or None (a node's planner serves the default path then)."""
    import socket
    if os.path.exists(NODE_SOCKET):
        print(f"note: a node's planner is up ({NODE_SOCKET}): the default path uses it",
              file=sys.stderr)
        return None
    import glob
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        # ROOT/.planner/BUILD/planner.sock
        sock = (glob.glob(f"{workdir}/state-default/.planner/*/planner.sock") or ["none"])[0]
        env = dict(os.environ)
        env.pop("EMERGENCE_PLANNER_SOCKET", None)
        subprocess.run([find_emergence(), "--root", f"{workdir}/state-default", "state", "x"],
                       env=env, capture_output=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(sock)
            with open(os.path.join(os.path.dirname(sock), "planner.pid")) as f:
                return int(f.read())
        except OSError:
            time.sleep(0.2)
        finally:
            s.close()
    raise SystemExit("the default path's planner did not come up: see "
                     f"{workdir}/state-default/.planner/*/planner.log")


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


def paced(cs, bundle_true, bundle_sleep, rounds, warmup):
    """`run` and `create` each after PAUSE with no container work, as an engine
    calls them (a container's create comes when a user or a controller asks):
    the kernel's cgroup migration lock has gone idle by then, and the first
    cgroup.procs write of a call waits a whole RCU grace period, with any
    runtime.  Interleaved rounds, random order."""
    times = {name: {"run": [], "create": []} for name in cs}
    for rnd in range(warmup + rounds):
        order = list(cs)
        random.shuffle(order)
        for name in order:
            cmd, env = cs[name]
            time.sleep(PAUSE)
            t = {"run": timed(cmd + ["run", "--bundle", bundle_true, f"pr{rnd}-{name}"], env)[0]}
            time.sleep(PAUSE)
            t["create"] = timed(cmd + ["create", "--bundle", bundle_sleep, f"pc{rnd}-{name}"],
                                env)[0]
            timed(cmd + ["delete", "--force", f"pc{rnd}-{name}"], env)
            if rnd >= warmup:
                for v, dt in t.items():
                    times[name][v].append(dt)
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
        left = len([n for n in os.listdir(root) if not n.startswith(".")]) \
            if os.path.isdir(root) else 0  # .planner: the planner's, not a container's
        out[name] = (dt, failed, left)
    return out


def back_to_back(cs, bundle_sleep, rounds):
    """Each contender's `state` (and a `run`-less cycle's lightest verb) called
    ROUNDS times in a row with no gap, as a script or an engine's poll does."""
    out = {}
    for name, (cmd, env) in cs.items():
        cid = f"b2b-{name}"
        timed(cmd + ["run", "--detach", "--bundle", bundle_sleep, cid], env)
        try:
            out[name] = [timed(cmd + ["state", cid], env)[0] for _ in range(rounds)]
        finally:
            subprocess.run(cmd + ["delete", "--force", cid], env=env, capture_output=True)
    return out


def memory(cs, planner_pid, bundle_sleep):
    """RSS (KiB) of the default path's planner and of one of its spares (mostly
    pages shared with the planner: PSS says what it adds), and the front-end's
    peak RSS over a warm `state` (wait4)."""
    def status(pid, key):
        try:
            with open(f"/proc/{pid}/{'smaps_rollup' if key == 'Pss:' else 'status'}") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            return None
    out = {}
    if planner_pid:
        out["planner RSS"] = status(planner_pid, "VmRSS:")
        kids = subprocess.run(["pgrep", "-P", str(planner_pid)], capture_output=True,
                              text=True).stdout.split()
        if kids:
            out["a spare worker RSS"] = status(kids[0], "VmRSS:")
            out["a spare worker PSS"] = status(kids[0], "Pss:")
            out["planner PSS"] = status(planner_pid, "Pss:")
    cmd, env = cs["em-default"]
    cid = "mem-front"
    timed(cmd + ["run", "--detach", "--bundle", bundle_sleep, cid], env)
    try:
        # read while it waits for the exec'd process: wait4's maxrss would count
        # the forking parent's pages too
        p = subprocess.Popen(cmd + ["exec", cid, "sleep", "0.5"], env=env,
                             stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        out["front-end RSS, peak (warm exec)"] = status(p.pid, "VmHWM:")
        p.wait()
    finally:
        subprocess.run(cmd + ["delete", "--force", cid], env=env, capture_output=True)
    return out


def podman_loop(cs, workdir, rootfs, n):
    """Seconds for N `podman --runtime R run --rm` of /bin/true, per runtime,
    interleaved; podman's storage and state kept in WORKDIR.  None without podman."""
    import tarfile
    if not shutil.which("podman") or not shutil.which("conmon"):
        return None
    base = os.path.join(workdir, "podman")
    os.makedirs(os.path.join(base, "tmp"))
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        # podman's default nofile limit is above what runc may set from here
        f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n')
        f.write(f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                f'events_logfile_path = "{base}/events.log"\ntmp_dir = "{base}/tmp"\n')
    env = dict(os.environ, CONTAINERS_CONF=conf, XDG_RUNTIME_DIR=os.path.join(base, "xdg"))
    env.pop("EMERGENCE_PLANNER_SOCKET", None)
    podman = ["podman", "--root", os.path.join(base, "root"), "--runroot",
              os.path.join(base, "runroot"), "--storage-driver", "vfs"]
    tar = os.path.join(base, "rootfs.tar")
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    subprocess.run(podman + ["import", "-q", tar, "localhost/bench-bb:latest"], env=env,
                   check=True, capture_output=True, cwd=base)
    runtimes = {"em-default": cs["em-default"][0][0]}
    for peer in ("runc", "crun"):
        if peer in cs:
            runtimes[peer] = cs[peer][0][0]
    times = {name: [] for name in runtimes}
    try:
        for i in range(n + 2):
            order = list(runtimes)
            random.shuffle(order)
            for name in order:
                dt, _ = timed(podman + ["--runtime", runtimes[name], "run", "--rm", "--network",
                                        "none", "localhost/bench-bb", "/bin/true"], env)
                if i >= 2:  # the first calls: podman's own first-use work, a planner start
                    times[name].append(dt)
    finally:
        subprocess.run(podman + ["rm", "-af", "-t", "0"], env=env, capture_output=True, cwd=base)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(base)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)
    return times


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def report(title, times, names, verbs, base="em-default"):
    """A table of median and p95 (ms) per contender, and BASE's ratios to each peer."""
    peers = [p for p in ("runc", "crun") if p in names]
    print(f"\n{title}")
    print(f"{'':8s}" + "".join(f"{n:>20s}" for n in names)
          + "".join(f"{base[3:] + '/' + p:>14s}" for p in peers)
          + "".join(f"{'cold/' + p:>12s}" for p in peers))
    print(f"{'verb':8s}" + "".join(f"{'median':>11s}{'p95':>9s}" for _ in names)
          + "".join(f"{'med':>8s}{'p95':>6s}" for _ in peers)
          + "".join(f"{'med':>12s}" for _ in peers))
    for v in verbs:
        med = {n: statistics.median(times[n][v]) * 1000 for n in names}
        tail = {n: p95(times[n][v]) * 1000 for n in names}
        row = f"{v:8s}" + "".join(f"{med[n]:11.2f}{tail[n]:9.2f}" for n in names)
        row += "".join(f"{med[base] / med[p]:8.2f}{tail[base] / tail[p]:6.2f}" for p in peers)
        if "em-cold" in names:
            row += "".join(f"{med['em-cold'] / med[p]:12.2f}" for p in peers)
        print(row)


def _before_rev(repo):
    """The newest commit whose front-end had no peer check: the "before"."""
    revs = subprocess.run(["git", "-C", repo, "log", "-n", "500", "--format=%H"],
                          capture_output=True, text=True, check=True).stdout.split()
    for rev in revs:
        # (front.c alone before it was split, front.c and front_*.c since)
        found = subprocess.run(["git", "-C", repo, "grep", "-q", "SO_PEERCRED", rev, "--",
                                "csrc/front.c", "csrc/front_*.c"], capture_output=True)
        if found.returncode == 1:
            return rev
    raise SystemExit("no front-end without the peer check in this repository's history")


def _warm_pair(emergence, workdir, name, front_srcs, planner_src):
    """A front-end built from FRONT_SRCS ({file name: source}: front.c, and since
    it was split its parts and front.h) and a planner running PLANNER_SRC, over a
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
    for file, src in front_srcs.items():
        with open(os.path.join(top, file), "w") as f:
            f.write(src)
    exe = os.path.join(bin_dir, "emergence")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-static", "-s", f'-DBUILD_ID="{name}"',
                    *[os.path.join(top, file) for file in front_srcs if file.endswith(".c")],
                    "-o", exe], check=True)
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

            def front_files(where=where):
                """csrc/front.c, front.h and front_*.c of that tree."""
                if where is None:
                    names = os.listdir(os.path.join(repo, "csrc"))
                else:
                    names = [os.path.basename(p) for p in subprocess.run(
                        ["git", "-C", repo, "ls-tree", "--name-only", where, "csrc/"],
                        capture_output=True, text=True, check=True).stdout.split()]
                return {n: src(f"csrc/{n}") for n in names
                        if n in ("front.c", "front.h") or n.startswith("front_")}
            files = front_files()
            if "front_prime.c" in files:
                # not what is measured here: the priming changes create's time
                # (front_prime.c says why), so "after" is built without it
                files["front_prime.c"] = ('#include "front.h"\nint prime_wanted;\n'
                                          'void prime_cgroup_attach(void) {}\n')
            exe, sock, planner = _warm_pair(emergence, workdir, name, files,
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
    ap.add_argument("--rounds", type=int, default=100,
                    help="interleaved rounds (default 100; fewer on a shared machine)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=100)
    ap.add_argument("--podman", type=int, default=50, help="podman runs per runtime (0: none)")
    ap.add_argument("--emergence", default=find_emergence())
    ap.add_argument("--trust-only", action="store_true",
                    help="only the cost of the warm path's peer check and deadline")
    ap.add_argument("--no-trust", action="store_true", help="leave out the trust cost")
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
    planner = None
    try:
        bundle_true = make_bundle(workdir, ["/bin/true"])
        os.rename(bundle_true, os.path.join(workdir, "bundle-true"))
        bundle_true = os.path.join(workdir, "bundle-true")
        sleep_dir = os.path.join(workdir, "s")
        os.mkdir(sleep_dir)
        bundle_sleep = make_bundle(sleep_dir, ["sleep", "3600"])
        cs = contenders(args.emergence, workdir)
        with HugetlbOnV1():
            for peer in ("runc", "crun"):  # e.g. crun on a hybrid host, hugetlb busy on v2
                if peer in cs:
                    _, rc = timed(cs[peer][0] + ["run", "--bundle", bundle_true, "probe"],
                                  None, check=False)
                    if rc != 0:
                        print(f"note: {peer} cannot run a container here; left out",
                              file=sys.stderr)
                        del cs[peer]
            # the default path's first hot verb under a new root starts its planner
            timed(cs["em-default"][0] + ["run", "--bundle", bundle_true, "first"],
                  cs["em-default"][1])
            planner = planner_up(workdir)
            times = verb_table(cs, bundle_true, bundle_sleep, args.rounds, args.warmup)
            b2b = back_to_back(cs, bundle_sleep, args.rounds)
            pace = paced(cs, bundle_true, bundle_sleep, args.rounds, args.warmup)
            par = parallel(cs, bundle_true, args.parallel)
            mem = memory(cs, planner, bundle_sleep)
            floor = memory_floor(cs, workdir)
            pod = podman_loop(cs, workdir, os.path.join(workdir, "rootfs"), args.podman) \
                if args.podman else None
    finally:
        if planner:
            try:
                os.kill(planner, 15)
            except ProcessLookupError:
                pass
        shutil.rmtree(workdir, ignore_errors=True)

    names = list(cs)
    print(f"runtime verbs, busybox bundle, {args.rounds} interleaved rounds; em-default: no "
          "node, the planner started on demand; em-cold: --no-planner")
    report("interleaved (ms)", times, names, VERBS)
    report(f"back to back: `state` x{args.rounds} per contender, no gap (ms)",
           {n: {"state": b2b[n]} for n in names}, names, ("state",))
    report(f"after a pause: `run` and `create` each {PAUSE * 1000:.0f} ms after the last call, "
           "as engines call them (ms)", pace, names, ("run", "create"))
    print(f"\n{args.parallel} `run /bin/true` started at once (2 cores here):")
    for n in names:
        dt, failed, left = par[n]
        print(f"  {n:10s} {dt:6.2f} s  failed {failed}  state left {left}")
    for p in ("runc", "crun"):
        if p in par:
            print(f"  ratio em-default/{p} {par['em-default'][0] / par[p][0]:.2f}")
    print("\nmemory (KiB):")
    for k, v in mem.items():
        print(f"  {k:34s} {v}")
    print("\nsmallest memory limit for `run /bin/true`:")
    for n in names:
        print(f"  {n:10s} {floor[n] // 1024 if floor[n] else 'none <= 16384'} KiB")
    if pod:
        print(f"\n`podman --runtime R run --rm --network none IMAGE /bin/true` x{args.podman}, "
              "interleaved (ms)")
        for n, xs in pod.items():
            print(f"  {n:10s} median {statistics.median(xs) * 1000:8.1f}  p95 "
                  f"{p95(xs) * 1000:8.1f}  total {sum(xs):6.1f} s")
        for p in ("runc", "crun"):
            if p in pod:
                print(f"  ratio em-default/{p} (median) "
                      f"{statistics.median(pod['em-default']) / statistics.median(pod[p]):.2f}")
    if args.no_trust:
        return
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
