"""linux.resources as cgroup file writes: one pure function per version
(`v1_settings`, `v2_settings`), unit-tested apart from the file system."""

from ...errors import ConfigError


def _dev(d):
    return f"{d['major']}:{d['minor']}"


# (section of linux.resources, key, controller, v1 file), in the order to write:
# a limit before the memsw limit that must not be lower, a period before its quota.
V1_FILES = [
    ("memory", "limit", "memory", "memory.limit_in_bytes"),
    ("memory", "reservation", "memory", "memory.soft_limit_in_bytes"),
    ("memory", "swap", "memory", "memory.memsw.limit_in_bytes"),
    ("memory", "kernel", "memory", "memory.kmem.limit_in_bytes"),
    ("memory", "kernelTCP", "memory", "memory.kmem.tcp.limit_in_bytes"),
    ("memory", "swappiness", "memory", "memory.swappiness"),
    ("cpu", "shares", "cpu", "cpu.shares"),
    ("cpu", "period", "cpu", "cpu.cfs_period_us"),
    ("cpu", "quota", "cpu", "cpu.cfs_quota_us"),
    ("cpu", "burst", "cpu", "cpu.cfs_burst_us"),
    ("cpu", "realtimePeriod", "cpu", "cpu.rt_period_us"),
    ("cpu", "realtimeRuntime", "cpu", "cpu.rt_runtime_us"),
    ("cpu", "idle", "cpu", "cpu.idle"),
    ("cpu", "cpus", "cpuset", "cpuset.cpus"),
    ("cpu", "mems", "cpuset", "cpuset.mems"),
    ("blockIO", "weight", "blkio", "blkio.weight"),
    ("blockIO", "leafWeight", "blkio", "blkio.leaf_weight"),
]


def v1_settings(res):
    """[(controller, file, value)] for cgroup v1, in the order they must be written."""
    out = []
    for section, key, controller, file in V1_FILES:
        value = res.get(section, {}).get(key)
        if value is not None and value != "":
            out.append((controller, file, value))
    if res.get("memory", {}).get("disableOOMKiller"):
        out.append(("memory", "memory.oom_control", 1))
    if "pids" in res:
        limit = res["pids"]["limit"]
        out.append(("pids", "pids.max", limit if limit > 0 else "max"))
    blkio = res.get("blockIO", {})
    for d in blkio.get("weightDevice", ()):
        if "weight" in d:
            out.append(("blkio", "blkio.weight_device", f"{_dev(d)} {d['weight']}"))
        if "leafWeight" in d:
            out.append(("blkio", "blkio.leaf_weight_device", f"{_dev(d)} {d['leafWeight']}"))
    for key, file in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                      ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                      ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                      ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for d in blkio.get(key, ()):
            out.append(("blkio", file, f"{_dev(d)} {d['rate']}"))
    for h in res.get("hugepageLimits", ()):
        out.append(("hugetlb", f"hugetlb.{h['pageSize']}.limit_in_bytes", h["limit"]))
    net = res.get("network", {})
    if "classID" in net:
        out.append(("net_cls", "net_cls.classid", net["classID"]))
    for p in net.get("priorities", ()):
        out.append(("net_prio", "net_prio.ifpriomap", f"{p['name']} {p['priority']}"))
    if "devices" in res:
        out.extend(("devices", f, v) for f, v in device_rules(res["devices"]))
    return out


def device_rules(rules, extra_allow=()):
    """v1 devices.allow/deny writes: start from deny-all, then the rules in order."""
    out = [("devices.deny", "a")]
    for r in list(rules) + list(extra_allow):
        typ = r.get("type", "a") or "a"
        major = r.get("major", -1)
        minor = r.get("minor", -1)
        spec = "a" if typ == "a" and major == -1 and minor == -1 else \
            f"{typ} {'*' if major in (None, -1) else major}:{'*' if minor in (None, -1) else minor}"
        spec = f"{spec} {r.get('access', 'rwm') or 'rwm'}" if spec != "a" else "a"
        out.append(("devices.allow" if r["allow"] else "devices.deny", spec))
    return out


