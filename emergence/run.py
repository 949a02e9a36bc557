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
        preserve_fds=0, debug=False):
    _, pid = create(root, container_id, bundle, pid_file=pid_file, no_pivot=no_pivot,
                    preserve_fds=preserve_fds, debug=debug)
    if detach:
        start(root, container_id)
        return 0
    previous = {}

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        previous[sig] = signal.signal(sig, forward)
    try:
        start(root, container_id)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        delete(root, container_id, force=True)
