"""Compile linux.seccomp to a BPF program with libseccomp, and hand a
seccomp agent its listener.

Compilation happens here, in the runtime; the shim only installs the
program (as late as the spec allows).  libseccomp is loaded lazily: the
cffi extension is imported only for configs that ask for seccomp.

Seccomp notify (SCMP_ACT_NOTIFY): the init loads the filter with
SECCOMP_FILTER_FLAG_NEW_LISTENER and passes the listener fd back to the
runtime through a socketpair (SCM_RIGHTS); the runtime (`create`, `exec`)
sends it to `listenerPath` with the container process state, as runc and
crun do.  The runtime keeps no copy.
"""

import errno
import os

from ..errors import ConfigError, EmergenceError

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
NEW_LISTENER = 8  # SECCOMP_FILTER_FLAG_NEW_LISTENER: seccomp(2) returns the listener fd
ACT_NOTIFY = 0x7FC00000
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
    if name == "SCMP_ACT_NOTIFY":  # config.py made sure listenerPath is set
        return ACT_NOTIFY
    raise ConfigError(f"config.json: {where}: unknown action {name}")


def wants_listener(seccomp):
    """The filter notifies an agent: some rule uses SCMP_ACT_NOTIFY (listenerPath is
    ignored otherwise, as the spec says)."""
    return bool(seccomp.get("listenerPath")) and any(
        r["action"] == "SCMP_ACT_NOTIFY" for r in seccomp.get("syscalls", ()))


def filter_flags(seccomp):
    flags = NEW_LISTENER if wants_listener(seccomp) else 0
    for name in seccomp.get("flags", ()):
        flags |= FLAGS[name]
    if flags & NEW_LISTENER:
        flags &= ~FLAGS["SECCOMP_FILTER_FLAG_TSYNC"]  # EINVAL with a listener; one thread
    return flags


class Listener:
    """The runtime's end of the socketpair the init sends its listener fd on, and
    the hand-over to the agent at listenerPath.  `Launch.wait_ready` serves it
    while the init sets up: a notified syscall may block the init before `ready`."""

    def __init__(self, seccomp, state, min_fd):
        import fcntl
        import socket
        self.path = seccomp["listenerPath"]
        self.metadata = seccomp.get("listenerMetadata")
        self.state = state  # state(pid) -> the container's state for the agent
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:  # the init's end sits above the fds the container keeps
            self.child_fd = fcntl.fcntl(child.fileno(), fcntl.F_DUPFD_CLOEXEC, min_fd)
        finally:
            child.close()
        self.fd = None
        self.sent = False

    def fileno(self):
        return self.sock.fileno()

    def spawned(self):
        """The shim holds the init's end now."""
        os.close(self.child_fd)
        self.child_fd = None

    def receive(self, block=False):
        """Take what the init sent (its listener fd); False at the end (its end closed)."""
        import socket
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 1, 1, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        for fd in fds:
            if self.fd is None and not self.sent:
                self.fd = fd
            else:
                os.close(fd)
        return bool(data)

    def deliver(self, pid):
        """Send the listener and the container process state to the agent, once."""
        if self.fd is None or pid is None:
            return
        import socket

        from .. import OCI_VERSION, fastjson
        msg = {"ociVersion": OCI_VERSION, "fds": ["seccompFd"], "pid": pid,
               "state": self.state(pid)}
        if self.metadata:
            msg["metadata"] = self.metadata
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.settimeout(10)
            s.connect(self.path)
            socket.send_fds(s, [fastjson.dumps(msg).encode()], [self.fd])
        except OSError as e:
            raise EmergenceError(f"linux.seccomp.listenerPath: cannot hand the seccomp "
                              f"listener to the agent at {self.path}: "
                              f"{e.strerror or e}; is it listening?") from None
        finally:
            s.close()
            os.close(self.fd)
            self.fd = None
        self.sent = True

    def finish(self, pid):
        """After `ready`: the init sent the fd before it (the filter is loaded before
        the user switch), so it is there to take."""
        if not self.sent:
            if self.fd is None:
                self.receive(block=True)
            if self.fd is None:
                raise EmergenceError("linux.seccomp: the container init did not hand over "
                                     "its seccomp listener")
            self.deliver(pid)

    def close(self):
        for fd in (self.child_fd, self.fd):
            if fd is not None:
                os.close(fd)
        self.child_fd = self.fd = None
        self.sock.close()


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
