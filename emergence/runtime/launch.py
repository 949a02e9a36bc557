"""Start the shim with a plan and follow it until the init is ready.

The shim runs from a sealed memfd copy of its binary, so /proc/<init>/exe
inside the container names an unwritable in-memory file, never a host
executable or this interpreter (the CVE-2019-5736 class).
"""

import errno
import fcntl
import os

from ..errors import EmergenceError
from . import parent
from .state import crashpoint

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emergence-shim")
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


# The sealed copy this process made, kept for its next calls: (descriptor,
# (st_dev, st_ino)).  A planner makes it once, in its warm-up, and its
# workers share it: sealed, it is as unwritable for one container as for
# the next, and a create or exec then copies nothing (~850 KB).
_kept = None


def sealed_shim():
    """A descriptor (close it) of a read-only, sealed in-memory copy of the shim binary."""
    global _kept
    if _kept is not None:
        fd, ident = _kept
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == ident:
                return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        except OSError:
            pass
        _kept = None  # closed (a worker taking a call): not ours to close now
    mfd = _copy_shim()
    try:
        kept = parent.keep(fcntl.fcntl(mfd, fcntl.F_DUPFD_CLOEXEC, 3))
        st = os.fstat(kept)
        _kept = (kept, (st.st_dev, st.st_ino))
    except OSError:
        pass  # no descriptor to spare: a copy per call
    return mfd


def warm_up(_scratch):
    """The planner's copy, made before it forks its workers."""
    os.close(sealed_shim())


def _copy_shim():
    try:
        src = os.open(SHIM, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EmergenceError(f"the shim {SHIM} is missing: reinstall emergence "
                             "(pip install .)") from None
    try:
        mfd = os.memfd_create("emergence-shim", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        size = os.fstat(src).st_size
        sent = 0
        while sent < size:
            sent += os.sendfile(mfd, src, sent, size - sent)
        fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, SEALS)
        return mfd
    finally:
        os.close(src)


class Gate:
    """A pipe the launcher waits on after it cloned the init (the plan's GATE),
    so that a create spawns the shim before the container's cgroups exist: the
    shim's exec and clone then run beside the kernel's wait for cgroup_mutex
    (a grace period, when no cgroup move came lately), not after it.  One
    byte lets the launcher go on; the pipe closed without it ends the launch
    (the launcher kills the init)."""

    def __init__(self, min_fd):
        r, self.w = os.pipe2(os.O_CLOEXEC)
        self.fd = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, min_fd)  # the launcher's end
        os.close(r)

    def spawned(self):
        os.close(self.fd)
        self.fd = None

    def open(self):
        os.write(self.w, b"g")
        self.close()

    def close(self):
        for fd in (self.fd, self.w):
            if fd is not None:
                os.close(fd)
        self.fd = self.w = None


