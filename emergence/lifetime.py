"""A child that dies with us: the preexec_fn every part uses for helpers that
must not outlive the process that started them (hooks, stage runs, a
non-detached etcd), so a kill -9 of the starter leaves no orphan."""

import os

PR_SET_PDEATHSIG = 1


def dies_with_us():
    """A preexec_fn giving the child SIGKILL when the forking thread dies, and
    ending it at once if we are already gone.  The signal is tied to the
    forking thread: fork from one that lives as long as the process (the main
    thread).  It is not inherited, so what the child starts may stay.  libc is
    looked up now (~1.5 ms for ctypes, once), not in the child."""
    import ctypes
    prctl = ctypes.CDLL(None).prctl
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, 9)
        if os.getppid() != parent:  # we died before it was set
            os._exit(1)
    return preexec
