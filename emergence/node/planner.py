"""The warm planner: runs the `emergence` CLI for the C front-end, without an
interpreter start per call.

A single-threaded process with the runtime already imported, started by the
node (which supervises it), by the front-end on demand for a state root
(`emergence-planner --on-demand ROOT/.planner/planner.sock --lock-fd 3`: it
holds the front-end's lock for life and exits after an idle time), or by
systemd's socket (`--systemd`, contrib/emergence-planner.socket).

Per connection it checks the caller is root, or the node's own uid
(SO_PEERCRED), and forks a worker; the worker takes the caller's descriptors
at their own numbers, its cwd, environment and argv, and runs `cli.main`
exactly as the cold path would.  Only spawning the shim and reaping children
go back to the front-end (`runtime/parent.py`), which must stay the parent
of the container.  A killed planner loses no call in flight: each worker is
its own process.

The protocol and a call's side are in `worker.py`; how many spares are kept,
in `pool.py`.
"""

import os
import select
import socket
import struct
import sys
import time

from .pool import QUIET, TRIM, Pool
from .worker import Ready, accept_root, libc, work

DEFAULT_SOCKET = "/run/emergence/node/planner.sock"
PR_SET_PDEATHSIG = 1
SPARES = 3  # default of [node] planner_spares: a burst of calls does not wait for forks

# (every module a hot verb imports, its lazy imports too: one left out costs its
# import, ~0.5 ms, in every call that needs it)
RUNTIME_MODULES = ("cli", "fastjson", "runtime.commands", "runtime.config", "runtime.create",
                   "runtime.delete", "runtime.execute", "runtime.hooks", "runtime.kill",
                   "runtime.launch", "runtime.planner", "runtime.run", "runtime.scheduling",
                   "runtime.seccomp", "runtime.start", "runtime.state", "runtime.userdb",
                   "runtime.cgroups.hierarchy", "runtime.cgroups.manager", "runtime._native")
# Relay's CNI plugin: its own rtnetlink, no netlink library (~9 ms of imports
# a cold call; pyroute2, once here, cost ~200 ms and ~20 MB).  Every planner
# preloads it: the CNI front-end asks the node's, else the default root's one
# started on demand (podman's CNI backend calls it with no node up).
CNI_MODULES = ("relay.cni", "relay.engine", "relay.kernel")
HOT_MODULES = RUNTIME_MODULES + CNI_MODULES
_hot = HOT_MODULES  # what a planner preloads (a test narrows it)


def _module(name):
    return f"emergence.{name}"


def _call_each(hook, scratch, waiting=lambda: False):
    """HOOK(SCRATCH) of every loaded hot module that has one (SCRATCH: a
    root-only directory of the planner's it may use), until WAITING(); a failure
    is skipped (a warm-up never stops the planner nor costs a call)."""
    for name in _hot:
        fn = getattr(sys.modules.get(_module(name)), hook, None)
        if fn is None:
            continue
        if waiting():
            return
        try:
            fn(scratch)
        except Exception:  # noqa: BLE001
            pass


def preload(scratch):
    """Import what every hot verb needs, so a worker starts with it in memory;
    a module's `warm_up(scratch)`, if it has one, runs too (once, in the planner)."""
    for name in _hot:
        try:
            __import__(_module(name))
        except ImportError:  # e.g. _native in a source checkout: loaded per call then
            continue
    _call_each("warm_up", scratch)


def scratch_dir(path):
    """The planner's scratch directory beside its socket PATH (the node removes it)."""
    return os.path.join(os.path.dirname(path), "warm-up")


