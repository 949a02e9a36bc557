"""`start`: release the init from the start barrier so it execs the process."""

import os
import select

from .errors import EmergenceError, StateError
from .state import FIFO, Container


def start(root, container_id):
    with Container.open(root, container_id) as c:
        status = c.status()
        if status != "created":
            raise StateError(f"container {container_id!r} is {status}; only a created "
                             "container can be started")
        fifo = os.path.join(c.dir, FIFO)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                if poller.poll(100) and os.read(fd, 1):
                    break
                if not c.init_alive():
                    raise EmergenceError(f"container {container_id!r}: its init exited before "
                                         "it could start")
        finally:
            os.close(fd)
        os.unlink(fifo)
