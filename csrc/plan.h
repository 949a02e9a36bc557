/* Operation codes of a plan; emergence/plan.py holds the same numbers. */
#ifndef EMERGENCE_PLAN_H
#define EMERGENCE_PLAN_H

enum {
    /* launcher, before clone */
    OP_SETNS = 1,          /* what, path, nstype (also valid in the init) */
    OP_UNSHARE = 2,        /* what, flags (also valid in the init) */
    OP_WRITE = 3,          /* what, path, content (also valid in the init) */
    OP_CLONE = 4,          /* what, clone flags */
    /* launcher, after clone */
    OP_CHILD_WRITE = 5,    /* what, "uid_map"-style /proc/<pid>/ file or absolute path, content ("$PID" = init pid) */
    OP_CHILD = 6,          /* what: the init's operations follow */
    /* init */
    OP_MOUNT = 10,         /* what, source, target, fstype, flags, data, resolve (0 plain, 1 dir, 2 file; | 4 copy the dir's files up, | 8 keep the dir's mode) */
    OP_MOUNT_EXISTING = 11,/* what, in-root target, flags, data */
    OP_SET_ROOT = 12,      /* what, rootfs path */
    OP_MKNOD = 13,         /* what, in-root path, mode, major, minor, uid, gid */
    OP_SYMLINK = 14,       /* what, target, in-root link path */
    OP_PIVOT_ROOT = 15,    /* what */
    OP_CHROOT = 16,        /* what, "move" or "plain" */
    OP_MASK = 17,          /* what, path */
    OP_READONLY = 18,      /* what, path */
    OP_SETHOSTNAME = 19,   /* what, name */
    OP_SETDOMAINNAME = 20, /* what, name */
    OP_RLIMIT = 21,        /* what, resource, soft, hard */
    OP_PERSONALITY = 22,   /* what, persona */
    OP_SETSID = 23,        /* what */
    OP_BECOME_ROOT = 24,   /* what */
    OP_OPEN_STATE = 25,    /* what, state dir */
    OP_USER = 26,          /* what, uid, gid, umask or -1, additional gids... */
    OP_CAPS = 27,          /* what, effective, permitted, inheritable, ambient */
    OP_NO_NEW_PRIVS = 28,  /* what */
    OP_SECCOMP = 29,       /* what, flags, bpf (hex) */
    OP_RESOLVE_CWD = 30,   /* what, cwd */
    OP_RESOLVE_EXEC = 31,  /* what, program, PATH */
    OP_READY = 32,         /* what */
    OP_BARRIER = 33,       /* what, fifo name in the state dir: blocks until `start` opens it */
    OP_CHDIR = 34,         /* what, path */
    OP_EXEC = 35,          /* what, preserved fds, argc, argv..., env... */
    OP_CAPS_BOUNDING = 36, /* what, bounding set to keep (needs CAP_SETPCAP: before OP_USER) */
    OP_NS_OPEN = 37,       /* what, path, slot: keep a namespace fd for later (launcher or init) */
    OP_NS_ENTER = 38,      /* what, slot, nstype: setns to a kept fd (launcher or init) */
    OP_CONSOLE = 39,       /* what, socket fd, rows, cols: make a pty, send its master, use the slave */
    OP_SYNC = 40,          /* what, resume fd, label: say "sync LABEL", wait for a byte on the fd */
    OP_HOOK = 41,          /* what, timeout, path, state ("%PID%" = own pid), argc, argv..., env... */
    OP_STARTED = 42,       /* what: tell `start` (through the fifo) that the start hooks passed */
    OP_FAIL = 43,          /* what: fail with WHAT as the whole message */
    OP_MKDIR = 44,         /* what, in-root path: create the missing directories (mode 0755) */
    OP_LINK_UP = 45,       /* what, interface name: set the link up (lo in a new netns) */
    OP_SCHED = 46,         /* what, policy, flags, nice, priority, runtime, deadline, period: sched_setattr */
    OP_IOPRIO = 47,        /* what, which, who, ioprio: ioprio_set */
    OP_MEMPOLICY = 48,     /* what, mode (flags or'ed in), maxnode, nodemask words in hex... */
    OP_SETATTR = 49,       /* what, in-root path, attr_set, attr_clr: mount_setattr, recursively */
    OP_IDMAP_TREE = 50,    /* what, slot, source, uid_map, gid_map, rclone, ridmap (launcher) */
    OP_MOVE_TREE = 51,     /* what, slot, in-root target, resolve: move a kept tree into place */
    OP_FD_CHANNEL = 52,    /* what: a channel for descriptors the launcher opens after clone (launcher) */
    OP_SEND_SOURCE = 53,   /* what, host path: open it in the init's mount namespace, send it (launcher, after clone) */
    OP_MOUNT_SOURCE = 54,  /* what, in-root target, flags, resolve: bind the next descriptor sent */
    OP_CHOWN_STDIO = 55,   /* what, uid, gid: give stdio to the user (not /dev/null; a tty keeps its group) */
    OP_GATE = 56,          /* what, fd: wait for one byte on fd; EOF ends the launch (launcher, after clone) */
};

#endif