def serve(path, spares_wanted=SPARES, idle=None, lock_fd=None, listen_fd=None):
    """Accept calls on PATH (root-only socket) until stopped, or, with IDLE,
    until no call came for IDLE seconds.

    SPARES_WANTED workers (more after bursts of more calls: Pool) are forked
    and warmed up ahead and wait in accept() themselves, so a call waits for
    no fork; one that takes a call tells us on a pipe, and its successor is
    forked once the burst is over.  A planner of the node dies with
    it; one started on demand (`front.c`: LOCK_FD, the flock it holds for its
    life) or by systemd (LISTEN_FD, socket activation) lives on its own."""
    import signal
    prctl = libc().prctl
    own = lock_fd is None and listen_fd is None
    if own:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # go with the node
        if os.getppid() == 1:
            return
    from .rundir import check
    check(os.path.dirname(path), create=True)  # ours alone, or we do not serve there
    preload(scratch_dir(path))
    if listen_fd is not None:
        lsock = socket.socket(fileno=listen_fd)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)
        try:
            lsock.bind(path)
        finally:
            os.umask(old)
        lsock.listen(128)
    bound = os.stat(path).st_ino if listen_fd is None else None
    pid_file = os.path.join(os.path.dirname(path), "planner.pid")
    if lock_fd is not None:
        fd = os.open(pid_file + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(pid_file + ".tmp", pid_file)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    if not own:  # a node stops its planner by SIGTERM and cleans up itself
        def stop(*_):
            raise SystemExit(0)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    taken_r, taken_w = os.pipe2(os.O_CLOEXEC)
    # Workers are short-lived forks: keep the collector from walking (and so
    # copying) every inherited page.
    import gc
    gc.collect()
    gc.freeze()
    gc.disable()
    spares = {}  # pidfd -> pid of the workers waiting in accept
    pool = Pool(spares_wanted)
    trim = idle / 2 if idle else TRIM
    leaving = 0  # spares asked to go that have not yet
    last_call = time.monotonic() - QUIET   # no burst yet: fill the pool at once
    trimmed_for = last_call  # the quiet spell spares were last let go in

    def took_calls():
        """The pids the spares that took a call wrote on the pipe (whole
        pids: writes of 4 bytes are atomic), now out of the pool."""
        nonlocal last_call
        data = os.read(taken_r, 4096)
        last_call = time.monotonic()
        pids = struct.unpack(f"{len(data) // 4}i", data)
        for pid in pids:
            pool.took()
            for pidfd in [f for f, p in spares.items() if p == pid]:
                del spares[pidfd]
                os.close(pidfd)
        return pids

    try:
        while True:
            now = time.monotonic()
            if idle and now - last_call >= idle:
                break
            if now - last_call >= trim and trimmed_for != last_call:
                trimmed_for = last_call
                leaving += _ask_to_leave(path, pool.trims(len(spares) - leaving))
            for _ in range(pool.forks(len(spares) - leaving, now - last_call >= QUIET)):
                pid = _fork_spare(lsock, taken_w, taken_r, path, prctl, lock_fd)
                try:
                    spares[os.pidfd_open(pid)] = pid
                except ProcessLookupError:
                    # It ran first on a loaded machine and is gone (reaped at
                    # once): it took a call, and then said so on the pipe
                    # before it exited, or it took an ask to go.
                    took = select.select([taken_r], [], [], 0)[0] and took_calls()
                    if pid not in (took or ()):
                        leaving = max(0, leaving - 1)
            # a spare took a call (it says so on the pipe) or died without one;
            # or the burst is over (QUIET): time to refill; or the quiet is
            # long (TRIM): time for the spares above the configured ones to go
            timeout = None if now - last_call >= QUIET else last_call + QUIET - now
            if trimmed_for != last_call and len(spares) - leaving > pool.wanted:
                timeout = max(0.0, min(timeout if timeout is not None else trim,
                                       last_call + trim - now))
            if idle:
                timeout = min(timeout if timeout is not None else idle,
                              max(0.0, last_call + idle - now))
            try:
                ready, _, _ = select.select([taken_r, *spares], [], [], timeout)
            except InterruptedError:
                continue
            if taken_r in ready:
                took_calls()
            for pidfd in ready:
                if pidfd in spares:     # died without a call (asked to go, say)
                    del spares[pidfd]
                    os.close(pidfd)
                    leaving = max(0, leaving - 1)
    finally:
        _leave(path, bound, lsock, spares, pid_file if lock_fd is not None else None, lock_fd)


def _ask_to_leave(path, n):
    """Ask N spares to go; how many were asked.  Each ask is a connection from
    this process, which the spare that accepts it knows by its pid
    (SO_PEERCRED: `accept_root`) and exits on, having taken no call.  Not a
    signal: one could reach a spare that has just taken a call."""
    sent = 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.setblocking(False)
        try:
            s.connect(path)
            sent += 1
        except OSError:
            break
        finally:
            s.close()
    return sent


def _leave(path, bound, lsock, spares, pid_file, lock_fd):
    """Stop serving: no new caller finds the socket (unlinked first, if it is
    still the one we bound), the spares go (a call one already took runs on:
    workers are their own processes), then the scratch, the pid file, and
    the lock, marked as a clean exit so the next call may start a planner at
    once.  A front-end that connected meanwhile sees the socket close before
    its OK, and runs cold."""
    import shutil
    import signal
    if bound is not None:
        try:
            if os.stat(path).st_ino == bound:
                os.unlink(path)
        except FileNotFoundError:
            pass
    lsock.close()
    for pidfd in spares:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(scratch_dir(path), ignore_errors=True)
    if pid_file:
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
    if lock_fd is not None:
        os.utime(lock_fd, (0, 0))  # front.c: a clean exit, start the next one freely
        os.close(lock_fd)


def _fork_spare(lsock, taken_w, taken_r, path, prctl, lock_fd=None):
    """A worker that warms up, then waits in accept for one call.  It stops
    warming up as soon as a call waits (calls back to back found no spare
    in accept): the call then pays the faults the warm-up did not take, not
    the warm-up's time.  (A spare forked when none was waiting used to skip
    the warm-up altogether, and the burst's next calls paid ~1-3 ms each.)"""
    import signal
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    os.close(taken_r)
    if lock_fd is not None:  # the planner's alone: a long `run` must not keep it
        os.close(lock_fd)
    code = 70
    try:
        # A spare dies with the planner; a worker with a call outlives it.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(0)
        _warm_up(os.path.join(os.path.dirname(path), "warm-up-no-such-root"),
                 scratch_dir(path), lambda: _call_waiting(lsock))
        ready = Ready()  # found while no call waits
        conn, peer_pid = accept_root(lsock)
        prctl(PR_SET_PDEATHSIG, 0)
        os.write(taken_w, struct.pack("i", os.getpid()))
        lsock.close()
        os.close(taken_w)
        code = work(conn, peer_pid, ready)
    finally:
        os._exit(code)


def _warm_up(root, scratch, waiting=lambda: False):
    """Run the light verbs once against a root that does not exist, while no
    call waits (WAITING() says when one does: the rest is then left): a fresh
    fork pays its copy-on-write faults here, not in the caller's time (a first
    `state` in a fork takes ~1-3 ms, after this ~0.3).  They fail with "does
    not exist" and create nothing.  Hot modules' `prefault(scratch)` do the
    same for their own paths."""
    import contextlib
    import io

    from .. import cli
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for verb in (["state", "x"], ["kill", "x", "KILL"], ["start", "x"], ["delete", "x"],
                     ["list"]):
            if waiting():
                return
            try:
                cli.main(["--root", root, *verb])
            except BaseException:  # never let a warm-up cost a call
                pass
    # a hot module may have a call's path to touch (Relay's CNI plugin)
    _call_each("prefault", scratch, waiting)


def _call_waiting(lsock):
    """A connection waits in LSOCK's backlog (no spare is in accept)."""
    p = select.poll()
    p.register(lsock.fileno(), select.POLLIN)
    return bool(p.poll(0))



USAGE = ("usage: emergence-planner SOCKET [SPARES]  (the node's)\n"
         "       emergence-planner --on-demand SOCKET --lock-fd N [--idle SECONDS]  "
         "(front.c's)\n"
         "       emergence-planner --systemd [--idle SECONDS]  (socket activation)")
IDLE = 60.0  # s: how long a planner started on demand or by systemd waits for a call


def sweep_builds(sock):
    """Remove the directories other builds' on-demand planners left beside ours
    (ROOT/.planner/OTHER: a lock and a log each, one per upgrade): only those
    whose lock nobody holds, so a planner of another install that is starting
    or serving keeps its own."""
    import fcntl
    import shutil
    own = os.path.dirname(os.path.abspath(sock))
    top = os.path.dirname(own)
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        d = os.path.join(top, name)
        if d == own:
            continue
        try:
            fd = os.open(os.path.join(d, "lock"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # being made now, or not ours to judge
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(d, ignore_errors=True)  # while held: no planner starts there
        except OSError:
            pass  # its planner is up (or starting)
        finally:
            os.close(fd)


def idle_seconds(text):
    """EMERGENCE_PLANNER_IDLE / --idle: seconds without a call before a planner
    that started on its own exits (0: never)."""
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 86400:
        raise ValueError(f"--idle {text!r}: give seconds, from 0 (never) to 86400")
    return value


def main():
    from ..errors import EmergenceError
    args = sys.argv[1:]
    try:
        if args and args[0] in ("--on-demand", "--systemd"):
            opts = {"--idle": os.environ.get("EMERGENCE_PLANNER_IDLE") or str(IDLE)}
            mode, rest = args[0], args[1:]
            path = None
            if mode == "--on-demand":
                path, rest = rest[0], rest[1:]
            while rest:
                opts[rest[0]] = rest[1]
                rest = rest[2:]
            idle = idle_seconds(opts["--idle"])
            if mode == "--systemd":
                # sd_listen_fds(3): one socket, passed to us
                if os.environ.get("LISTEN_PID") != str(os.getpid()) or \
                        os.environ.get("LISTEN_FDS") != "1":
                    sys.exit("emergence-planner --systemd: no socket from systemd "
                             "(use contrib/emergence-planner.socket)")
                fd = 3
                probe = socket.socket(fileno=fd)
                path = probe.getsockname()
                probe.detach()
                os.set_inheritable(fd, False)
                serve(path, SPARES, idle=idle, listen_fd=fd)
            else:
                fd = int(opts["--lock-fd"])
                os.set_inheritable(fd, False)
                sweep_builds(path)
                serve(path, SPARES, idle=idle, lock_fd=fd)
            return
        path = args[0] if args else DEFAULT_SOCKET
        serve(path, max(1, int(args[1])) if len(args) > 1 else SPARES)
    except (IndexError, KeyError, ValueError) as e:
        sys.exit(f"emergence-planner: {e}\n{USAGE}")
    except EmergenceError as e:
        sys.exit(f"emergence: {e}")


if __name__ == "__main__":
    main()
