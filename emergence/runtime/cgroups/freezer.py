"""Freezing a container's cgroup for pause/resume: the v1 freezer
controller's freezer.state, or cgroup2's cgroup.freeze."""

import os
import time

from ...errors import EmergenceError
from .manager import write


def set_frozen(freezer_file, frozen, timeout=10.0):
    """Freeze or thaw, and wait until the kernel says it is done."""
    if freezer_file is None:
        raise EmergenceError("no freezer is available for this container (neither the v1 "
                             "freezer controller nor cgroup2 is mounted)")
    v1 = freezer_file.endswith("freezer.state")
    want = ("FROZEN" if frozen else "THAWED") if v1 else ("1" if frozen else "0")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        write(freezer_file, want)
        if v1:
            with open(freezer_file) as f:
                if f.read().strip() == want:
                    return
        else:
            events = os.path.join(os.path.dirname(freezer_file), "cgroup.events")
            with open(events) as f:
                if f"frozen {1 if frozen else 0}" in f.read().splitlines():
                    return
        if time.monotonic() > deadline:
            raise EmergenceError(f"the container did not {'freeze' if frozen else 'thaw'} "
                                 f"within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
