"""`run`: create + start, then wait for the process and clean up.

The init is a child of this process (the shim clones it with CLONE_PARENT),
so its exit status is ours to collect; signals sent to `run` are passed on.
"""

import _signal as signal  # `signal` would import enum: milliseconds per command
import os

from .create import create
from .delete import delete
from .start import start

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def run(root, container_id, bundle, pid_file=None, no_pivot=False, detach=False,
        preserve_fds=0, debug=False, console_socket=None):
    pid, master = create(root, container_id, bundle, pid_file=pid_file, no_pivot=no_pivot,
                         preserve_fds=preserve_fds, debug=debug, console_socket=console_socket,
                         keep_terminal=not detach)
    if detach:
        start(root, container_id)
        return 0
    try:
        start(root, container_id)
        if master is not None:
            from .terminal import proxy
            return proxy(master, pid)
        return wait_forwarding(pid)
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    finally:
        delete(root, container_id, force=True)


def wait_forwarding(pid):
    """Wait for our child PID, passing on the signals we get; return its exit status
    the way a shell reports it (128+N for death by signal N)."""
    previous = {}

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        previous[sig] = signal.signal(sig, forward)
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
