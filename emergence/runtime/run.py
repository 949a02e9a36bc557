"""`run`: create + start, then wait for the process and clean up.

The init is a child of this process (the shim clones it with CLONE_PARENT),
so its exit status is ours to collect; signals sent to `run` are passed on.
"""

import _signal as signal  # `signal` would import enum: milliseconds per command
import os

from . import parent
from .create import create
from .delete import delete
from .start import start

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def run(root, container_id, bundle, pid_file=None, no_pivot=False, detach=False,
        preserve_fds=0, debug=False, console_socket=None, keep=False, nets=(), publish=()):
    """create + start + wait; the container is deleted when its process exits,
    unless KEEP (crun's --keep): then it stays, stopped, for `state` and `delete`."""
    pid, master = create(root, container_id, bundle, pid_file=pid_file, no_pivot=no_pivot,
                         preserve_fds=preserve_fds, debug=debug, console_socket=console_socket,
                         keep_terminal=not detach, nets=nets, publish=publish)
    if detach:
        start(root, container_id)
        return 0
    exited = False
    try:
        if master is not None:
            from .terminal import proxy
            start(root, container_id)
            code = proxy(master, pid)
        else:
            # Forward signals before the process can run: one sent the moment it
            # starts must reach it, not kill us.
            with Forwarder(pid):
                start(root, container_id)
                code = wait_status(pid)
        exited = True
        return code
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
            parent.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    finally:
        if not (keep and exited):
            delete(root, container_id, force=True)


class Forwarder:
    """Passes the signals we get on to a process; a signal that comes before the
    process is known (pid None) is held and delivered once it is."""

    def __init__(self, pid=None):
        self.pid = pid
        self.pending = []
        self.previous = {}

    def __enter__(self):
        for sig in FORWARDED:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, sig, _frame):
        if self.pid is None:
            self.pending.append(sig)
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def target(self, pid):
        self.pid = pid
        while self.pending:
            self._handle(self.pending.pop(0), None)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def wait_status(pid):
    """Wait for our child PID; its exit status the way a shell reports it
    (128+N for death by signal N)."""
    while True:
        try:
            _, status = parent.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
