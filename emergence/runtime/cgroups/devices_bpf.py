"""Device access rules on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program.

cgroup v2 has no devices.allow/deny files; the kernel asks a BPF program
attached to the cgroup instead.  The rules (linux.resources.devices plus the
defaults every container needs) are compiled here into a short program, with
the same semantics as the v1 lists: the last matching rule decides, and a
request matches only if all the access it asks for is within the rule's.
Loading and attaching are two bpf(2) calls, done before the init joins.
"""

import ctypes
import os
import struct

from ...errors import EmergenceError

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
# access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4

# instruction encodings (linux/bpf_common.h, linux/bpf.h)
LDX_W = 0x61        # dst = *(u32 *)(src + off)
MOV64_IMM = 0xb7    # dst = imm
MOV32_REG = 0xbc    # dst = (u32) src
AND32_IMM = 0x54    # dst &= imm
RSH32_IMM = 0x74    # dst >>= imm
JNE_IMM = 0x55      # if dst != imm goto +off
JSET_IMM = 0x45     # if dst & imm goto +off
EXIT = 0x95

BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
SYS_BPF = {"x86_64": 321, "aarch64": 280}


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_mask(access):
    m = 0
    for ch in access or "rwm":
        m |= {"r": ACC_READ, "w": ACC_WRITE, "m": ACC_MKNOD}[ch]
    return m


def compile_rules(rules):
    """BPF bytecode for device RULES (v1-style dicts: allow, type, major, minor, access)."""
    prog = [
        insn(LDX_W, dst=2, src=1, off=0),   # r2 = access_type
        insn(MOV32_REG, dst=3, src=2),
        insn(AND32_IMM, dst=3, imm=0xFFFF),  # r3 = device type
        insn(MOV32_REG, dst=4, src=2),
        insn(RSH32_IMM, dst=4, imm=16),      # r4 = requested access
        insn(LDX_W, dst=5, src=1, off=4),   # r5 = major
        insn(LDX_W, dst=6, src=1, off=8),   # r6 = minor
    ]
    for rule in reversed(list(rules)):   # the last matching rule decides
        checks = []
        typ = rule.get("type", "a") or "a"
        if typ not in ("a", "c", "b"):
            raise EmergenceError(f"linux.resources.devices: unknown device type {typ!r}")
        if typ != "a":
            checks.append((JNE_IMM, 3, DEV_CHAR if typ == "c" else DEV_BLOCK))
        mask = _access_mask(rule.get("access"))
        if mask != ACC_READ | ACC_WRITE | ACC_MKNOD:
            checks.append((JSET_IMM, 4, ~mask & 7))   # asks for more than the rule covers
        for reg, key in ((5, "major"), (6, "minor")):
            value = rule.get(key)
            if value is not None and value != -1:
                checks.append((JNE_IMM, reg, value))
        # each check jumps over the rest of this rule: the remaining checks + 2
        for i, (code, reg, imm) in enumerate(checks):
            prog.append(insn(code, dst=reg, off=len(checks) - i - 1 + 2, imm=imm))
        prog.append(insn(MOV64_IMM, dst=0, imm=1 if rule.get("allow") else 0))
        prog.append(insn(EXIT))
        if not checks:
            return b"".join(prog)  # matches everything: what follows would be unreachable,
            #                        which the verifier refuses
    prog.append(insn(MOV64_IMM, dst=0, imm=0))  # no rule matched: deny
    prog.append(insn(EXIT))
    return b"".join(prog)


def _bpf(cmd, attr):
    nr = SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise EmergenceError("device rules on cgroup v2: bpf(2) number unknown for "
                             f"{os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf, ctypes.c_uint(128))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def attach(cgroup_dir, rules):
    """Load the program for RULES and attach it to the cgroup2 directory."""
    code = compile_rules(rules)
    prog = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, ...
    attr = struct.pack("<IIQQ", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                       ctypes.addressof(prog), ctypes.addressof(license_))
    try:
        prog_fd = _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        raise EmergenceError(f"cannot load the device-rules BPF program: {e.strerror}") \
            from None
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", cg_fd, prog_fd, BPF_CGROUP_DEVICE,
                                              BPF_F_ALLOW_MULTI))
        except OSError as e:
            raise EmergenceError(f"cannot attach the device rules to {cgroup_dir}: "
                                 f"{e.strerror}") from None
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)
