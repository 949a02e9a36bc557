"""`update`: change a running container's resource limits in place."""

import os

from .. import fastjson
from ..errors import ConfigError, shown
from . import config as config_mod
from .state import Container, write_atomic

UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

# flag -> (section, key, parser)
FLAGS = {
    "memory": ("memory", "limit", "bytes"),
    "memory-reservation": ("memory", "reservation", "bytes"),
    "memory-swap": ("memory", "swap", "bytes"),
    "kernel-memory": ("memory", "kernel", "bytes"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "bytes"),
    "cpu-share": ("cpu", "shares", "int"),  # runc's spelling; --cpu-shares too
    "cpu-quota": ("cpu", "quota", "int"),
    "cpu-period": ("cpu", "period", "int"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "pids-limit": ("pids", "limit", "int"),
    "blkio-weight": ("blockIO", "weight", "int"),
}


def parse_bytes(text):
    """'512', '64k', '100m', '1G', '-1' -> bytes."""
    t = text.strip().lower()
    if t == "-1":
        return -1
    t = t[:-1] if t.endswith("b") and len(t) > 1 and t[-2] in "kmgt" else t
    unit = t[-1] if t and t[-1] in UNITS else ""
    number = t[:-1] if unit else t
    try:
        return int(float(number) * UNITS[unit])
    except (ValueError, OverflowError):  # OverflowError: inf
        raise ConfigError(f"{shown(text)} is not a size (use e.g. 512, 64k, 100m, 1g)") from None


def resources_from_flags(opts):
    res = {}
    for flag, (section, key, kind) in FLAGS.items():
        if flag not in opts:
            continue
        raw = opts[flag]
        if kind == "bytes":
            value = parse_bytes(raw)
        elif kind == "int":
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"--{flag} {shown(raw)}: must be a number") from None
        else:
            value = raw
        res.setdefault(section, {})[key] = value
    return res


def resources_from_file(path):
    try:
        with (open(path, "rb") if path != "-" else os.fdopen(0, "rb", closefd=False)) as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"-r {path}: {e.strerror}") from None
    res = config_mod.parse(raw, f"-r {path}")
    if not isinstance(res, dict):
        raise ConfigError(f"-r {path}: must hold a JSON object (as linux.resources)")
    return res


def _merge(old, new):
    out = dict(old)
    for k, v in new.items():
        out[k] = _merge(old.get(k, {}), v) if isinstance(v, dict) and isinstance(
            old.get(k), dict) else v
    return out


def update(root, container_id, resources):
    from .cgroups.hierarchy import discover
    from .cgroups.manager import Cgroup
    try:
        config_mod.RESOURCES(resources, "linux.resources")
    except ConfigError as e:
        raise ConfigError(str(e).replace("config.json: ", "update: ", 1)) from None
    if not resources:
        raise ConfigError("update: nothing to change (give flags like --memory, or -r FILE)")
    with Container.open(root, container_id) as c:
        c.require(("created", "running", "paused"), "only a live container can be updated")
        Cgroup(discover(), c.data["cgroup"]["rel"]).apply(resources)
        config = c.saved_config()  # kept current, so exec and events see the new limits
        linux = config.setdefault("linux", {})
        linux["resources"] = _merge(linux.get("resources", {}), resources)
        write_atomic(os.path.join(c.dir, "config.json"), fastjson.dumps(config).encode())
