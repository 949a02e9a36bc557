#!/usr/bin/env python3
"""Artifacts benchmark.

1. `emergence build` of an image whose closure is ~2,000 files / 30 MB (Nix
   derivations already realised, empty emergence store) against the floor:
   GNU tar of the same store paths piped into sha256sum.
2. Rebuild after one small store path changed (the rest comes from the layer
   cache), as a fraction of the full build.
3. Image to running /bin/true: `emergence run --image` against
   `umoci unpack` + `runc run`, for the small image and a >= 500 MB one.

    sudo python3 bench/build_image.py [--rounds 10] [--large-mb 500]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import find_emergence  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXPR = os.path.join(HERE, "nix", "bench-image.nix")


def timed(cmd, **kw):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0


def nix_args(files, mb, variant):
    return ["--arg", "files", str(files), "--arg", "megabytes", str(mb),
            "--argstr", "variant", variant]


def realise(files, mb, variant):
    out = subprocess.run(["nix-build", EXPR, "--no-out-link", "--option", "substituters", ""]
                         + nix_args(files, mb, variant), check=True, capture_output=True,
                         text=True).stdout.split()[-1]
    with open(os.path.join(out, "closure")) as f:
        return sorted({line for line in f.read().splitlines() if line.startswith("/nix/")})


def med(xs):
    return statistics.median(xs) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--large-mb", type=int, default=500)
    ap.add_argument("--emergence", default=find_emergence())
    args = ap.parse_args()
    em = args.emergence
    work = tempfile.mkdtemp(prefix="emergence-bench-img-")
    # container state where it lives by default (/run, a tmpfs), not on disk
    state = tempfile.mkdtemp(prefix="emergence-bench-state-", dir="/run")
    try:
        paths = realise(2000, 30, "a")
        realise(2000, 30, "b")
        build, floor, rebuild, noop, nix_eval = [], [], [], [], []
        same = True
        for i in range(args.rounds):
            store = os.path.join(work, f"store{i}")
            floor.append(timed(["sh", "-c", "tar cf - " + " ".join(paths) +
                                " 2>/dev/null | sha256sum"]))
            build.append(timed([em, "--store", store, "build", EXPR] + nix_args(2000, 30, "a")))
            first = subprocess.run([em, "--store", store, "build", EXPR]
                                   + nix_args(2000, 30, "a"), capture_output=True,
                                   text=True).stdout
            t0 = time.perf_counter()
            again = subprocess.run([em, "--store", store, "build", EXPR]
                                   + nix_args(2000, 30, "a"), capture_output=True,
                                   text=True).stdout
            noop.append(time.perf_counter() - t0)
            same = same and first == again
            rebuild.append(timed([em, "--store", store, "build", EXPR]
                                 + nix_args(2000, 30, "b")))
            # what Nix alone takes to evaluate and realise the description
            nix_eval.append(timed(["nix-build", EXPR, "--no-out-link", "--option",
                                   "substituters", ""] + nix_args(2000, 30, "b")))
            shutil.rmtree(store)
        print(f"build of a 2,000-file / 30 MB closure, {args.rounds} rounds (median ms):")
        print(f"  floor (tar | sha256sum)   {med(floor):8.1f}")
        print(f"  emergence build           {med(build):8.1f}   ratio to floor "
              f"{med(build) / med(floor):.2f}")
        print(f"  rebuild, one path changed {med(rebuild):8.1f}   "
              f"{100 * med(rebuild) / med(build):.1f}% of a full build")
        print(f"  no-op rebuild             {med(noop):8.1f}   "
              f"{100 * med(noop) / med(build):.1f}% of a full build; same digest: {same}")
        print(f"  of which nix-build alone  {med(nix_eval):8.1f}   "
              f"{100 * med(nix_eval) / med(build):.1f}% of a full build")

        for label, files, mb in (("small (30 MB)", 2000, 30),
                                 (f"large ({args.large_mb} MB)", 500, args.large_mb)):
            realise(files, mb, "a")
            store = os.path.join(work, "store-run")
            out = json.loads(subprocess.run([em, "--store", store, "build", EXPR, "--json"]
                                            + nix_args(files, mb, "a"), check=True,
                                            capture_output=True, text=True).stdout)
            oci = os.path.join(work, "oci")
            subprocess.run(["skopeo", "copy", f"oci:{store}:{out['ref']}", f"oci:{oci}:img"],
                           check=True, capture_output=True)
            ours, theirs = [], []
            for i in range(args.rounds):
                ours.append(timed([em, "--root", state, "--store", store,
                                   "run", "--image", out["ref"], f"r{i}"]))
                bundle = os.path.join(work, f"umoci{i}")
                theirs.append(timed(["sh", "-c",
                                     f"umoci unpack --image {oci}:img {bundle} && "
                                     f"sed -i 's/\"terminal\": true/\"terminal\": false/' "
                                     f"{bundle}/config.json && runc --root {work}/runc run "
                                     f"-b {bundle} u{i}"]))
                shutil.rmtree(bundle)
            print(f"image to running /bin/true, {label}, {args.rounds} rounds (median ms):")
            print(f"  emergence run --image     {med(ours):8.1f}")
            print(f"  umoci unpack + runc run   {med(theirs):8.1f}   ratio "
                  f"{med(ours) / med(theirs):.2f}")
            shutil.rmtree(store)
            shutil.rmtree(oci)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
