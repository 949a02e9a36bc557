"""`pause` / `resume`: freeze and thaw every process of a container."""

from .cgroups.freezer import set_frozen
from .state import Container


def pause(root, container_id):
    with Container.open(root, container_id) as c:
        c.require(("running",), "only a running container can be paused")
        set_frozen(c.data.get("freezer"), True)


def resume(root, container_id):
    with Container.open(root, container_id) as c:
        c.require(("paused",), "it is not paused")
        set_frozen(c.data.get("freezer"), False)
