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

Protocol (SOCK_SEQPACKET, each record NUL-terminated fields, descriptors in
SCM_RIGHTS; the other side is csrc/front.c):

  front -> planner  HELLO build cwd fdnums argc argv... envc env...
  planner -> front  OK worker-pid          (or NO reason: front goes cold)
  front -> planner  GO  [fds]              (or it closes: it gave up, the call is dropped)
  planner -> front  NO reason              (instead of the call: front goes cold)
  worker -> front   SPAWN targets argc argv...  [exe, fd per target]
  front -> worker   PID pid                (or ERR errno)
  worker -> front   WAIT pid options
  front -> worker   STATUS pid status      (or ERR errno)
  worker -> front   EXIT code

The front-end waits for OK only so long (its deadline); a worker runs nothing
before GO, so a call the front-end gave up on and ran cold is never run
twice, and the caller's descriptors travel only with GO: a stopped planner
holds none of the engine's pipes open.  A worker sends OK once the build is
checked and gets ready (the caller's namespaces, cwd, environment) while the
GO comes, so the handshake adds little to the call's path; a NO after OK (a
caller it cannot serve) comes before anything is run, and the front-end then
runs the call cold.
"""

import errno
import os
import select
import socket
import struct
import sys
import time

from . import BUILD_ID

MAX_FDS = 250
DEFAULT_SOCKET = "/run/emergence/node/planner.sock"
PR_SET_PDEATHSIG = 1
SPARES = 3  # default of [node] planner_spares: a burst of calls does not wait for forks
QUIET = 0.05  # s without a call that ends a burst: the pool is refilled only then
BURSTS = 8    # the largest of the last BURSTS bursts sizes the pool ...
GROWTH = 4    # ... up to GROWTH x planner_spares
TRIM = 30.0   # s without a call (half the idle time of a planner that has one):
              # the pool forgets its bursts, and spares above planner_spares go
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


def fields(*items):
    return b"".join(str(i).encode() + b"\0" for i in items)


def parse(data):
    return [f.decode("utf-8", "surrogateescape") for f in data.split(b"\0")[:-1]]


_PEEK = bytearray(1)


def recv_packet(conn):
    """One whole packet (b"" at the end), its length peeked first: a reply of a
    few bytes then costs no 256 KB buffer (an mmap, a fault and an munmap)."""
    n = conn.recv_into(_PEEK, 1, socket.MSG_PEEK | socket.MSG_TRUNC)
    return conn.recv(max(n, 1))  # 1: an empty packet is consumed, EOF is b""


class Remote:
    """runtime.parent's calls, carried out by the front-end."""

    def __init__(self, conn):
        self.conn = conn
        self.unanswered = 0  # requests whose reply an exception (^C) left unread

    def _recv(self):
        data = recv_packet(self.conn)
        if not data:
            raise OSError("the front-end closed the connection")
        return data

    def _ask(self, record, fds=()):
        while self.unanswered:  # a KeyboardInterrupt came between a request and its reply
            self._recv()
            self.unanswered -= 1
        self.conn.sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      struct.pack(f"{len(fds)}i", *fds))] if fds else [])
        self.unanswered += 1
        data = self._recv()
        self.unanswered -= 1
        return parse(data)

    def spawn(self, exe_fd, argv, fds):
        fds = list(fds)
        reply = self._ask(fields("SPAWN", ",".join(map(str, fds)), len(argv), *argv),
                          [exe_fd, *fds])
        if reply[0] == "PID":
            return int(reply[1])
        raise OSError(int(reply[1]), os.strerror(int(reply[1])))

    def waitpid(self, pid, options=0):
        reply = self._ask(fields("WAIT", pid, options))
        if reply[0] == "STATUS":
            return int(reply[1]), int(reply[2])
        err = int(reply[1])
        if err == errno.ECHILD:
            raise ChildProcessError(err, os.strerror(err))
        raise OSError(err, os.strerror(err))


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
    prctl = _libc().prctl
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
                spares[os.pidfd_open(pid)] = pid
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
                data = os.read(taken_r, 4096)  # whole pids: writes of 4 bytes are atomic
                last_call = time.monotonic()
                for pid in struct.unpack(f"{len(data) // 4}i", data):
                    pool.took()
                    for pidfd in [f for f, p in spares.items() if p == pid]:
                        del spares[pidfd]
                        os.close(pidfd)
            for pidfd in ready:
                if pidfd in spares:     # died without a call (asked to go, say)
                    del spares[pidfd]
                    os.close(pidfd)
                    leaving = max(0, leaving - 1)
    finally:
        _leave(path, bound, lsock, spares, pid_file if lock_fd is not None else None, lock_fd)


