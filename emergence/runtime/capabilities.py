"""Linux capability numbers (the kernel ABI, from <linux/capability.h>)."""

from ..errors import shown

CAPABILITIES = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}


KINDS = ("bounding", "permitted", "effective", "inheritable", "ambient")


def last_cap():
    """The highest capability this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def usable(caps, where, warn, debug_note):
    """process.capabilities as this kernel can apply it: a capability Linux has
    but this kernel lacks is skipped with a warning, and so is a name that is no
    capability at all (the runtime spec says to warn and go on; runc warns, crun
    is silent, both run the container: one warning line names them all).  An
    ambient capability that is not both permitted and inheritable (the kernel
    refuses to raise it) is dropped, noted with --debug."""
    out = {}
    top = None
    unknown = []
    for kind, names in caps.items():
        if kind not in KINDS:
            # not a capability set: runc and crun ignore it, whatever its value
            debug_note(f"{where}.{kind[:64]}: not a capability set; ignored")
            continue
        kept = []
        for name in names:
            bit = CAPABILITIES.get(name)
            if bit is None:
                if name not in unknown:
                    unknown.append(name)
                continue
            if top is None:
                top = last_cap()
            if bit > top:
                warn(f"{where}.{kind}: {name} is unknown to this kernel; skipped")
                continue
            kept.append(name)
        out[kind] = kept
    if unknown:
        warn(f"{where}: unknown capabilities ignored: {', '.join(map(shown, unknown[:8]))}"
             + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""))
    if out.get("ambient"):
        allowed = set(out.get("permitted", ())) & set(out.get("inheritable", ()))
        dropped = [n for n in out["ambient"] if n not in allowed]
        if dropped:
            debug_note(f"{where}.ambient: {', '.join(dropped)} not raised (an ambient "
                       "capability must be permitted and inheritable too)")
            out["ambient"] = [n for n in out["ambient"] if n in allowed]
    return out


def mask(names):
    """Bitmask of a list of capability names (validated beforehand)."""
    m = 0
    for name in names:
        m |= 1 << CAPABILITIES[name]
    return m
