"""The plan: the ordered list of primitive operations the shim executes.

Python decides what happens and in which order; the shim (csrc/shim.c) only
interprets.  Each operation carries a `what` label used in error messages,
so a failure inside the container comes back as one readable line.
The numbers must match csrc/plan.h.
"""

import sys

SETNS = 1
UNSHARE = 2
WRITE = 3
CLONE = 4
CHILD_WRITE = 5
CHILD = 6
MOUNT = 10
MOUNT_EXISTING = 11
SET_ROOT = 12
MKNOD = 13
SYMLINK = 14
PIVOT_ROOT = 15
CHROOT = 16
MASK = 17
READONLY = 18
SETHOSTNAME = 19
SETDOMAINNAME = 20
RLIMIT = 21
PERSONALITY = 22
SETSID = 23
BECOME_ROOT = 24
OPEN_STATE = 25
USER = 26
CAPS = 27
NO_NEW_PRIVS = 28
SECCOMP = 29
RESOLVE_CWD = 30
RESOLVE_EXEC = 31
READY = 32
BARRIER = 33
CHDIR = 34
EXEC = 35
CAPS_BOUNDING = 36
NS_OPEN = 37
NS_ENTER = 38
CONSOLE = 39
SYNC = 40
HOOK = 41
STARTED = 42
FAIL = 43
MKDIR = 44
LINK_UP = 45
SCHED = 46
IOPRIO = 47
MEMPOLICY = 48
SETATTR = 49
IDMAP_TREE = 50
MOVE_TREE = 51
FD_CHANNEL = 52
SEND_SOURCE = 53
MOUNT_SOURCE = 54
CHOWN_STDIO = 55
GATE = 56

NAMES = {v: k for k, v in globals().items() if isinstance(v, int) and k.isupper()}

# Kept fds (namespaces, idmapped trees) the shim holds at once (NS_SLOTS).
SLOTS = 8

# Where a mount target is resolved: plainly, or inside the root as a directory
# or a file; a directory's mount may also copy up the files under it (COPY_UP,
# tmpcopyup) and keep its mode (KEEP_MODE: a tmpfs without mode=, as runc).
PLAIN, IN_ROOT_DIR, IN_ROOT_FILE = 0, 1, 2
COPY_UP, KEEP_MODE = 4, 8


class Plan:
    """An append-only list of (op, what, args) that serialises for the shim."""

    def __init__(self):
        self.ops = []

    def add(self, op, what, *args):
        self.ops.append((op, what, tuple(str(a) for a in args)))

    def encode(self):
        # u32s in the host's byte order (csrc/plan.h); int.to_bytes, not struct:
        # the cold path would load _struct's shared library for this alone
        out = [b"EMPLAN1\0"]
        order = sys.byteorder
        for op, what, args in self.ops:
            fields = (what,) + args
            out.append(op.to_bytes(4, order) + len(fields).to_bytes(4, order))
            for f in fields:
                b = f.encode("utf-8", "surrogateescape") + b"\0"
                out.append(len(b).to_bytes(4, order))
                out.append(b)
        return b"".join(out)

    def describe(self):
        """Human-readable listing, for --debug and tests."""
        return [f"{NAMES[op]}: {what} {[a if len(a) < 80 else a[:77] + '...' for a in args]}"
                for op, what, args in self.ops]

    def kinds(self):
        return [op for op, _, _ in self.ops]
