"""cgroup v1 realtime budgets, parent first.

The kernel refuses a cgroup a `cpu.rt_runtime_us` that does not fit in its
parent's: a parent's realtime share (runtime/period) must cover the sum of its
children's.  New cgroups start with a budget of 0, so a container asking for
realtime time below a cgroup we just made would always fail.  Before the leaf
is written we raise, top-down, the budget of the ancestors that are ours (made
for this container, or the runtime's own `emergence` parent) just enough for
the leaf and their other children.  Ancestors that belong to someone else are
never changed: if they lack the budget, the leaf's write fails and the error
says which parent to raise.
"""

import math
import os


def _read(path, name):
    with open(os.path.join(path, name)) as f:
        return int(f.read())


def _share(path):
    """This cgroup's realtime share of a CPU (runtime/period; -1 means unlimited)."""
    runtime = _read(path, "cpu.rt_runtime_us")
    return float("inf") if runtime < 0 else runtime / _read(path, "cpu.rt_period_us")


def _children_share(path, skip):
    total = 0.0
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False) and entry.path != skip:
            total += _share(entry.path)
    return total


def grant_parents(mountpoint, rel, runtime, period, ours):
    """Raise the budgets of the ancestors of MOUNTPOINT/REL listed in OURS so
    that RUNTIME per PERIOD microseconds fits below them; writes parent first."""
    from .manager import write
    if runtime <= 0:
        return
    parts = rel.strip("/").split("/")
    ancestors = [os.path.join(mountpoint, *parts[:k]) for k in range(1, len(parts))]
    # bottom-up: what each ancestor must grant = its other children + the path child
    need, child, wanted = runtime / period, os.path.join(mountpoint, *parts), {}
    for path in reversed(ancestors):
        need += _children_share(path, child)
        wanted[path] = need
        child = path
    for path in ancestors:  # top-down: a parent's budget must exist before its child's
        if path not in ours or _share(path) >= wanted[path]:
            continue
        p = _read(path, "cpu.rt_period_us")
        budget = min(p, math.ceil(round(wanted[path] * p, 6)))
        write(os.path.join(path, "cpu.rt_runtime_us"), budget)