class Pool:
    """How many spares to fork now.  Calls come in bursts (an engine's
    create, start, state, kill, delete; a pod's containers): a fork and its
    warm-up (~5 ms of CPU, mostly copy-on-write faults) during a burst take
    a core from the burst's own calls.  So during a burst a spare is forked
    only when fewer than WANTED are left (the pipeline a steady stream of
    calls needs: each spare then has a few calls' time to warm up), and the
    rest once the burst is over (QUIET), up to WANTED more than the largest
    of the recent bursts (at most GROWTH x WANTED): the next burst like them
    forks nothing until it is over."""

    def __init__(self, wanted):
        import collections
        self.wanted = max(1, wanted)
        self.burst = 0
        self.sizes = collections.deque(maxlen=BURSTS)

    def took(self):
        self.burst += 1

    def target(self):
        return min(self.wanted + max(self.sizes, default=0), GROWTH * self.wanted)

    def trims(self, have):
        """After a long quiet: the bursts are forgotten, and how many of HAVE
        spares are to go (down to WANTED)."""
        self.sizes.clear()
        return max(0, have - self.wanted)

    def forks(self, have, quiet):
        if quiet and self.burst:
            self.sizes.append(self.burst)
            self.burst = 0
        return max(0, (self.target() if quiet else self.wanted) - have)


