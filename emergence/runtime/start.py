"""`start`: release the init from the start barrier so it execs the process.

The init, blocked opening exec.fifo for writing, gets through once we open it
for reading; it then runs the startContainer hooks and writes "0", or an
error line, before it closes the fifo and execs.  poststart hooks follow.

A `start` killed midway needs no record: once the init is released the fifo
may stay, but `state` asks the kernel whether the init still runs the shim
(created) or has exec'd the process (running); an init released with nobody
left to read its "0" gets EPIPE and exits (stopped).
"""

import os
import select

from ..errors import EmergenceError
from .state import FIFO, Container, crashpoint


def _released(c, fifo):
    """Open the barrier; return what the init said through it."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    crashpoint("start:released")
    said = b""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            # POLLHUP only comes once a writer came and went, so an empty read
            # after poll is the init closing the fifo.
            if poller.poll(100):
                chunk = os.read(fd, 4096)
                if not chunk:
                    return said
                said += chunk
            elif not c.init_alive():
                return said
    finally:
        os.close(fd)


def start(root, container_id):
    """Release the init.  If a poststart hook fails, the container is stopped and
    destroyed (lifecycle step 12: its cgroup, state and poststop hooks), as
    runtime.md says, and the error is raised.  A failed startContainer hook
    leaves it stopped for `delete`, as runc does (the init never ran the process)."""
    try:
        _start(root, container_id)
    except HookFailed as e:
        from .delete import delete
        delete(root, container_id, force=True)
        raise e.error from None


class HookFailed(Exception):
    """A poststart hook failed; the container must go (after the lock is released)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _start(root, container_id):
    from .kill import send
    notify = None
    try:
        with Container.open(root, container_id) as c:
            c.require(("created",), "only a created container can be started")
            crashpoint("start:locked")
            if os.environ.get("NOTIFY_SOCKET"):  # made before the release, as runc
                from . import sdnotify
                notify = sdnotify.listen(c.dir)
            _release(c, container_id, send)
        if notify is not None:  # the lock is let go: kill, state, delete still work
            sdnotify.relay(notify, os.environ["NOTIFY_SOCKET"], c.pid, c.init_alive)
    finally:
        if notify is not None:
            notify.close()


def _stop(c, send, patience=2.0):
    """SIGKILL the init and wait (briefly) until it is dead, so that a failed
    `start` returns with the container stopped: a `state` right after it must
    not see the init still running (the signal is delivered asynchronously)."""
    import time
    if not send(c.pid, c.data.get("startTime"), 9):
        return
    deadline = time.monotonic() + patience
    while c.init_alive() and time.monotonic() < deadline:
        time.sleep(0.001)


def _release(c, container_id, send):
    said = _released(c, os.path.join(c.dir, FIFO))
    crashpoint("start:said")
    os.unlink(os.path.join(c.dir, FIFO))
    crashpoint("start:unlinked")
    if not said.startswith(b"0"):
        _stop(c, send)  # stop the container, as the spec says
        text = said.decode(errors="replace").strip()
        if text.startswith("error "):
            from .launch import ShimError
            code, _, what = text[len("error "):].partition(" ")
            raise ShimError(int(code), what)  # stopped; `delete` runs poststop
        raise EmergenceError(f"container {container_id!r}: its init exited before it "
                             "could start")
    hooks = c.saved_hooks()
    if hooks.get("poststart"):
        from . import hooks as hk
        try:
            hk.run("poststart", hooks["poststart"],
                   hk.oci_state(c.data, "running", c.pid))
        except EmergenceError as e:
            _stop(c, send)
            raise HookFailed(e) from None

