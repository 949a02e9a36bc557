"""`features`: what this build of emergence supports, as features-schema.json
describes it.  Only what is implemented and tested is claimed."""

from .. import OCI_VERSION, __version__
from .capabilities import CAPABILITIES
from .config import SECCOMP_ARCHES, SECCOMP_FLAGS, _lsm_enabled
from .hooks import KINDS
from .planner import MOUNT_FLAGS, NAMESPACE_ORDER, PROPAGATION


def features():
    from .seccomp import COMPARE, FLAGS
    actions = ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
               "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
               "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"]
    try:
        from ._native import lib
        archs = [a for a in SECCOMP_ARCHES
                 if lib.seccomp_arch_resolve_name(a[len("SCMP_ARCH_"):].lower().encode())]
        seccomp_ok = True
    except ImportError:
        archs, seccomp_ok = [], False
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(KINDS),
        "mountOptions": sorted(set(MOUNT_FLAGS) | set(PROPAGATION)),
        "linux": {
            "namespaces": list(NAMESPACE_ORDER),
            "capabilities": sorted(CAPABILITIES, key=CAPABILITIES.get),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {"enabled": seccomp_ok, "actions": actions,
                        "operators": sorted(COMPARE), "archs": archs,
                        "knownFlags": list(SECCOMP_FLAGS), "supportedFlags": sorted(FLAGS)},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
            "netDevices": {"enabled": False},
        },
        "annotations": {
            "io.github.emergence.version": __version__,
            "io.github.emergence.apparmor.host": str(_lsm_enabled("apparmor")).lower(),
        },
    }
