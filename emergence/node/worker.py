"""A planner's worker: one call, as the cold path's process would run it.

A spare (forked by the planner, `planner.py`) waits in accept for one
connection; `work` then takes the caller's namespaces, cwd, environment,
signals and descriptors at their own numbers, and runs `cli.main` (or the CNI
plugin) exactly as a cold start would, and exits.  Only spawning the shim and
reaping children go back to the front-end (`Remote`, installed into
`runtime/parent.py`), which must stay the parent of the container.

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
import socket
import struct
import sys

from . import BUILD_ID

MAX_FDS = 250  # descriptors a call may hand over


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


def accept_root(lsock):
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


def libc():
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
    setns = libc().setns
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
