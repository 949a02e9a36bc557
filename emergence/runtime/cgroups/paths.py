"""Where a container's cgroup lives below each hierarchy's root: its
cgroupsPath, systemd's `slice:prefix:name` form, or emergence/<id>."""

from ...errors import ConfigError, shown


def systemd_path(spec):
    """'slice:prefix:name' (systemd's cgroupsPath form) as the cgroupfs path systemd
    would use: 'a-b.slice' nests as a.slice/a-b.slice, units are prefix-name.scope."""
    slice_, prefix, name = spec.split(":")
    slice_ = slice_ or "system.slice"
    if not slice_.endswith(".slice") or "/" in slice_:
        raise ConfigError(f"config.json: linux.cgroupsPath {shown(spec)}: {shown(slice_)} is "
                          "not a systemd slice name")
    parts = []
    stem = slice_[:-len(".slice")]
    if stem != "-":
        words = stem.split("-")
        parts = ["-".join(words[:i + 1]) + ".slice" for i in range(len(words))]
    unit = name if name.endswith((".scope", ".service")) else \
        (f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
    return "/".join(parts + [unit])


def relative_path(cgroups_path, container_id):
    """The container's cgroup below each hierarchy's root."""
    if not cgroups_path:
        return f"emergence/{container_id}"
    if cgroups_path.count(":") == 2 and "/" not in cgroups_path:
        return systemd_path(cgroups_path)
    path = cgroups_path.strip("/")
    if not path:
        raise ConfigError("config.json: linux.cgroupsPath must not be the root cgroup")
    # checked before anything is made: a mkdir that fails half-way leaves parents
    if len(path.encode("utf-8", "surrogateescape")) > PATH_MAX or \
            any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in path.split("/")):
        raise ConfigError(f"config.json: linux.cgroupsPath {shown(path)}: too long (a name "
                          f"holds at most {NAME_MAX} bytes, the path {PATH_MAX})")
    return path


NAME_MAX = 255
PATH_MAX = 3072  # below Linux's 4096, which counts the mount point too
