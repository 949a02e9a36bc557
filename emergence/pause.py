"""`pause` / `resume`: freeze and thaw every process of a container."""

from .cgroups import set_frozen
from .errors import StateError
from .state import Container


def pause(root, container_id):
    with Container.open(root, container_id) as c:
        status = c.status()
        if status != "running":
            raise StateError(f"container {container_id!r} is {status}; only a running "
                             "container can be paused")
        set_frozen(c.data.get("freezer"), True)


def resume(root, container_id):
    with Container.open(root, container_id) as c:
        status = c.status()
        if status != "paused":
            raise StateError(f"container {container_id!r} is {status}, not paused")
        set_frozen(c.data.get("freezer"), False)
