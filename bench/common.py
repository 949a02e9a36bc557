"""Shared by the benchmarks: find emergence, make a busybox bundle, and let
crun run on this hybrid host (HugetlbOnV1)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def find_emergence():
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return here if os.path.exists(here) else shutil.which("emergence")


def make_bundle(workdir, args):
    rootfs = os.path.join(workdir, "rootfs")
    subprocess.run([os.path.join(REPO, "bundles", "busybox", "make-rootfs.sh"), rootfs],
                   check=True, stdout=subprocess.DEVNULL)
    sys.path.insert(0, REPO)
    from emergence.runtime.spec import default_config
    config = default_config(args=list(args), terminal=False)
    config["root"]["path"] = rootfs  # runc wants an absolute, non-symlink path
    bundle = os.path.join(workdir, "bundle")
    os.mkdir(bundle)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    return bundle


class HugetlbOnV1:
    """Bind hugetlb to a v1 hierarchy so crun accepts the hybrid host."""

    def __init__(self):
        self.mounted = False

    def __enter__(self):
        try:
            with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
                busy = f.read().split()
        except OSError:
            return self
        if "hugetlb" in busy and not os.path.ismount("/sys/fs/cgroup/hugetlb"):
            os.makedirs("/sys/fs/cgroup/hugetlb", exist_ok=True)
            # Busy for a moment after cgroup2 children of it were removed: retry.
            for _ in range(50):
                r = subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup",
                                    "/sys/fs/cgroup/hugetlb"], stderr=subprocess.DEVNULL)
                if r.returncode == 0:
                    self.mounted = True
                    break
                time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        if not self.mounted:
            return
        # cgroups the runtimes left in it (podman's libpod_parent, say): removed,
        # or the hierarchy outlives the unmount and keeps hugetlb from cgroup2 for
        # good.  A conmon may still be leaving one: retried for a while.
        end = time.monotonic() + 15
        while True:
            left = self._remove_children("/sys/fs/cgroup/hugetlb")
            if not left or time.monotonic() > end:
                break
            time.sleep(0.2)
        subprocess.run(["umount", "/sys/fs/cgroup/hugetlb"])
        try:
            os.rmdir("/sys/fs/cgroup/hugetlb")
        except OSError as e:  # another program's cgroups keep it busy (podman's, say)
            print(f"note: hugetlb stays on v1: {e}", file=sys.stderr)
            return
        # An unmounted v1 hierarchy lingers while its dead children are released,
        # keeping hugetlb from cgroup2; mounting and unmounting it again frees it.
        spare = tempfile.mkdtemp(prefix="emergence-hugetlb-")
        for _ in range(50):
            if self.hierarchy_of("hugetlb") == 0:
                break
            if subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", spare],
                              stderr=subprocess.DEVNULL).returncode == 0:
                subprocess.run(["umount", spare])
            time.sleep(0.1)
        os.rmdir(spare)
        if self.hierarchy_of("hugetlb") != 0:
            busy = f": {', '.join(left)} still in use" if left else ""
            print(f"note: hugetlb stays on a v1 hierarchy (one of its cgroups lives on{busy}); "
                  "tests of hugetlb on cgroup2 skip until it is released", file=sys.stderr)

    @staticmethod
    def _remove_children(top):
        """Remove every cgroup below TOP, deepest first; those left (busy)."""
        left = []
        for d, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            if d != top:
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)  # a live process's
        return left

    @staticmethod
    def hierarchy_of(controller):
        with open("/proc/cgroups") as f:
            for line in f:
                fields = line.split()
                if fields[0] == controller:
                    return int(fields[1])
        return 0
