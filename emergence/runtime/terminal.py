"""Terminals: the console socket handshake, and proxying the caller's terminal.

With --console-socket, the shim sends the pty master over that unix socket
and the caller (conmon, containerd) owns it.  Without one, a foreground
`run`/`exec` keeps the master itself and copies bytes between it and its
own stdio, in raw mode, passing window-size changes on (as runc does).
"""

import fcntl
import os
import select
import socket

from ..errors import EmergenceError
from . import parent


def connect(path):
    """A connected socket to --console-socket PATH."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise EmergenceError(f"--console-socket {path}: cannot connect: {e.strerror}") from None
    return s


class Console:
    """The console end the shim writes to, as an fd number planned into the shim."""

    def __init__(self, socket_path=None, min_fd=3):
        if socket_path:
            self.sock, self.ours = connect(socket_path), None
        else:
            self.ours, self.sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.fd = fcntl.fcntl(self.sock.fileno(), fcntl.F_DUPFD_CLOEXEC, min_fd)
        self.sock.close()

    def size(self, process):
        """Rows and columns: process.consoleSize, else those of our own terminal."""
        cs = process.get("consoleSize")
        if cs:
            return cs["height"], cs["width"]
        if self.ours is not None:
            try:
                size = os.get_terminal_size(0)
                return size.lines, size.columns
            except OSError:
                pass
        return 0, 0

    def handed_over(self):
        """After the shim used our fd: close it; return the pty master if we keep it."""
        os.close(self.fd)
        if self.ours is None:
            return None
        try:
            _, fds, _, _ = socket.recv_fds(self.ours, 64, 1)
        finally:
            self.ours.close()
        if not fds:
            raise EmergenceError("the container did not send its terminal")
        return fds[0]

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass
        if self.ours is not None:
            self.ours.close()


def proxy(master, pid):
    """Copy stdin to the pty and the pty to stdout until PID exits; return its status."""
    import signal
    import termios
    import tty

    stdin_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_tty else None

    def resize(*_):
        if stdin_tty:
            try:
                ws = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(master, termios.TIOCSWINSZ, ws)
            except OSError:
                pass

    old_winch = signal.signal(signal.SIGWINCH, resize)
    pidfd = os.pidfd_open(pid)
    try:
        if stdin_tty:
            tty.setraw(0)
        resize()
        watch = [master, pidfd, 0]
        while True:
            ready, _, _ = select.select(watch, [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave end is closed
                    data = b""
                if data:
                    os.write(1, data)
                else:
                    watch.remove(master)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    watch.remove(0)
                    os.write(master, b"\x04")  # EOF for the program reading the pty
            if pidfd in ready:
                _drain(master)
                break
        _, status = parent.waitpid(pid, 0)
        return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    finally:
        os.close(pidfd)
        signal.signal(signal.SIGWINCH, old_winch)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)


def _drain(master):
    os.set_blocking(master, False)
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        os.write(1, data)
