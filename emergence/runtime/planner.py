"""Turn a validated config.json into a plan for the shim (the Linux part).

All policy lives here: which namespaces are made or joined and in which
order, how each mount option becomes flags, which devices exist, and where
the start barrier and seccomp sit relative to dropping privileges.  The
shim executes the list in order and reports the first failure.
"""

import os

from ..errors import ConfigError, cut, shown, warn
from . import capabilities
from . import plan as P
from .config import wants_scheduling

CLONE_FLAGS = {
    "mount": 0x00020000, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
    "user": 0x10000000, "pid": 0x20000000, "network": 0x40000000, "time": 0x00000080,
}
NAMESPACE_ORDER = ("mount", "cgroup", "uts", "ipc", "user", "pid", "network", "time")
NS_PROC_NAME = {"mount": "mnt", "cgroup": "cgroup", "uts": "uts", "ipc": "ipc", "user": "user",
                "pid": "pid", "network": "net", "time": "time"}

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_SYNCHRONOUS, MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC = 16, 32, 64, 128
MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME, MS_BIND = 256, 1024, 2048, 4096
MS_MOVE, MS_REC = 8192, 16384
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME = 1 << 21, 1 << 24, 1 << 25

# option -> (flags to set, flags to clear)
MOUNT_FLAGS = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0), "remount": (MS_REMOUNT, 0),
    "mand": (MS_MANDLOCK, 0), "nomand": (0, MS_MANDLOCK),
    "atime": (0, MS_NOATIME), "noatime": (MS_NOATIME, 0),
    "diratime": (0, MS_NODIRATIME), "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0), "nolazytime": (0, MS_LAZYTIME),
    "nosymfollow": (MS_NOSYMFOLLOW, 0), "symfollow": (0, MS_NOSYMFOLLOW),
    "bind": (MS_BIND, 0), "rbind": (MS_BIND | MS_REC, 0),
}
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
COPY_UP = "tmpcopyup"  # a tmpfs gets the files under its mount point, as in runc and crun
IDMAP_OPTIONS = {"idmap": False, "ridmap": True}  # option: the whole tree idmapped

# mount_setattr(2) attributes of the recursive options (runc's and crun's names):
# option -> (attr_set, attr_clr).  An atime change must clear all of _ATIME.
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
MOUNT_ATTR__ATIME, MOUNT_ATTR_RELATIME, MOUNT_ATTR_NOATIME = 0x70, 0x0, 0x10
MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOSYMFOLLOW = 0x20, 0x80, 0x200000
RECURSIVE_ATTRS = {
    "rro": (MOUNT_ATTR_RDONLY, 0), "rrw": (0, MOUNT_ATTR_RDONLY),
    "rnosuid": (MOUNT_ATTR_NOSUID, 0), "rsuid": (0, MOUNT_ATTR_NOSUID),
    "rnodev": (MOUNT_ATTR_NODEV, 0), "rdev": (0, MOUNT_ATTR_NODEV),
    "rnoexec": (MOUNT_ATTR_NOEXEC, 0), "rexec": (0, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, MOUNT_ATTR_NOSYMFOLLOW),
    "rnoatime": (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
    "ratime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rrelatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rnorelatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rstrictatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
    "rnostrictatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
}


def recursive_attrs(options):
    """(attr_set, attr_clr) of a mount's recursive options; a later one wins."""
    attr_set = attr_clr = 0
    for o in options:
        if o in RECURSIVE_ATTRS:
            s, c = RECURSIVE_ATTRS[o]
            if c == MOUNT_ATTR__ATIME:
                attr_set, attr_clr = (attr_set & ~c) | s, attr_clr | c
            else:
                attr_set, attr_clr = (attr_set & ~c) | s, (attr_clr & ~s) | c
    return attr_set, attr_clr


# The devices every container gets (runtime-spec config-linux.md, "Default Devices").
DEFAULT_DEVICES = [
    ("/dev/null", "c", 1, 3), ("/dev/zero", "c", 1, 5), ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8), ("/dev/urandom", "c", 1, 9), ("/dev/tty", "c", 5, 0),
]
DEFAULT_DEVICE_ALLOW = [
    {"allow": True, "type": t, "major": ma, "minor": mi, "access": "rwm"}
    for _, t, ma, mi in DEFAULT_DEVICES
] + [
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},     # /dev/ptmx
    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},     # /dev/console
]
DEVICE_MODE = {"c": 0o020000, "u": 0o020000, "b": 0o060000, "p": 0o010000}

