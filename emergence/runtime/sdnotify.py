"""sd_notify through a container, as runc does (podman `--sdnotify`, systemd
units that run a container with `Type=notify`).

When the runtime's own environment has NOTIFY_SOCKET, `create` makes the
directory `notify/` in the container's state dir, binds it read-only at
/run/notify and sets NOTIFY_SOCKET=/run/notify/notify.sock in the process's
environment.  `start` binds a datagram socket there before it releases the
init, and relays the container's `READY=` line to the host's socket, then
`MAINPID=` with the init's pid as the host sees it (systemd watches that
pid), and returns; what the container sends before READY is dropped and
after it nobody listens, as with runc.  Only imported when NOTIFY_SOCKET is
set.
"""

import os
import socket

from ..errors import EmergenceError

DIR = "notify"
NAME = "notify.sock"
IN_CONTAINER = "/run/notify"


def prepare(config, state_dir):
    """At create: the socket's directory and the bind mount that shows it inside."""
    proc = config.get("process")
    if proc is None:
        return
    d = os.path.join(state_dir, DIR)
    os.mkdir(d)
    os.chmod(d, 0o755)  # the process's user must reach the socket
    config.setdefault("mounts", []).append({
        "destination": IN_CONTAINER, "type": "bind", "source": d,
        "options": ["bind", "nosuid", "noexec", "nodev", "ro"]})
    env = [e for e in proc.get("env", ()) if not e.startswith("NOTIFY_SOCKET=")]
    proc["env"] = env + [f"NOTIFY_SOCKET={IN_CONTAINER}/{NAME}"]


def listen(state_dir):
    """At start, before the release: the container's socket, or None if create
    made no notify directory (NOTIFY_SOCKET was not set then)."""
    d = os.path.join(state_dir, DIR)
    if not os.path.isdir(d):
        return None
    path = os.path.join(d, NAME)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(path)
        os.chmod(path, 0o777)  # any user in the container may notify, as runc
    except OSError:
        s.close()
        raise
    return s


def _address(host):
    return "\0" + host[1:] if host.startswith("@") else host  # "@": an abstract socket


def relay(sock, host, pid, alive):
    """Wait for the container's READY= (or its init's end) and pass it on to HOST."""
    import select
    with sock:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while True:
            if not poller.poll(100):
                if not alive():
                    return  # it exited without READY: nothing to say, as runc
                continue
            data = sock.recv(4096)
            if data.startswith(b"READY="):
                break
        out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            addr = _address(host)
            out.sendto(data.split(b"\n", 1)[0] + b"\n", addr)
            out.sendto(b"MAINPID=%d\n" % pid, addr)
        except OSError as e:
            raise EmergenceError(f"the container started but its READY could not be passed on "
                                 f"to NOTIFY_SOCKET {host}: {e.strerror or e}") from None
        finally:
            out.close()
