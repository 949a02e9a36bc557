"""A planner's spares under load: one may come and go before the planner
watches it."""

import subprocess
import sys

SPARE_GONE = r"""
import os, sys
from emergence.node import planner
real, seen = os.pidfd_open, []

def gone_first(pid, *flags):
    # the first spare ran before us, took a call and was reaped: ESRCH
    seen.append(pid)
    if len(seen) == 1:
        raise ProcessLookupError(3, "No such process")
    return real(pid, *flags)

os.pidfd_open = gone_first
planner._hot = ()  # nothing to preload: the loop is what is tried
planner.serve(sys.argv[1], 2, idle=1.5)
print("served until idle, spares forked:", len(seen))
"""


def test_a_spare_gone_before_the_planner_watches_it_does_not_stop_the_planner(tmp_path):
    """On a loaded machine a spare may run before its planner does, take a call
    and exit (reaped at once) before the planner opens a pidfd for it.  That
    ESRCH used to end the planner (its socket unlinked: every later call cold,
    the session's warm planner gone mid-suite).  Now it serves on, here until
    its idle time."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    r = subprocess.run([sys.executable, "-c", SPARE_GONE, str(run / "planner.sock")],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0 and "served until idle" in r.stdout, r.stderr
    assert "Traceback" not in r.stderr
