"""Small helpers shared by Relay's engine tests."""

import subprocess


def unmount_below(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(path)]
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], stderr=subprocess.DEVNULL)