PERSONALITY_DOMAIN = {"LINUX": 0x0000, "LINUX32": 0x0008}
PERSONALITY_FLAGS = {
    "UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000, "SHORT_INODE": 0x1000000,
    "WHOLE_SECONDS": 0x2000000, "STICKY_TIMEOUTS": 0x4000000, "ADDR_LIMIT_3GB": 0x8000000,
}


def parse_mount_options(options):
    """(flags, clear, propagation flags, data string) for a mount's options."""
    flags = clear = prop = 0
    data = []
    for o in options:
        if o in MOUNT_FLAGS:
            s, c = MOUNT_FLAGS[o]
            flags, clear = (flags | s) & ~c, (clear | c) & ~s
        elif o in PROPAGATION:
            prop |= PROPAGATION[o]
        elif o in RECURSIVE_ATTRS or o in IDMAP_OPTIONS:
            pass  # recursive_attrs, and idmapped mounts
        elif o == COPY_UP:
            pass  # Planner._mount
        else:
            data.append(o)
    return flags, clear, prop, ",".join(data)


def namespaces(config):
    """{type: path or None} of linux.namespaces."""
    return {ns["type"]: ns.get("path") for ns in config.get("linux", {}).get("namespaces", ())}


def _id_map(mappings):
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)


class Planner:
    """Builds the plan for one container's init."""

    def __init__(self, config, bundle, rootfs, state_dir, cgroup, hierarchies, no_pivot=False,
                 preserve_fds=0, console=None, hook_state=None, resume_fd=None,
                 barrier="exec.fifo", gate_fd=None):
        self.config = config
        self.bundle = bundle
        self.rootfs = rootfs
        self.state_dir = state_dir
        self.barrier = barrier  # the fifo's name in state_dir (an fd number in /proc/self/fd)
        self.cgroup = cgroup
        self.hierarchies = hierarchies
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.console = console  # (socket fd, rows, cols) when process.terminal
        self.hooks = config.get("hooks", {})
        self.hook_state = hook_state  # state JSON template for hooks run inside
        self.resume_fd = resume_fd    # read end the init waits on while runtime hooks run
        self.gate_fd = gate_fd        # read end the launcher waits on until the cgroups exist
        self.linux = config.get("linux", {})
        self.process = config.get("process")
        self.ns = namespaces(config)
        self.userns = "user" in self.ns
        self.own_netns = "network" in self.ns and not self.ns["network"]
        self.unmapped = unmapped_userns(self.linux)
        self.idmapped = self._idmapped_mounts()
        # Under a user namespace the container's root may not reach a bind source
        # (or a device node) on the host: the launcher opens them, as root, in the
        # init's mount namespace and sends them over (SEND_SOURCE, MOUNT_SOURCE).
        self.by_fd = self.userns and "mount" in self.ns and not self.ns["mount"]
        self.sources = []  # host paths the launcher opens, in the order the init binds them
        self.plan = P.Plan()

    def build(self, seccomp_bpf=None):
        # the init's part first: it names the sources the launcher must open
        launcher, self.plan = self.plan, P.Plan()
        self._init_namespaces()
        self._rootfs()
        self._process(seccomp_bpf)
        init, self.plan = self.plan, launcher
        self._launcher()
        self.plan.add(P.CHILD, "start the container init")
        self.plan.ops.extend(init.ops)
        return self.plan

    def _bind(self, src, dst, flags, resolve, what):
        """A bind of a host path: by the launcher's descriptor under a user namespace."""
        if self.by_fd:
            self.sources.append(src)
            self.plan.add(P.MOUNT_SOURCE, what, dst, flags, resolve)
        else:
            self.plan.add(P.MOUNT, what, src, dst, "", flags, "", resolve)

    # -- launcher: joins that affect children, then clone --
    def _launcher(self):
        add = self.plan.add
        for t in ("pid", "time"):
            if self.ns.get(t):
                add(P.SETNS, f"join the {t} namespace {self.ns[t]}", self.ns[t], CLONE_FLAGS[t])
        if "time" in self.ns and not self.ns["time"]:
            add(P.UNSHARE, "create a time namespace", CLONE_FLAGS["time"])
            offsets = self.linux.get("timeOffsets", {})
            for clock in ("monotonic", "boottime"):
                if clock in offsets:
                    o = offsets[clock]
                    add(P.WRITE, f"set the {clock} clock offset", "/proc/self/timens_offsets",
                        f"{clock} {o.get('secs', 0)} {o.get('nanosecs', 0)}")
        flags = 0
        for t, path in self.ns.items():
            if path is None and t not in ("time", "cgroup"):
                flags |= CLONE_FLAGS[t]
        for i, (slot, src, uid_map, gid_map, rclone, ridmap) in self.idmapped.items():
            add(P.IDMAP_TREE, f"clone {src} idmapped for mounts[{i}]", slot, src, uid_map,
                gid_map, int(rclone), int(ridmap))
        if self.sources:
            add(P.FD_CHANNEL, "make the channel for bind sources")
        add(P.CLONE, "clone the container init", flags)
        if self.userns and not self.ns["user"] and self.unmapped:
            # as crun: the container's root is the caller (size 1)
            add(P.CHILD_WRITE, "write the uid map (no linux.uidMappings: root to our uid)",
                "uid_map", f"0 {os.geteuid()} 1\n")
            add(P.CHILD_WRITE, "write the gid map (no linux.gidMappings: root to our gid)",
                "gid_map", f"0 {os.getegid()} 1\n")
        elif self.userns and not self.ns["user"]:
            add(P.CHILD_WRITE, "write the uid map (linux.uidMappings)", "uid_map",
                _id_map(self.linux["uidMappings"]))
            add(P.CHILD_WRITE, "write the gid map (linux.gidMappings)", "gid_map",
                _id_map(self.linux["gidMappings"]))
        for src in self.sources:
            add(P.SEND_SOURCE, f"open {src} as root for the container (user namespace)", src)
        if self.process and "oomScoreAdj" in self.process:
            add(P.CHILD_WRITE, f"set process.oomScoreAdj to {self.process['oomScoreAdj']}",
                "oom_score_adj", self.process["oomScoreAdj"])
        if self.cgroup is not None:
            if self.gate_fd is not None:
                add(P.GATE, "wait for the container's cgroups", self.gate_fd)
            for procs in self.cgroup.procs_files():
                add(P.CHILD_WRITE, f"move the init into cgroup {procs}", procs, "$PID")

    def _idmapped_mounts(self):
        """{mount index: (slot, source, uid_map, gid_map, recursive clone, recursive
        idmap)} for bind mounts with uidMappings/gidMappings or an idmap option;
        without their own mappings they take the container's."""
        out = {}
        if "mount" not in self.ns:
            return out  # no mounts are made (see _rootfs_without_mount_namespace)
        for i, m in enumerate(self.config.get("mounts", ())):
            opts = m.get("options", ())
            ridmap = "ridmap" in opts
            if not (m.get("uidMappings") or m.get("gidMappings") or ridmap or "idmap" in opts):
                continue
            where = f"config.json: mounts[{i}]"
            if not (m.get("type") == "bind" or "bind" in opts or "rbind" in opts):
                raise ConfigError(f"{where}: only bind mounts can be idmapped; make it a bind "
                                  "mount or drop its id mappings")
            uids = m.get("uidMappings") or self.linux.get("uidMappings")
            gids = m.get("gidMappings") or self.linux.get("gidMappings")
            if not uids or not gids:
                raise ConfigError(f"{where}: an idmapped mount needs uidMappings and "
                                  "gidMappings, on the mount or in linux")
            if len(out) == P.SLOTS:
                raise ConfigError(f"{where}: at most {P.SLOTS} idmapped mounts are supported")
            src = self._bind_source(m)
            out[i] = (len(out), src, _id_map(uids), _id_map(gids), "rbind" in opts, ridmap)
        return out

    # -- init: namespaces it joins itself --
    def _init_namespaces(self):
        add = self.plan.add
        # The state dir is reached by fd after pivot_root (the start barrier).
        add(P.OPEN_STATE, "open the state directory", self.state_dir)
        order = ["user", "mount", "network", "uts", "ipc", "cgroup"]
        for t in order:
            if self.ns.get(t):
                add(P.SETNS, f"join the {t} namespace {self.ns[t]}", self.ns[t], CLONE_FLAGS[t])
        if self.userns:
            add(P.BECOME_ROOT, "become root in the user namespace")
        add(P.SETSID, "start a new session")
        if "network" in self.ns and not self.ns["network"]:
            add(P.LINK_UP, "bring up lo in the new network namespace", "lo")
        if "cgroup" in self.ns and not self.ns["cgroup"]:
            add(P.UNSHARE, "create a cgroup namespace", CLONE_FLAGS["cgroup"])

    # -- init: root filesystem --
    def _rootfs(self):
        add = self.plan.add
        if "mount" not in self.ns:
            return self._rootfs_without_mount_namespace()
        prop = self.linux.get("rootfsPropagation")
        if prop in ("rprivate", "rshared", "rslave", "runbindable"):
            prop = prop[1:]  # runc's and crun's spelling: "/" is always set recursively
        base = MS_PRIVATE if prop == "private" else MS_SLAVE
        add(P.MOUNT, "make / a " + ("private" if base == MS_PRIVATE else "slave") + " mount",
            "", "/", "", base | MS_REC, "", P.PLAIN)
        add(P.MOUNT, f"bind-mount the rootfs {self.rootfs} onto itself", self.rootfs, self.rootfs,
            "", MS_BIND | MS_REC, "", P.PLAIN)
        add(P.SET_ROOT, f"open the rootfs {self.rootfs}", self.rootfs)
        has_dev = False
        for i, m in enumerate(self.config.get("mounts", ())):
            self._mount(m, i)
            if m["destination"].rstrip("/") == "/dev":
                has_dev = True
        self._devices(has_dev)
        self._cwd()
        self._create_hooks()
        if self.no_pivot:
            add(P.CHROOT, "move the rootfs to / and chroot (--no-pivot)", "move")
        else:
            add(P.PIVOT_ROOT, "pivot_root into the rootfs")
        self._sysctl()
        for p in self.linux.get("maskedPaths", ()):
            add(P.MASK, f"mask {p} (linux.maskedPaths)", p)
        for p in self.linux.get("readonlyPaths", ()):
            add(P.READONLY, f"make {p} read-only (linux.readonlyPaths)", p)
        if prop in ("shared", "unbindable", "slave"):
            # after the masks: they bind /dev/null, which an unbindable tree refuses
            add(P.MOUNT_EXISTING, f"set rootfsPropagation {prop}", "/",
                PROPAGATION["r" + prop], "")
        if self.config["root"].get("readonly"):
            add(P.MOUNT_EXISTING, "remount the rootfs read-only (root.readonly)", "/",
                MS_BIND | MS_REMOUNT | MS_RDONLY, "")
        self._names()

    def _cwd(self):
        """A process.cwd missing from the rootfs is made, as runc does: as root,
        after the mounts (it may lie in one), before root.readonly applies."""
        if self.process is not None and self.process["cwd"].strip("/"):
            self.plan.add(P.MKDIR, f"create process.cwd {self.process['cwd']} if missing",
                          self.process["cwd"])

    def _create_hooks(self):
        """prestart/createRuntime (run by the runtime while the init waits), then
        createContainer (run by the init): after mounts, before pivot_root."""
        if self.hooks.get("prestart") or self.hooks.get("createRuntime"):
            self.plan.add(P.SYNC, "wait for the prestart and createRuntime hooks",
                          self.resume_fd, "create-runtime")
        self._hook_ops("createContainer")

    def _sysctl(self):
        for key, value in self.linux.get("sysctl", {}).items():
            self.plan.add(P.WRITE, f"set sysctl {key}={value}",
                          "/proc/sys/" + key.replace(".", "/"), value)

    def _names(self):
        for field, op in (("hostname", P.SETHOSTNAME), ("domainname", P.SETDOMAINNAME)):
            if self.config.get(field):
                self.plan.add(op, f"set the {field} {shown(self.config[field])}",
                              self.config[field])

    def _rootfs_without_mount_namespace(self):
        """Sharing the host's mount namespace, nothing may be mounted (it would land
        on the host): the init only changes its root, as runc does."""
        add = self.plan.add
        skipped = [m["destination"] for m in self.config.get("mounts", ())]
        skipped += self.linux.get("maskedPaths", []) + self.linux.get("readonlyPaths", [])
        if skipped or self.config["root"].get("readonly"):
            warn("there is no mount namespace, so mounts, masked and read-only paths and "
                  "root.readonly are not applied (they would change the host)")
        add(P.SET_ROOT, f"open the rootfs {self.rootfs}", self.rootfs)
        self._cwd()
        self._create_hooks()
        add(P.CHROOT, "chroot into the rootfs (no mount namespace)", "plain")
        self._sysctl()
        self._names()

    def _mount(self, m, index):
        add = self.plan.add
        dst = m["destination"]
        typ = m.get("type", "")
        options = m.get("options", [])
        flags, _clear, prop, data = parse_mount_options(options)
        is_bind = typ == "bind" or flags & MS_BIND
        if typ in ("cgroup", "cgroup2"):
            return self._cgroup_mount(dst, flags, prop)
        if COPY_UP in options and (is_bind or typ != "tmpfs"):
            raise ConfigError(f"config.json: mounts: the mount option tmpcopyup is for tmpfs "
                              f"mounts, not the {'bind' if is_bind else shown(typ)} mount on "
                              f"{cut(dst)}; remove it")
        if is_bind:
            src = self._bind_source(m)
            resolve = P.IN_ROOT_DIR if os.path.isdir(src) else P.IN_ROOT_FILE
            rec = flags & MS_REC
            if index in self.idmapped:
                add(P.MOVE_TREE, f"bind-mount {src} idmapped on {dst}",
                    self.idmapped[index][0], dst, resolve)
            else:
                self._bind(src, dst, MS_BIND | rec, resolve, f"bind-mount {src} on {dst}")
            extra = flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
            if extra:
                add(P.MOUNT_EXISTING, f"apply options {','.join(options)} to {dst}", dst,
                    MS_BIND | MS_REMOUNT | extra, "")
        else:
            if not typ:
                raise ConfigError(f"config.json: mounts: the mount on {cut(dst)} needs a type "
                                  "(or the bind option)")
            src = m.get("source", typ)
            if typ == "sysfs" and self.userns and not self.own_netns:
                return self._sysfs_bind(dst)
            if self.unmapped and data:
                # devpts's gid=5 and the like name ids this namespace does not map (only 0)
                data = ",".join(o for o in data.split(",")
                                if not o.startswith(("uid=", "gid=")) or o[4:] == "0")
            keep = typ == "tmpfs" and not any(o.startswith("mode=") for o in data.split(","))
            resolve = P.IN_ROOT_DIR | (P.KEEP_MODE if keep else 0)
            if COPY_UP in options:
                self._copy_up_mount(src, dst, typ, flags & ~MS_REMOUNT, data, resolve)
            else:
                add(P.MOUNT, f"mount {typ} on {dst}", src, dst, typ, flags & ~MS_REMOUNT, data,
                    resolve)
        attr_set, attr_clr = recursive_attrs(options)
        if attr_set or attr_clr:
            add(P.SETATTR, f"apply recursive options to {dst}", dst, attr_set, attr_clr)
        if prop:
            add(P.MOUNT_EXISTING, f"set propagation of {dst}", dst, prop, "")

    def _sysfs_bind(self, dst):
        """sysfs can be mounted under a user namespace only with a network namespace of
        its own; without one, the host's /sys is bound instead, as crun does.  The bind
        carries the host's mounts below /sys, so the tree is made read-only (nosuid,
        nodev, noexec) throughout, and the host's cgroups are masked unless the config
        mounts its own there (crun masks them too)."""
        add = self.plan.add
        add(P.MOUNT, f"bind-mount /sys on {dst} (sysfs needs a network namespace of "
            "its own under a user namespace)", "/sys", dst, "", MS_BIND | MS_REC, "",
            P.IN_ROOT_DIR)
        add(P.SETATTR, f"make the /sys bound on {dst} read-only throughout", dst,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 0)
        cgroup = dst.rstrip("/") + "/fs/cgroup"
        if not any(m["destination"].rstrip("/") == cgroup for m in self.config.get("mounts", ())):
            add(P.MASK, f"mask the host's cgroups on {cgroup}", cgroup)

    def _copy_up_mount(self, src, dst, typ, flags, data, resolve):
        """tmpcopyup: the shim copies the files under DST into the new tmpfs; a
        read-only one is written first and made read-only after."""
        add = self.plan.add
        add(P.MOUNT, f"mount tmpfs on {dst} with the files under it copied up", src, dst, typ,
            flags & ~MS_RDONLY, data, resolve | P.COPY_UP)
        if flags & MS_RDONLY:
            add(P.MOUNT_EXISTING, f"make the tmpfs on {dst} read-only", dst,
                MS_REMOUNT | flags, data)

    def _bind_source(self, m):
        """A bind mount's source as an absolute host path (relative to the
        bundle), which must exist."""
        dst, src = m["destination"], m.get("source", "")
        if not src:
            raise ConfigError(f"config.json: mounts: the bind mount on {cut(dst)} needs a source")
        src = os.path.join(self.bundle, src) if not src.startswith("/") else src
        if not os.path.exists(src):
            raise ConfigError(f"config.json: mounts: the source {cut(src)} of the bind mount on "
                              f"{cut(dst)} does not exist")
        return src

    def _cgroup_mount(self, dst, flags, prop):
        """/sys/fs/cgroup inside: the container's own cgroup of each hierarchy, bound in."""
        add = self.plan.add
        if self.cgroup is None:
            return
        base = flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME)
        hs = self.hierarchies
        if any(h.version == 1 for h in hs):  # hybrid: runc and crun show the v1 hierarchies only
            hs = [h for h in hs if h.version == 1]
        tree = [(h, os.path.join(h.mountpoint, self.cgroup.rel)) for h in hs]
        if len(tree) == 1 and tree[0][0].version == 2 and not tree[0][0].name:
            h, src = tree[0]
            add(P.MOUNT, f"bind-mount the container's cgroup on {dst}", src, dst, "",
                MS_BIND | MS_REC, "", P.IN_ROOT_DIR)
            add(P.MOUNT_EXISTING, f"apply cgroup mount options to {dst}", dst,
                MS_BIND | MS_REMOUNT | flags & ~(MS_BIND | MS_REC), "")
            return
        add(P.MOUNT, f"mount a tmpfs for cgroups on {dst}", "tmpfs", dst, "tmpfs", base,
            "mode=755", P.IN_ROOT_DIR)
        for h, src in tree:
            sub = f"{dst.rstrip('/')}/{h.name}"
            add(P.MOUNT, f"bind-mount cgroup {src} on {sub}", src, sub, "", MS_BIND | MS_REC, "",
                P.IN_ROOT_DIR)
            add(P.MOUNT_EXISTING, f"apply cgroup mount options to {sub}", sub,
                MS_BIND | MS_REMOUNT | base | (flags & MS_RDONLY), "")
            if "," in h.name:
                for c in h.name.split(","):
                    add(P.SYMLINK, f"link {dst}/{c} to {h.name}", h.name, f"{dst.rstrip('/')}/{c}")
        if flags & MS_RDONLY:
            add(P.MOUNT_EXISTING, f"make {dst} read-only", dst, MS_REMOUNT | MS_RDONLY | base, "")
        if prop:
            add(P.MOUNT_EXISTING, f"set propagation of {dst}", dst, prop, "")

    def _devices(self, has_dev):
        add = self.plan.add
        devices = []
        if has_dev:
            devices = [{"path": p, "type": t, "major": ma, "minor": mi, "fileMode": 0o666}
                       for p, t, ma, mi in DEFAULT_DEVICES]
        # "/dev/x/" is "/dev/x", as runc has it (crun fails on the trailing slash)
        configured = [{**d, "path": device_path(d["path"])} for d in self.linux.get("devices", ())]
        paths = {d["path"] for d in configured}
        devices = [d for d in devices if d["path"] not in paths] + configured
        # a device the config bind-mounts (a host /dev/null, say) is already there
        mounted = {device_path(m["destination"]) for m in self.config.get("mounts", ())}
        devices = [d for d in devices if d["path"] not in mounted]
        for d in devices:
            path = d["path"]
            if self.userns and d["type"] != "p":
                # mknod is not allowed in a user namespace: bind the host's node.
                host_node(d)
                self._bind(path, path, MS_BIND, P.IN_ROOT_FILE, f"bind-mount device {path}")
                continue
            # `type` decides the kind of node; type bits in fileMode (podman writes
            # them) are dropped, as runc does (crun would mknod what they say); a
            # node already in the rootfs stays as it is, as in both
            mode = DEVICE_MODE[d["type"]] | (d.get("fileMode", 0o666) & 0o7777)
            add(P.MKNOD, f"create device {path}", path, mode, d.get("major", 0),
                d.get("minor", 0), d.get("uid", 0), d.get("gid", 0))
        if has_dev:
            for target, link in (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                                 ("/proc/self/fd/1", "/dev/stdout"),
                                 ("/proc/self/fd/2", "/dev/stderr")):
                add(P.SYMLINK, f"link {link}", target, link)
            if any(m["destination"].rstrip("/") == "/dev/pts"
                   for m in self.config.get("mounts", ())):
                add(P.SYMLINK, "link /dev/ptmx", "pts/ptmx", "/dev/ptmx")

    def _hook_ops(self, kind):
        hooks = self.hooks.get(kind)
        if not hooks:
            return  # no import then: the cold path pays each module's load
        from .hooks import timeout
        for i, hook in enumerate(hooks):
            args = hook.get("args", [])
            # the shim hands env to execve as it is, as runc and crun do
            self.plan.add(P.HOOK, f"{kind} hook {i} ({shown(hook['path'])})",
                          timeout(hook) or 0, hook["path"], self.hook_state, len(args), *args,
                          *hook.get("env", ()))

    # -- init: the process --
    def _process(self, seccomp_bpf):
        if self.process is None:
            # Allowed until `start` (process is REQUIRED only if start is called).
            self.plan.add(P.READY, "report ready")
            self.plan.add(P.BARRIER, "wait for start", self.barrier)
            self.plan.add(P.FAIL, "cannot start: the config has no process to run")
            return
        process_ops(self.plan, self.process, self.linux, seccomp_bpf, self.preserve_fds,
                    barrier=self.barrier, console=self.console,
                    after_barrier=lambda: self._hook_ops("startContainer"))