def _ask_to_leave(path, n):
    """Ask N spares to go; how many were asked.  Each ask is a connection from
    this process, which the spare that accepts it knows by its pid
    (SO_PEERCRED: `_accept_root`) and exits on, having taken no call.  Not a
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
        conn, peer_pid = _accept_root(lsock)
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


def _set_environ(env, now):
    """Make the environment ENV, NOW being what it is (a copy made before the
    call): only what differs is set or removed.  os.environ's own iteration
    and lookups decode every name and value, ~0.1 ms in a fresh worker."""
    for k in now:
        if k not in env:
            del os.environ[k]
    for k, v in env.items():
        if now.get(k) != v:
            os.environ[k] = v


class Ready:
    """What a spare finds while no call waits, so that its call only compares:
    the signal resets (`_signal_resets`), its own namespaces (`_join_caller`)
    and its environment (`_set_environ`)."""

    def __init__(self):
        self.resets = _signal_resets()
        self.namespaces = {}
        for ns in ("user", *CALLER_NAMESPACES):
            try:
                self.namespaces[ns] = os.stat(f"/proc/self/ns/{ns}").st_ino
            except OSError:
                pass  # the call looks again, and says why it cannot serve
        self.environ = dict(os.environ)


def _accept_root(lsock):
    """The next connection from root (or the node's own uid), and its pid; others are closed
    (their front-end goes cold, and fails there as non-root).  One from the
    planner itself asks this spare to go (`_ask_to_leave`)."""
    mine = (0, os.geteuid())
    while True:
        try:
            conn, _ = lsock.accept()
        except InterruptedError:
            continue
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if pid == os.getppid():
            os._exit(0)
        if uid in mine:
            return conn, pid
        conn.close()


def work(conn, peer_pid, ready):
    """One call in a forked worker: become the caller (PEER_PID, by SO_PEERCRED
    at accept), run the CLI, say EXIT.  READY: what the spare found before the
    call (`Ready`).  A front-end gone before GO (its deadline passed) ends the
    worker with nothing run."""
    try:
        data = recv_packet(conn)  # HELLO carries no descriptors (those come with GO)
        f = parse(data)
        if len(f) < 5 or f[0] != "HELLO":
            return 1
        if f[1] != BUILD_ID:  # before OK: a front-end of any build then goes cold
            conn.send(fields("NO", f"planner build {BUILD_ID}, front-end build {f[1]}"))
            return 0
        # Taken: the front-end's GO (with the caller's descriptors) is on its
        # way while we get ready; a NO from here on still sends it cold.
        conn.send(fields("OK", os.getpid()))
        cwd, nums = f[2], [int(n) for n in f[3].split(",") if n]
        argc = int(f[4])
        argv = f[5:5 + argc]
        envc = int(f[5 + argc])
        env = f[6 + argc:6 + argc + envc]
        if len(argv) != argc or len(env) != envc:
            conn.send(fields("NO", "malformed HELLO"))
            return 0
        why = _join_caller(peer_pid, ready.namespaces)
        if why:
            conn.send(fields("NO", why))
            return 0
        try:
            os.chdir(cwd)
        except OSError:
            conn.send(fields("NO", f"cannot enter {cwd}"))
            return 0
    except (OSError, ValueError, IndexError):
        return 0  # the front-end went (cold), or sent nonsense: nothing was done
    import signal
    for sig, how in ready.resets:
        try:
            signal.signal(sig, how)
        except (OSError, ValueError):
            pass
    _set_environ(dict(e.split("=", 1) for e in env if "=" in e), ready.environ)
    try:
        data, fds, _, _ = socket.recv_fds(conn, 64, MAX_FDS)
    except OSError:
        return 0
    if parse(data) != ["GO"] or len(fds) != len(nums):
        for fd in fds:
            os.close(fd)
        return 0  # no GO: the front-end gave up on this call; it runs nothing here
    # Become the caller: its descriptors at their own numbers, nothing else of ours.
    top = max(nums + [conn.fileno(), *fds, 2]) + 1
    moved = []
    for i, fd in enumerate(fds):
        moved.append(os.dup2(fd, top + i, inheritable=False))
        os.close(fd)
    csock = socket.socket(fileno=os.dup2(conn.fileno(), top + len(fds), inheritable=False))
    conn.detach()
    os.closerange(0, top)
    for num, fd in zip(nums, moved):
        os.dup2(fd, num, inheritable=True)
    for fd in moved:
        os.close(fd)
    _fresh_stdio()
    from ..runtime import parent
    parent.use(Remote(csock))
    sys.argv = argv  # the front-end's: argv[0] is the `emergence` the caller ran
    answered = []

    def answer(code, final=False):
        """Tell the front-end the call is over (once)."""
        if answered:
            return
        answered.append(code)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        # Our copies of the caller's descriptors must close before it exits:
        # engines read the runtime's output until EOF.  At the end, all of ours
        # below the socket go; an early answer (a CNI DEL) closes only the
        # caller's own, as it still holds Relay's lock and netlink sockets.
        if final:
            os.closerange(0, csock.fileno())
        else:  # /dev/null in their place: a later open must not land on 0-2
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            for num in nums:
                os.dup2(null, num, inheritable=False)
            os.close(null)
        try:
            csock.send(fields("EXIT", code))
        except OSError:
            pass
    _die_with_caller(csock, answered)
    try:
        if os.path.basename(argv[0]) == "emergence-cni":
            # a CNI DEL may answer before its last kernel work (relay/cni.py)
            from ..relay.cni import main as cni_main
            code = cni_main(answer=answer)
        else:
            from .. import cli
            code = cli.main(argv[1:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    answer(code, final=True)
    return 0


def _die_with_caller(csock, answered):
    """A cold call is the caller's own process: a kill -9 of it ends the call.
    A warm call must too, or a long verb (`cluster join`, `pipeline run`, `net
    agent`) whose front-end was killed runs on for ever.  The front-end's end
    of the socket closes only when it dies or after our EXIT; a thread waits
    for that hang-up and, if no EXIT was sent, kills this worker as the
    front-end's death would have killed the cold process."""
    import _thread
    import select

    def watch():
        p = select.poll()
        p.register(csock.fileno(), 0)  # only POLLHUP/POLLERR, never the replies
        while True:
            try:
                events = p.poll()
            except InterruptedError:
                continue
            if any(e & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                   for _, e in events):
                break
        if not answered:
            os.kill(os.getpid(), 9)
    _thread.start_new_thread(watch, ())


def _signal_resets():
    """What sets every signal as in the cold path's fresh Python process -- its
    default, but SIGPIPE and SIGXFSZ ignored and SIGINT raising KeyboardInterrupt
    (a ^C during `create` then removes what it made, as cold): (signal,
    disposition) for those Python knows as changed (not glibc's own, between 31 and SIGRTMIN).  A
    spare finds them after its warm-up, so a call only sets a few."""
    import signal
    out = []
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP) or 31 < sig < signal.SIGRTMIN:
            continue
        try:
            now = signal.getsignal(sig)
        except ValueError:
            continue
        want = signal.SIG_IGN if sig in (signal.SIGPIPE, signal.SIGXFSZ) else \
            signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        if now is not want:
            out.append((sig, want))
    return out


