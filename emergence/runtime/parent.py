"""The process that is the parent of what the runtime starts.

Engines (conmon, the containerd shim) wait for the container's init as their
own descendant, so the shim must be spawned by the very process the engine
ran.  On the cold path that is this interpreter: spawn and wait are local.
On the warm path (`emergence node`'s planner) this code runs in a worker
forked by the planner, and the engine's process is the C front-end: the
worker asks it, over the connection it came in on, to spawn the shim and to
reap children (`node/worker.py` installs `Remote`).  Both paths run the same
runtime code; only these two calls differ.
"""

import os

_remote = None
KEEP_FD = 900


def keep(fd):
    """FD, or a duplicate of it at KEEP_FD or above (FD is then closed): where a
    descriptor a process keeps from one call to the next (a planner's worker
    made it in its warm-up) survives the worker taking a call, which closes
    every descriptor below the caller's highest.  Where the descriptor limit is
    lower, FD as it is (the keeper must then find it gone, by fstat)."""
    import fcntl
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, KEEP_FD)
    except OSError:
        return fd
    os.close(fd)
    return high


def spawn(exe_fd, argv, fds):
    """Start the executable open at EXE_FD with ARGV and no environment.
    FDS are the (inheritable) descriptors the child must get at the same numbers,
    beside the ones this process already passes on (stdio, --preserve-fds)."""
    if _remote is not None:
        return _remote.spawn(exe_fd, argv, fds)
    return os.posix_spawn(f"/proc/self/fd/{exe_fd}", argv, {})


def waitpid(pid, options=0):
    """os.waitpid of a child that spawn() made (or that it cloned as a sibling)."""
    if _remote is not None:
        return _remote.waitpid(pid, options)
    return os.waitpid(pid, options)


def use(remote):
    global _remote
    _remote = remote


def caller_pid():
    """The pid of the process the engine ran: this one, or on the warm path the
    front-end (systemd's LISTEN_PID names it)."""
    if _remote is None:
        return os.getpid()
    import socket
    import struct
    return struct.unpack("3i", _remote.conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                       12))[0]
