"""Compile linux.seccomp to a BPF program with libseccomp.

Compilation happens here, in the runtime; the shim only installs the
program (as late as the spec allows).  libseccomp is loaded lazily: the
cffi extension is imported only for configs that ask for seccomp.
"""

import errno
import os

from ..errors import ConfigError

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
COMPARE = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
           "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


def action(name, errno_ret, where):
    """libseccomp's action value for an OCI action name."""
    if errno_ret is None:
        errno_ret = errno.EPERM
    simple = {
        "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
        "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
        "SCMP_ACT_LOG": 0x7ffc0000, "SCMP_ACT_ALLOW": 0x7fff0000,
    }
    if name in simple:
        return simple[name]
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (errno_ret & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return 0x7FF00000 | (errno_ret & 0xFFFF)
    raise ConfigError(f"config.json: {where}: {name} needs a seccomp listener "
                      "(listenerPath), which emergence does not support; use another action")


def filter_flags(seccomp):
    flags = 0
    for name in seccomp.get("flags", ()):
        flags |= FLAGS[name]
    return flags


def compile_bpf(seccomp):
    """Return the BPF program (bytes) for a validated linux.seccomp object."""
    from ._native import ffi, lib

    default = action(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"),
                     "linux.seccomp.defaultAction")
    ctx = lib.seccomp_init(default)
    if ctx == ffi.NULL:
        raise ConfigError("config.json: linux.seccomp: libseccomp rejected the default action")
    try:
        native = lib.seccomp_arch_native()
        for arch in seccomp.get("architectures", ()):
            token = lib.seccomp_arch_resolve_name(arch[len("SCMP_ARCH_"):].lower().encode())
            if token == 0:
                raise ConfigError(f"config.json: linux.seccomp.architectures: {arch} is not known "
                                  "to this libseccomp")
            if token != native:
                rc = lib.seccomp_arch_add(ctx, token)
                if rc < 0 and rc != -errno.EEXIST:
                    raise ConfigError(f"config.json: linux.seccomp.architectures: cannot add "
                                      f"{arch}: {os.strerror(-rc)}")
        for i, rule in enumerate(seccomp.get("syscalls", ())):
            where = f"linux.seccomp.syscalls[{i}]"
            act = action(rule["action"], rule.get("errnoRet"), where + ".action")
            if act == default:
                continue
            args = rule.get("args", ())
            indices = [a["index"] for a in args]
            if len(set(indices)) != len(indices):
                groups = [[a] for a in args]  # same index twice: any of them matches
            else:
                groups = [list(args)]
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr < 0:
                    continue  # unknown on this kernel/arch: nothing to filter
                for group in groups:
                    cmps = ffi.new("struct scmp_arg_cmp[]", max(len(group), 1))
                    for j, a in enumerate(group):
                        if a["index"] > 5:
                            raise ConfigError(f"config.json: {where}.args[{j}].index: "
                                              "a syscall has at most 6 arguments (0..5)")
                        cmps[j].arg = a["index"]
                        cmps[j].op = COMPARE[a["op"]]
                        cmps[j].datum_a = a["value"]
                        cmps[j].datum_b = a.get("valueTwo", 0)
                    rc = lib.seccomp_rule_add_array(ctx, act, nr, len(group), cmps)
                    # EEXIST: libseccomp holds this rule already (podman's stock
                    # profile repeats `socket`); the first one stands, as in runc/crun
                    if rc < 0 and rc != -errno.EEXIST:
                        raise ConfigError(f"config.json: {where}: libseccomp rejected the rule for "
                                          f"{name}: {os.strerror(-rc)}")
        fd = os.memfd_create("emergence-seccomp")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise ConfigError(f"config.json: linux.seccomp: cannot compile the filter: "
                                  f"{os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
