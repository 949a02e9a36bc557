"""`kill`: signal the init (or, with --all, every process in the container)."""

import _signal  # the C module: `signal` imports enum, which costs milliseconds
import os

from ..errors import EmergenceError, shown
from .state import Container, proc_start_time


def parse_signal(text):
    """'9', 'KILL', 'SIGKILL', 'sigkill' -> 9."""
    t = text.strip().upper()
    if t.isdigit():
        n = int(t)
        if 0 < n <= _signal.SIGRTMAX:
            return n
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        sig = None if name.startswith("SIG_") else getattr(_signal, name, None)
        if isinstance(sig, int) and 0 < sig <= _signal.SIGRTMAX:
            return sig
    raise EmergenceError(f"unknown signal {shown(text)}: give a name like TERM or KILL, "
                         "or a number")


def send(pid, start_time, sig):
    """Signal pid only if it is still the process we started (pidfd, no reuse race)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        st = proc_start_time(pid)
        if st is None or (start_time is not None and st[1] != start_time):
            return False
        _signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def kill(root, container_id, sig, all_processes=False):
    from .cgroups.hierarchy import discover
    from .cgroups.manager import Cgroup
    with Container.open(root, container_id) as c:
        c.require(("created", "running", "paused"),
                  "only a created or running container can be signalled")
        if all_processes:
            cg = Cgroup(discover(), c.data["cgroup"]["rel"])
            for pid in cg.pids():
                send(pid, None, sig)
        else:
            send(c.pid, c.data.get("startTime"), sig)