class Launch:
    """One run of the shim: spawn, then read 'pid', 'ready' or 'error'."""

    def __init__(self, plan_bytes, min_fd=3, pass_fds=(), gate=None):
        self.init_pid = None
        self.launcher_pid = None
        self.gate = gate  # a Gate in the plan: the launch waits for gate.open()
        if gate is not None:
            pass_fds = (*pass_fds, gate.fd)
        plan_fd = os.memfd_create("emergence-plan", os.MFD_CLOEXEC)
        os.write(plan_fd, plan_bytes)
        os.lseek(plan_fd, 0, os.SEEK_SET)
        r, w = os.pipe2(os.O_CLOEXEC)
        # Fds handed to the shim sit above the ones the container may keep.
        hi_plan = fcntl.fcntl(plan_fd, fcntl.F_DUPFD_CLOEXEC, min_fd + 3)
        hi_w = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, min_fd + 3)
        os.close(plan_fd)
        os.close(w)
        mfd = sealed_shim()
        try:
            for fd in (hi_plan, hi_w, *pass_fds):
                os.set_inheritable(fd, True)
            self.launcher_pid = parent.spawn(
                mfd, ["emergence-shim", str(hi_plan), str(hi_w)], (hi_plan, hi_w, *pass_fds))
        finally:
            for fd in pass_fds:
                os.set_inheritable(fd, False)
            os.close(mfd)
            os.close(hi_plan)
            os.close(hi_w)
            if gate is not None:
                gate.spawned()
        self.status_fd = r

    def wait_ready(self, on_sync=None, listener=None):
        """Block until the init waits at the start barrier; raise with the shim's words.
        ON_SYNC(label) runs when the init pauses at a sync point (runtime hooks).
        LISTENER (seccomp.Listener): the seccomp listener fd the init sends goes to
        the agent as soon as it comes, with the init's pid."""
        buf = b""
        error = None
        ready = False
        poller = None
        if listener is not None:
            import select
            poller = select.poll()
            poller.register(self.status_fd, select.POLLIN)
            poller.register(listener.fileno(), select.POLLIN)
        try:
            while not ready and error is None:
                if poller is not None and not self._serve(poller, listener):
                    continue
                chunk = os.read(self.status_fd, 4096)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    word, _, rest = line.decode("utf-8", "replace").partition(" ")
                    if word == "pid":
                        self.init_pid = int(rest)
                        crashpoint("launch:pid")
                        if listener is not None:
                            listener.deliver(self.init_pid)
                    elif word == "ready":
                        ready = True
                    elif word == "sync" and on_sync is not None:
                        on_sync(rest)
                    elif word == "error":
                        code, _, what = rest.partition(" ")
                        error = (int(code), what)
        finally:
            os.close(self.status_fd)
            self.status_fd = None
            self._reap_launcher()
        if ready:
            if listener is not None:
                listener.finish(self.init_pid)
            return self.init_pid
        if error is not None:
            raise ShimError(*error)
        raise EmergenceError(self._death_reason())

    def _serve(self, poller, listener):
        """Wait for the status pipe or the listener; True when the pipe is readable."""
        status = False
        for fd, _ in poller.poll():
            if fd == self.status_fd:
                status = True
            elif not listener.receive():
                poller.unregister(fd)  # the init's end is closed (sent, or died)
            else:
                listener.deliver(self.init_pid)
        return status

    def _drain(self):
        """Read the status pipe to its end, killing the init as soon as the
        launcher says its pid (right after the clone; an init not yet reaped
        keeps its pid): the launcher then stops too, and the pipe ends.  Then
        reap the launcher."""
        buf = b""
        try:
            while chunk := os.read(self.status_fd, 4096):
                buf += chunk
                if self.init_pid is None:
                    said = [w for w in buf.split(b"\n")[:-1] if w.startswith(b"pid ")]
                    if said:
                        self.init_pid = int(said[0][4:])
                        try:
                            os.kill(self.init_pid, 9)
                        except ProcessLookupError:
                            pass
        finally:
            os.close(self.status_fd)
            self.status_fd = None
            self._reap_launcher()

    def _reap_launcher(self):
        if self.launcher_pid:
            try:
                parent.waitpid(self.launcher_pid, 0)
            except ChildProcessError:
                pass
            self.launcher_pid = None

    def _death_reason(self):
        if self.init_pid is None:
            return "the shim exited before starting the container init"
        try:
            _, status = parent.waitpid(self.init_pid, 0)
        except ChildProcessError:
            return "the container init exited during setup"
        self.init_pid = None
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            hint = " (out of memory? check linux.resources.memory.limit)" if sig == 9 else ""
            return f"the container init was killed by signal {sig} during setup{hint}"
        return f"the container init exited with status {os.WEXITSTATUS(status)} during setup"

    def abort(self):
        """Kill and reap an init that will not be used.  A launch still at its
        gate gives up once the gate closes; one whose words were never read
        (a failure before wait_ready) says the init's pid first thing."""
        if self.gate is not None:
            self.gate.close()
        if self.status_fd is not None:
            self._drain()
        if self.init_pid:
            try:
                os.kill(self.init_pid, 9)
                parent.waitpid(self.init_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.init_pid = None


class ShimError(EmergenceError):
    """An operation in the shim failed: `what` names it, errno says why."""

    def __init__(self, err, what):
        self.errno = err
        self.what = what
        if err == 0:  # the shim worded the whole message
            super().__init__(what)
        else:
            super().__init__(f"{what}: {os.strerror(err)}{hint_for(err, what)}")


def hint_for(err, what):
    if "RLIMIT_" in what and err == errno.EPERM:
        return (" (raising a hard limit needs CAP_SYS_RESOURCE, which this host does not "
                "grant; lower the hard limit in process.rlimits to the current one)")
    if what.startswith("switch to uid") and err == errno.EINVAL:
        return " (the container's user namespace does not map this id)"
    if what.startswith("open ") and "user namespace" in what and err == errno.EACCES:
        return " (even root on the host may not open it)"
    if what.startswith("find the executable"):
        if err == errno.ENOENT:
            return " (not found in the container's rootfs or its $PATH)"
        if err == errno.EACCES:
            return " (not an executable regular file)"
    if what.startswith("enter process.cwd") and err in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return " (process.cwd must be a directory inside the rootfs)"
    if "oomScoreAdj" in what and err in (errno.EACCES, errno.EPERM):
        return " (lowering oom_score_adj needs CAP_SYS_RESOURCE)"
    if what.startswith("set the scheduler SCHED_") and err == errno.EPERM and (
            "FIFO" in what or "RR" in what or "DEADLINE" in what):
        return (" (a realtime policy needs a realtime budget in the container's cgroup: "
                "set linux.resources.cpu.realtimeRuntime, or use SCHED_OTHER, SCHED_BATCH "
                "or SCHED_IDLE)")
    if what.startswith("set the memory policy") and err == errno.EINVAL:
        return " (check linux.memoryPolicy.nodes against the host's online nodes)"
    if what.startswith("clone ") and "idmapped" in what and err in (errno.EINVAL,
                                                                    errno.EOPNOTSUPP):
        return " (the source's file system may not support idmapped mounts)"
    if "copied up" in what:  # tmpcopyup (csrc/copyup.c)
        hint = {errno.ELOOP: "the tree under the mount point is more than 64 directories deep",
                errno.EPERM: "a device node under the mount point cannot be made here",
                errno.EINVAL: "a file under the mount point belongs to an id the user "
                              "namespace does not map"}.get(err)
        if hint:
            return f" ({hint}; drop tmpcopyup or change the image)"
    if err == errno.EOVERFLOW:
        return (" (the file would belong to an id the user namespace does not map; add "
                "linux.uidMappings and gidMappings that cover it)")
    if err == errno.ELOOP and what.startswith(("mount", "bind-mount")):
        return " (the destination is a symlink that leads nowhere inside the rootfs)"
    return ""
