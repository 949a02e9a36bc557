"""`ps`: the processes of a container, as pids (json) or as `ps` prints them."""

import subprocess

from ..errors import EmergenceError
from .state import Container


def container_pids(root, container_id):
    from .cgroups.hierarchy import discover
    from .cgroups.manager import Cgroup
    with Container.open(root, container_id, lock=False) as c:
        if c.status() == "stopped":
            return []
        cg = c.data.get("cgroup")
        return Cgroup(discover(), cg["rel"]).pids() if cg else []


def ps(root, container_id, fmt="table", ps_args=()):
    pids = container_pids(root, container_id)
    if fmt == "json":
        from .. import fastjson
        return fastjson.dumps(pids) + "\n"
    args = list(ps_args) or ["-ef"]
    try:
        out = subprocess.run(["ps", *args], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        raise EmergenceError("`ps` is not installed (apt-get install procps)") from None
    except subprocess.CalledProcessError as e:
        raise EmergenceError(f"ps {' '.join(args)} failed: {e.stderr.strip()}") from None
    lines = out.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise EmergenceError("the ps arguments must keep the PID column")
    col = header.index("PID")
    wanted = set(pids)
    rows = [line for line in lines[1:]
            if len(line.split()) > col and line.split()[col].isdigit()
            and int(line.split()[col]) in wanted]
    return "\n".join([lines[0], *rows]) + "\n"