# The namespaces a worker takes from its caller, the mount namespace last (it
# resets the root and cwd).  A user namespace of its own means a caller we do
# not serve: the front-end then takes the cold path.
CALLER_NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")


_libc_handle = None


def _libc():
    """libc through ctypes, made once (in the planner: a CDLL builds classes, which
    its workers would otherwise each build again when a call needs setns)."""
    global _libc_handle
    if _libc_handle is None:
        import ctypes
        _libc_handle = ctypes.CDLL(None, use_errno=True)
        _libc_handle.setns, _libc_handle.prctl  # noqa: B018 - their function pointers
    return _libc_handle


def _join_caller(pid, ours):
    """Enter the caller's namespaces where they differ from ours (OURS: their
    inode numbers, as found before the call), so the call sees the files,
    network and cgroups the caller sees (an engine may run in a mount
    namespace of its own).  Returns why not, or None."""
    def ino(who, ns):
        if who == "self" and ns in ours:
            return ours[ns]
        return os.stat(f"/proc/{who}/ns/{ns}").st_ino

    try:
        if ino(pid, "user") != ino("self", "user"):
            return "the caller is in another user namespace"
        todo = [(ns, os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
                for ns in CALLER_NAMESPACES if ino(pid, ns) != ino("self", ns)]
    except OSError as e:
        return f"cannot read the caller's namespaces: {e}"
    if not todo:
        return None
    import ctypes
    setns = _libc().setns
    try:
        for ns, fd in todo:
            if setns(fd, 0) != 0:
                return f"cannot enter the caller's {ns} namespace: " \
                       f"{os.strerror(ctypes.get_errno())}"
    finally:
        for _, fd in todo:
            os.close(fd)
    return None


def _fresh_stdio():
    """sys.stdin/out/err over the caller's 0, 1, 2, buffered as a cold start would."""
    import io
    for num, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(num)
        except OSError:
            setattr(sys, name, None)
            continue
        raw = io.FileIO(num, mode, closefd=False)
        line = name == "stderr" or raw.isatty()
        buf = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        setattr(sys, name, io.TextIOWrapper(buf, encoding="utf-8", errors="surrogateescape"
                                            if name != "stderr" else "backslashreplace",
                                            line_buffering=line, write_through=name == "stderr"))


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