def _scheduling_ops(add, proc, linux_cfg):
    """While still root with every capability (raising a priority needs CAP_SYS_NICE)."""
    from . import scheduling
    if linux_cfg.get("memoryPolicy"):
        add(P.MEMPOLICY, f"set the memory policy {linux_cfg['memoryPolicy']['mode']}",
            *scheduling.mempolicy_args(linux_cfg["memoryPolicy"]))
    if proc.get("scheduler"):
        add(P.SCHED, f"set the scheduler {proc['scheduler']['policy']}",
            *scheduling.sched_args(proc["scheduler"]))
    if proc.get("ioPriority"):
        add(P.IOPRIO, f"set the I/O priority {proc['ioPriority']['class']}",
            *scheduling.ioprio_args(proc["ioPriority"]))


def device_path(path):
    """A device's in-root path without trailing or doubled slashes."""
    return "/" + os.path.normpath(path).lstrip("/")


def host_node(d):
    """Under a user namespace a device is the host's node at its path: it must be
    there and be the device the config names (never another one bound silently)."""
    import stat
    path, kind = d["path"], d["type"]
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"config.json: linux.devices: {cut(path)} cannot be bound from the "
                          f"host ({e.strerror}): a user-namespaced container gets the host's "
                          "node, as mknod is not allowed there") from None
    want = stat.S_ISBLK if kind == "b" else stat.S_ISCHR
    if not want(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (
            d.get("major"), d.get("minor")):
        raise ConfigError(f"config.json: linux.devices: the host's {cut(path)} is not the "
                          f"device {kind} {d.get('major')}:{d.get('minor')} the config names; "
                          "a user-namespaced container can only bind the host's node: "
                          "fix major/minor or the path")


def unmapped_userns(linux_cfg):
    """A new user namespace the config maps no ids into: as crun, its root is the
    runtime's own uid and gid (size 1), and no other id can be switched to."""
    return (not linux_cfg.get("uidMappings") and
            any(ns["type"] == "user" and not ns.get("path")
                for ns in linux_cfg.get("namespaces", ())))


def process_ops(plan, proc, linux_cfg, seccomp_bpf, preserve_fds, barrier, console=None,
                new_session=False, after_barrier=None):
    """Terminal to execve: what both a container's init and an exec'd process do."""
    add = plan.add
    if new_session:
        add(P.SETSID, "start a new session")
    if console is not None:
        add(P.CONSOLE, "set up the terminal (process.terminal)", *console)
    pers = linux_cfg.get("personality")
    if pers:
        value = PERSONALITY_DOMAIN[pers.get("domain", "LINUX")]
        for f in pers.get("flags", ()):
            if f not in PERSONALITY_FLAGS:
                raise ConfigError(f"config.json: linux.personality.flags: unknown flag {shown(f)}")
            value |= PERSONALITY_FLAGS[f]
        add(P.PERSONALITY, f"set personality {pers.get('domain', 'LINUX')}", value)
    for rl in proc.get("rlimits", ()):
        add(P.RLIMIT, f"set {rl['type']} to soft {rl['soft']}, hard {rl['hard']}",
            RLIMITS[rl["type"]], rl["soft"], rl["hard"])
    if wants_scheduling(proc, linux_cfg):
        _scheduling_ops(add, proc, linux_cfg)
    add(P.RESOLVE_CWD, f"enter process.cwd {proc['cwd']}", proc["cwd"])
    env = proc.get("env", [])
    path = next((e[5:] for e in env if e.startswith("PATH=")),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    add(P.RESOLVE_EXEC, f"find the executable {shown(proc['args'][0])}", proc["args"][0], path)
    nnp = proc.get("noNewPrivileges", False)
    if nnp:
        add(P.NO_NEW_PRIVS, "set no_new_privs")
    # (flags, bpf[, socket]): with a socket the filter notifies an agent, and its
    # listener fd goes back to the runtime before `ready`, whatever no_new_privs says
    early = seccomp_bpf is not None and (not nnp or len(seccomp_bpf) > 2)
    if early:
        # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while
        # the process still has it (as runc and crun do).
        add(P.SECCOMP, "load the seccomp filter", *seccomp_bpf)
    caps = proc.get("capabilities")
    if caps is not None:
        add(P.CAPS_BOUNDING, "drop capabilities from the bounding set",
            capabilities.mask(caps.get("bounding", ())))
    user = proc["user"]
    if user["uid"] or user["gid"]:
        add(P.CHOWN_STDIO, f"give stdio to uid {user['uid']}, gid {user['gid']}", user["uid"],
            user["gid"])
    add(P.USER, f"switch to uid {user['uid']}, gid {user['gid']}", user["uid"], user["gid"],
        user.get("umask", -1), *user.get("additionalGids", ()))
    if caps is not None:
        add(P.CAPS, "set capabilities",
            capabilities.mask(caps.get("effective", ())),
            capabilities.mask(caps.get("permitted", ())),
            capabilities.mask(caps.get("inheritable", ())),
            capabilities.mask(caps.get("ambient", ())))
    add(P.READY, "report ready")
    if barrier:
        add(P.BARRIER, "wait for start", barrier)
        if after_barrier:
            after_barrier()
        add(P.STARTED, "report started")
    if seccomp_bpf is not None and not early:
        add(P.SECCOMP, "load the seccomp filter", seccomp_bpf[0], seccomp_bpf[1])
    args = proc["args"]
    add(P.EXEC, "exec the process", preserve_fds, len(args), *args, *env)


# The order an exec'd process joins the container's namespaces: user first, so
# it holds capabilities over the others; mount after the ones found through /proc.
EXEC_JOIN_ORDER = ("user", "mount", "network", "uts", "ipc", "cgroup")


def exec_plan(config, init_pid, cgroup, proc, seccomp_bpf, preserve_fds=0, console=None):
    """Plan for a process joining a running container."""
    plan = P.Plan()
    add = plan.add
    ns = namespaces(config)
    slots = {}
    for t in ("pid", "time") + EXEC_JOIN_ORDER:
        if t in ns:
            slots[t] = len(slots)
            add(P.NS_OPEN, f"open the container's {t} namespace",
                f"/proc/{init_pid}/ns/{NS_PROC_NAME[t]}", slots[t])
    for t in ("pid", "time"):
        if t in slots:
            add(P.NS_ENTER, f"join the container's {t} namespace", slots[t], CLONE_FLAGS[t])
    add(P.CLONE, "clone the process", 0)
    if "oomScoreAdj" in proc:
        add(P.CHILD_WRITE, f"set process.oomScoreAdj to {proc['oomScoreAdj']}",
            "oom_score_adj", proc["oomScoreAdj"])
    if cgroup is not None:
        for procs in cgroup.procs_files():
            add(P.CHILD_WRITE, f"move the process into cgroup {procs}", procs, "$PID")
    add(P.CHILD, "start the process")
    for t in EXEC_JOIN_ORDER:
        if t in slots:
            add(P.NS_ENTER, f"join the container's {t} namespace", slots[t], CLONE_FLAGS[t])
    add(P.SET_ROOT, "open the container's root", "/")
    # its own session and process group, as runc does (crun leaves it in ours)
    process_ops(plan, proc, config.get("linux", {}), seccomp_bpf, preserve_fds, barrier=False,
                console=console, new_session=True)
    return plan
