"""What a task may ask of the worker's host.  A worker runs tasks as root,
so a task (even one signed by a command node) gets only what the worker's
policy allows; the rest is refused, with the reason recorded as the task's
result, and nothing runs.

The policy (worker configuration, all default to nothing):
  bundles        directories a bundle task's bundle and rootfs may be in
  binds          host paths bind mounts may come from (the path or below)
  host_namespaces  True lets a bundle join or share host namespaces
  capabilities   capabilities beyond Docker's default set that are allowed
  devices        True allows device nodes and device-cgroup grants
A stage task (pipeline run --cluster) is checked by pipeline/stagetask.check:
no secrets, no host or Relay network, outputs under /out, digests only.
An image task is built by the worker itself (`emergence run --image`) and
asks for nothing of the host; a bundle task's config.json is checked here,
and the worker runs the very config it checked (a private copy).
"""

import os

DEFAULTS = {"bundles": [], "binds": [], "host_namespaces": False, "capabilities": [],
            "devices": False}
# Docker's default capability set: what a container gets without asking
BASE_CAPS = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
             "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
             "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
OWN_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
# host-wide files under /proc and /sys that must stay masked or read-only
GUARDED = ("/proc/kcore", "/proc/keys", "/proc/sysrq-trigger", "/proc/sys", "/proc/bus",
           "/proc/irq", "/proc/fs", "/proc/timer_list", "/sys/firmware", "/proc/acpi",
           "/proc/scsi")
KERNEL_MOUNTS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}
# character devices a container may use without `devices` (null, zero,
# full, random, urandom, tty, console, ptmx, pts)
_SAFE_DEV = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, None)}


def merge(policy):
    out = dict(DEFAULTS)
    out.update({k: v for k, v in (policy or {}).items() if v is not None})
    return out


def _under(path, roots):
    p = os.path.realpath(path)
    for r in roots:
        r = os.path.realpath(r)
        if p == r or p.startswith(r.rstrip("/") + "/"):
            return True
    return False


def check_config(config, policy, bundle=None):
    """None if CONFIG (an OCI config.json, parsed) is within POLICY, else the
    reason, one line.  BUNDLE resolves a relative root.path."""
    pol = merge(policy)
    if not isinstance(config, dict):
        return "config.json is not an object"
    root = (config.get("root") or {}).get("path") if isinstance(config.get("root"), dict) \
        else None
    if not isinstance(root, str) or not root:
        return "config.json has no root.path"
    rootfs = os.path.realpath(os.path.join(bundle or "/", root))
    if rootfs == "/":
        return "the rootfs is the host's root"
    if not _under(rootfs, pol["bundles"]):
        return f"the rootfs {rootfs} is not in an allowed bundle directory"
    for m in config.get("mounts") or []:
        why = _mount(m, pol)
        if why:
            return why
    hooks = config.get("hooks")
    if isinstance(hooks, dict) and any(hooks.values()):
        return "hooks run on the host; a task may not have any"
    linux = config.get("linux") or {}
    if not isinstance(linux, dict):
        return "linux is not an object"
    why = _namespaces(linux, pol) or _devices(linux, pol) or _caps(config, pol)
    if why:
        return why
    if not pol["host_namespaces"]:
        covered = [p for k in ("maskedPaths", "readonlyPaths")
                   for p in (linux.get(k) or []) if isinstance(p, str)]
        for g in GUARDED:
            if not any(g == c or g.startswith(c.rstrip("/") + "/") for c in covered):
                return f"{g} must stay masked or read-only"
    return None


def _mount(m, pol):
    if not isinstance(m, dict):
        return "a mount is not an object"
    opts = m.get("options") or []
    kind, src = m.get("type") or "", m.get("source") or ""
    if kind == "bind" or "bind" in opts or "rbind" in opts:
        if not isinstance(src, str) or not src.startswith("/"):
            return f"bind mount source {src!r} is not an absolute host path"
        if not _under(src, pol["binds"]):
            return (f"bind mount of host path {src} is not allowed (allowed: "
                    f"{', '.join(pol['binds']) or 'none'})")
        return None
    if kind not in KERNEL_MOUNTS:
        return f"mount type {kind or 'none'!r} (source {src!r}) is not allowed"
    return None


def _namespaces(linux, pol):
    if pol["host_namespaces"]:
        return None
    ns = linux.get("namespaces") or []
    types = set()
    for n in ns:
        if not isinstance(n, dict):
            return "a namespace is not an object"
        if n.get("path"):
            return f"joining the host namespace {n.get('path')} is not allowed"
        types.add(n.get("type"))
    missing = [t for t in OWN_NAMESPACES if t not in types]
    if missing:
        return f"the task shares the host's {', '.join(missing)} namespace"
    return None


def _devices(linux, pol):
    if pol["devices"]:
        return None
    if linux.get("devices"):
        return "device nodes are not allowed"
    res = linux.get("resources") or {}
    for d in (res.get("devices") or []) if isinstance(res, dict) else []:
        if not isinstance(d, dict) or not d.get("allow"):
            continue
        major, minor = d.get("major"), d.get("minor")
        ok = d.get("type") == "c" and ((major, minor) in _SAFE_DEV or
                                       (major, None) in _SAFE_DEV and minor in (None, -1))
        if not ok:
            return (f"device access {d.get('type', 'a')} {major}:{minor} is not allowed")
    return None


def _caps(config, pol):
    caps = (config.get("process") or {}).get("capabilities") or {}
    if not isinstance(caps, dict):
        return "process.capabilities is not an object"
    allowed = BASE_CAPS | set(pol["capabilities"])
    for kind, names in caps.items():
        for c in names if isinstance(names, list) else []:
            if c not in allowed:
                return f"capability {c} ({kind}) is not allowed"
    return None


def check_task(spec, policy):
    """(config to run, None) for a bundle task within POLICY, (None, None)
    for a task without a bundle, or (None, reason)."""
    import json
    if spec.get("kind") == "stage":  # the worker makes its bundle: nothing of the host
        from ..pipeline.stagetask import check
        return None, check(spec)
    if spec.get("kind") != "bundle":
        return None, None
    bundle = spec.get("bundle")
    if not isinstance(bundle, str) or not bundle.startswith("/"):
        return None, "the bundle is not an absolute path"
    if not _under(bundle, merge(policy)["bundles"]):
        return None, f"the bundle {bundle} is not in an allowed bundle directory"
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        return None, f"cannot read {bundle}/config.json: {getattr(e, 'strerror', None) or e}"
    why = check_config(config, policy, bundle)
    if why:
        return None, why
    config["root"]["path"] = os.path.realpath(os.path.join(bundle, config["root"]["path"]))
    for m in config.get("mounts") or []:  # run what was checked, not a later symlink
        if m.get("type") == "bind" or {"bind", "rbind"} & set(m.get("options") or []):
            m["source"] = os.path.realpath(m["source"])
    return config, None
