"""How the process is scheduled: process.scheduler (sched_setattr),
process.ioPriority (ioprio_set) and linux.memoryPolicy (set_mempolicy).

Each config object becomes the numbers of one shim operation, checked here
so that a bad value is one clear line before anything is created.
"""

from ..errors import ConfigError, shown

POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
            "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_WHO_PGRP = 2  # the spec: the whole process group
MPOL_MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
              "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
MPOL_FLAGS = {"MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14,
              "MPOL_F_STATIC_NODES": 1 << 15}
MPOL_NEED_NODES = {"MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY",
                   "MPOL_WEIGHTED_INTERLEAVE"}
MPOL_NO_NODES = {"MPOL_DEFAULT", "MPOL_LOCAL"}


def _fail(where, msg):
    raise ConfigError(f"config.json: {where}: {msg}")


def sched_args(s):
    """process.scheduler -> (policy, flags, nice, priority, runtime, deadline, period)."""
    where = "process.scheduler"
    name = s["policy"]
    if name == "SCHED_ISO":
        _fail(f"{where}.policy", "SCHED_ISO is not implemented by Linux; use another policy")
    policy = POLICIES[name]
    nice = s.get("nice", 0)
    if not -20 <= nice <= 19:
        _fail(f"{where}.nice", f"{nice} is outside -20..19")
    prio = s.get("priority", 0)
    if name in ("SCHED_FIFO", "SCHED_RR"):
        if not 1 <= prio <= 99:
            _fail(f"{where}.priority", f"{name} needs a priority in 1..99, got {prio}")
    elif prio:
        _fail(f"{where}.priority", f"{name} takes no priority (only SCHED_FIFO and SCHED_RR "
              "do); remove it")
    flags = 0
    for f in s.get("flags", ()):
        if f not in SCHED_FLAGS:
            _fail(f"{where}.flags", f"unknown flag {shown(f)} (known: {', '.join(SCHED_FLAGS)})")
        flags |= SCHED_FLAGS[f]
    runtime, deadline, period = (s.get(k, 0) for k in ("runtime", "deadline", "period"))
    if name == "SCHED_DEADLINE":
        period = period or deadline
        if not runtime or not deadline:
            _fail(where, "SCHED_DEADLINE needs runtime and deadline (nanoseconds)")
        if not runtime <= deadline <= period:
            _fail(where, f"SCHED_DEADLINE needs runtime <= deadline <= period, got {runtime}, "
                  f"{deadline}, {period}")
        if runtime < 1024:
            _fail(f"{where}.runtime", "SCHED_DEADLINE needs a runtime of at least 1024 ns")
    elif runtime or deadline or period:
        _fail(where, "runtime, deadline and period are for SCHED_DEADLINE only; remove them")
    return policy, flags, nice, prio, runtime, deadline, period


def ioprio_args(p):
    """process.ioPriority -> (which, who, ioprio) for ioprio_set."""
    prio = p.get("priority", 0)
    if not 0 <= prio <= 7:
        _fail("process.ioPriority.priority", f"{prio} is outside 0 (highest)..7 (lowest)")
    return IOPRIO_WHO_PGRP, 0, IOPRIO_CLASSES[p["class"]] << 13 | prio


def parse_list(text, where):
    """'0-3,7' -> {0, 1, 2, 3, 7}."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            _fail(where, f"{shown(text)} is not a list like 0-3,7")
        if a > b or a < 0:
            _fail(where, f"{shown(part)} is not a range")
        out.update(range(a, b + 1))
    return out


def _online_nodes():
    try:
        with open("/sys/devices/system/node/online") as f:
            return parse_list(f.read(), "the host's online nodes")
    except OSError:
        return {0}


def mempolicy_args(m):
    """linux.memoryPolicy -> (mode | flags, maxnode, nodemask words...)."""
    where = "linux.memoryPolicy"
    mode_name = m["mode"]
    if mode_name not in MPOL_MODES:
        _fail(f"{where}.mode", f"{shown(mode_name)} is not one of {', '.join(MPOL_MODES)}")
    mode = MPOL_MODES[mode_name]
    for f in m.get("flags", ()):
        if f not in MPOL_FLAGS:
            _fail(f"{where}.flags", f"unknown flag {shown(f)} (known: {', '.join(MPOL_FLAGS)})")
        mode |= MPOL_FLAGS[f]
    nodes = parse_list(m.get("nodes", ""), f"{where}.nodes")
    if mode_name in MPOL_NO_NODES and nodes:
        _fail(f"{where}.nodes", f"{mode_name} takes no nodes; remove them")
    if mode_name in MPOL_NEED_NODES and not nodes:
        _fail(f"{where}.nodes", f"{mode_name} needs at least one node")
    missing = nodes - _online_nodes() if not m.get("flags") else set()
    if missing:
        _fail(f"{where}.nodes", f"node(s) {sorted(missing)} are not online on this host "
              f"(online: {sorted(_online_nodes())})")
    if not nodes:
        return mode, 0
    words = [0] * (max(nodes) // 64 + 1)
    for n in nodes:
        words[n // 64] |= 1 << (n % 64)
    return (mode, len(words) * 64 + 1, *(hex(w) for w in words))


def check(config):
    """All three, for validation before anything is created."""
    proc = config.get("process") or {}
    if proc.get("scheduler"):
        sched_args(proc["scheduler"])
    if proc.get("ioPriority"):
        ioprio_args(proc["ioPriority"])
    if config.get("linux", {}).get("memoryPolicy"):
        mempolicy_args(config["linux"]["memoryPolicy"])