def shares_to_weight(shares):
    """cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000)."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight):
    """v1 blkio weight (10..1000) to v2 io.weight (1..10000)."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def v2_settings(res):
    """[(controller, file, value)] for cgroup v2; 'devices' needs eBPF and is not here."""
    out = []
    mem = res.get("memory", {})
    limit = mem.get("limit")
    if limit is not None:
        out.append(("memory", "memory.max", "max" if limit < 0 else limit))
    if "reservation" in mem:
        r = mem["reservation"]
        out.append(("memory", "memory.low", "max" if r < 0 else r))
    if "swap" in mem:
        swap = mem["swap"]
        if swap < 0:
            out.append(("memory", "memory.swap.max", "max"))
        elif limit is None or limit < 0:
            raise ConfigError("config.json: linux.resources.memory.swap: on cgroup v2 a swap "
                              "limit needs a memory limit too (swap is memory+swap)")
        elif swap < limit:
            raise ConfigError("config.json: linux.resources.memory.swap must be >= memory.limit "
                              "(it counts memory+swap)")
        else:
            out.append(("memory", "memory.swap.max", swap - limit))
    if "swappiness" in mem:
        raise ConfigError("config.json: linux.resources.memory.swappiness has no cgroup v2 "
                          "equivalent; remove it")
    if mem.get("disableOOMKiller"):
        raise ConfigError("config.json: linux.resources.memory.disableOOMKiller is not "
                          "supported on cgroup v2; remove it")
    cpu = res.get("cpu", {})
    if cpu.get("shares"):
        out.append(("cpu", "cpu.weight", shares_to_weight(cpu["shares"])))
    if "quota" in cpu or "period" in cpu:
        quota = cpu.get("quota", -1)
        quota = "max" if quota is None or quota < 0 else quota
        out.append(("cpu", "cpu.max", f"{quota} {cpu.get('period') or 100000}"))
    if "burst" in cpu:
        out.append(("cpu", "cpu.max.burst", cpu["burst"]))
    if "idle" in cpu:
        out.append(("cpu", "cpu.idle", cpu["idle"]))
    if cpu.get("cpus"):
        out.append(("cpuset", "cpuset.cpus", cpu["cpus"]))
    if cpu.get("mems"):
        out.append(("cpuset", "cpuset.mems", cpu["mems"]))
    if "pids" in res:
        limit = res["pids"]["limit"]
        out.append(("pids", "pids.max", limit if limit > 0 else "max"))
    blkio = res.get("blockIO", {})
    if blkio.get("weight"):
        out.append(("io", "io.weight", blkio_to_io_weight(blkio["weight"])))
    for d in blkio.get("weightDevice", ()):
        if d.get("weight"):
            out.append(("io", "io.weight", f"{_dev(d)} {blkio_to_io_weight(d['weight'])}"))
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for d in blkio.get(key, ()):
            out.append(("io", "io.max", f"{_dev(d)} {name}={d['rate']}"))
    for h in res.get("hugepageLimits", ()):
        out.append(("hugetlb", f"hugetlb.{h['pageSize']}.max", h["limit"]))
    for key, value in res.get("unified", {}).items():
        if "/" in key or key.startswith("."):
            raise ConfigError(f"config.json: linux.resources.unified.{key}: not a cgroup file name")
        out.append((key.split(".", 1)[0], key, value))
    return out


def v2_part(resources, v2):
    """On hybrid hosts only what cgroup2 holds is written there: `unified` and
    the limits of controllers bound to it (hugetlb, on some hosts)."""
    return {k: v for k, v in resources.items()
            if k == "unified" or (k == "hugepageLimits" and "hugetlb" in v2.controllers)}
