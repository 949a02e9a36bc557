"""`emergence pipeline run` against its goals (issue 15), in one run:

  - the example pipeline cold (empty store), warm (no change), after one change
  - a 10-stage pipeline re-run with no change (goal: <= 0.3 s, no container)
  - per-stage overhead over `emergence run --image` of the same command (goal <= 50 ms)
  - two independent CPU-bound stages, --jobs 1 vs --jobs 2 (goal: speedup >= 1.8x in
    every one of three runs)
  - a cross-node cache hit of a 100 MB result (--share, a second store pulling from a
    share node on loopback) against a local hit plus the pull of the same result
    alone (goal <= 1.5x)

Why the speedup moved between 1.71x and 2.01x (issue 31): nothing serialises
the two stages (no Nix evaluation here, the images are store refs; no lock is
shared by two `emergence run`s).  What does not overlap is the runner's own
start (Python, the image lookups, the keys: ~0.25 s) and each stage's
`emergence run` start, and the stage was a 0.3 s loop: with S fixed and W of
work per stage the ceiling is (S + 2W) / (S + W), about 1.75x then, so noise
in S alone moved the ratio across the goal.  Now each stage does ~2 s of CPU
work (what "CPU-bound" means for a CI stage), the runner no longer starts a
`delete` per passed stage (`run` deletes what it ran) nor waits for its watcher,
and the ratio of the same loops on the host, without containers, is printed
beside it as this machine's ceiling at that moment.

Needs root and nix-build.  Everything lives in a temp dir that is removed.
Usage: python bench/pipeline.py [--rounds N]
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import REPO, find_emergence

ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
SPIN = "i=0; while [ $i -lt 2500000 ]; do i=$((i+1)); done"


def timed(argv, check=True):
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr}")
    return dt


def median(f, n=ROUNDS):
    return statistics.median(f() for _ in range(n))


def main():
    emergence = find_emergence()
    tmp = tempfile.mkdtemp(prefix="plci-bench-")
    try:
        tree = os.path.join(tmp, "repo")
        shutil.copytree(os.path.join(REPO, "examples", "ci"), os.path.join(tree, "examples", "ci"))
        os.makedirs(os.path.join(tree, "nix"))
        shutil.copy(os.path.join(REPO, "nix", "lib.nix"), os.path.join(tree, "nix"))
        ci = os.path.join(tree, "examples", "ci")
        image = os.path.join(ci, "image.nix")

        def em(store):
            return [emergence, "--root", os.path.join(tmp, "state"), "--store", store]

        def run(store, file, *extra):
            return em(store) + ["pipeline", "run", os.path.join(ci, file), "--id-prefix",
                                "plci-b-", "--logs", os.path.join(tmp, "logs"), *extra]

        # 1. the example: cold, warm, one change
        colds = []
        for r in range(ROUNDS):
            colds.append(timed(run(os.path.join(tmp, f"cold{r}"), "pipeline.toml")))
        store = os.path.join(tmp, "cold0")
        warm = median(lambda: timed(run(store, "pipeline.toml")))
        changes = []
        for r in range(ROUNDS):
            with open(os.path.join(ci, "docs", "README.txt"), "a") as f:
                f.write(f"change {r}\n")
            changes.append(timed(run(store, "pipeline.toml")))
        print(f"example (5 stages): cold {statistics.median(colds):.3f} s, warm no change "
              f"{warm:.3f} s, one changed file (2 stages re-run) "
              f"{statistics.median(changes):.3f} s")

        # 2. ten stages, re-run with no change
        with open(os.path.join(ci, "ten.toml"), "w") as f:
            for i in range(10):
                need = f'needs = ["s{i - 1}"]\n' if i % 2 else ""
                f.write(f'[stages.s{i}]\nimage = "image.nix"\ncommand = "echo {i}"\n'
                        f'inputs = ["src/*.sh"]\n{need}\n')
        timed(run(store, "ten.toml"))
        ten = median(lambda: timed(run(store, "ten.toml")))
        print(f"10-stage no-change re-run: {ten:.3f} s total (goal <= 0.3 s): "
              f"{'met' if ten <= 0.3 else 'NOT met'}")

        # 3. per-stage overhead over `emergence run --image`, same command, 10 stages
        subprocess.run(em(store) + ["build", image, "-t", "plci-bench:1"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(ci, "seq.toml"), "w") as f:
            for i in range(10):
                f.write(f'[stages.t{i}]\nimage = "plci-bench:1"\ncommand = ["/bin/true"]\n\n')
        pipe = median(lambda: timed(run(store, "seq.toml", "--no-cache", "--jobs", "1")))

        def direct():
            t = 0.0
            for i in range(10):
                t += timed(em(store) + ["run", "--image", "plci-bench:1", f"plci-b-d{i}", "--",
                                        "/bin/true"])
            return t
        base = median(direct)
        per = (pipe - base) / 10
        print(f"per stage: pipeline {pipe / 10 * 1000:.1f} ms, emergence run --image "
              f"{base / 10 * 1000:.1f} ms, overhead {per * 1000:.1f} ms (goal <= 50 ms): "
              f"{'met' if per <= 0.05 else 'NOT met'}")

        # 4. two independent CPU-bound stages
        with open(os.path.join(ci, "par.toml"), "w") as f:
            for i in range(2):
                f.write(f'[stages.c{i}]\nimage = "plci-bench:1"\ncommand = "{SPIN}"\n\n')
        bb = shutil.which("busybox")
        ratios = []
        for r in range(3):  # the goal holds in every run, not in the median
            one = timed(run(store, "par.toml", "--no-cache", "--jobs", "1"))
            two = timed(run(store, "par.toml", "--no-cache", "--jobs", "2"))
            h1 = timed([bb, "sh", "-c", f"{SPIN}; {SPIN}"])
            h2 = timed([bb, "sh", "-c", f"({SPIN}) & ({SPIN}); wait"])
            ratios.append(one / two)
            print(f"two CPU-bound stages, run {r + 1}: --jobs 1 {one:.3f} s, --jobs 2 {two:.3f} s, "
                  f"speedup {one / two:.2f}x; the same two loops on the host, no containers: "
                  f"{h1 / h2:.2f}x (this machine's ceiling now)")
        print(f"two CPU-bound stages: speedups {', '.join(f'{x:.2f}x' for x in ratios)} "
              f"(goal >= 1.8x in every run): {'met' if min(ratios) >= 1.8 else 'NOT met'}")
        cross_node(em, run, ci, tmp)
        print("(the machine is shared: numbers are noisy)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cross_node(em, run, ci, tmp):
    """A 100 MB result: local hit, cross-node hit, and the bare pull of it."""
    import json
    import socket
    with open(os.path.join(ci, "big.toml"), "w") as f:
        f.write('[stages.big]\nimage = "plci-bench:1"\n'
                'command = "head -c 100000000 /dev/urandom > /out/big"\noutputs = ["big"]\n')
    src = os.path.join(tmp, "cold0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = subprocess.Popen([sys.executable, "-m", "emergence.share.service", "--listen",
                             f"127.0.0.1:{port}", "--state", os.path.join(tmp, "n-state"),
                             "--config", json.dumps({"store": src})],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        import urllib.request
        with urllib.request.urlopen(url + "/share/v1/info") as r:
            key = json.load(r)["public_key"]
        share = ["--share", "--config", "/dev/null"]
        timed(run(src, "big.toml", *share))           # runs, publishes
        local = median(lambda: timed(run(src, "big.toml", *share)))
        n = [0]

        def fresh():  # another node's store: it has the image, not the result
            n[0] += 1
            store = os.path.join(tmp, f"far{n[0]}")
            subprocess.run(em(store) + ["build", os.path.join(ci, "image.nix"), "-t",
                                        "plci-bench:1"], check=True, stdout=subprocess.DEVNULL)
            return store
        def far_hit():
            argv = run(fresh(), "big.toml", *share, "--peer", url, "--trusted-key", key)
            return timed(argv)
        far = median(far_hit)
        top = os.path.join(src, "pipeline", "cache")
        for e in os.listdir(top):
            with open(os.path.join(top, e)) as f:
                if json.load(f).get("stage") == "big":
                    keyhex = e[:-5]
        def bare_pull():
            argv = em(fresh()) + ["pull", f"emergence-ci-result:{keyhex}", "--peer", url,
                                  "--trusted-key", key, "--config", "/dev/null",
                                  "--state", os.path.join(tmp, f"ps{n[0]}")]
            return timed(argv)
        pull = median(bare_pull)
        ratio = far / (local + pull)
        print(f"100 MB result: local hit {local:.3f} s, cross-node hit {far:.3f} s, the pull "
              f"alone {pull:.3f} s; cross-node / (local + pull) {ratio:.2f}x (goal <= 1.5x): "
              f"{'met' if ratio <= 1.5 else 'NOT met'}")
    finally:
        node.kill()
        node.wait()


if __name__ == "__main__":
    main()
