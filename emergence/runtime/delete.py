"""`delete`: remove a stopped (or, with --force, any) container and all it made.

The order makes a `delete` killed midway safe to run again: processes, then the
cgroup, the bundle `run --image` made, the poststop hooks (Relay's detach is
one: idempotent), and the state dir last of all, so the record of what remains
outlives every step but the final one.
"""

import os
import select
import time

from ..errors import NotFound, StateError
from .kill import send
from .state import Container, crashpoint


def _wait_gone(pid, timeout=5.0):
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        p.poll(int(timeout * 1000))
    finally:
        os.close(pidfd)


def _remove_leftovers(root, container_id):
    """What a create or delete killed midway leaves without a state: the hidden
    claim (nothing was made yet), an empty directory (everything was removed)."""
    from .state import claim_path, remove_stale_claim
    remove_stale_claim(claim_path(root, container_id))
    try:
        os.rmdir(os.path.join(root, container_id))
    except OSError:
        pass  # not there, or not empty: then it is not ours to remove


def delete(root, container_id, force=False):
    from .cgroups.hierarchy import discover
    from .cgroups.manager import Cgroup
    try:
        c = Container.open(root, container_id, tolerate_corrupt=force)
    except NotFound:
        if force:
            _remove_leftovers(root, container_id)
            return
        raise
    with c:
        status = c.status()
        if status not in ("stopped", "created") and not force:
            # a created container's init only waits at the barrier: runc and crun
            # delete it without --force
            raise StateError(f"container {container_id!r} is {status}; stop it first "
                             "(kill) or use delete --force")
        if status == "paused":
            from .cgroups.freezer import set_frozen
            set_frozen(c.data.get("freezer"), False)  # a frozen task cannot die
        if c.init_alive():
            send(c.pid, c.data.get("startTime"), 9)
            _wait_gone(c.pid)
        crashpoint("delete:killed")
        poststop = c.saved_hooks().get("poststop") if not c.corrupt else None
        cg_data = c.data.get("cgroup")
        if c.corrupt:
            import sys
            sys.stderr.write(f"emergence: warning: state of {container_id!r} was corrupt; "
                             "removing its default cgroup and state only\n")
            cg_data = {"rel": f"emergence/{container_id}", "created": []}
        if cg_data:
            cg = Cgroup(discover(), cg_data["rel"], cg_data.get("created", []))
            deadline = time.monotonic() + 5
            pids = cg.pids()
            while pids and time.monotonic() < deadline:
                for pid in pids:
                    send(pid, None, 9)
                time.sleep(0.01)
                pids = cg.pids()
            cg.remove()
        crashpoint("delete:cgroup")
        image_bundle = os.path.join(root, ".bundles", container_id)  # from run --image
        if os.path.isdir(image_bundle):
            import shutil
            shutil.rmtree(image_bundle, ignore_errors=True)
        if poststop:
            from . import hooks as hk
            hk.run_warning_only("poststop", poststop, hk.oci_state(c.data, "stopped", 0))
        crashpoint("delete:hooks")
        c.remove_dir()
