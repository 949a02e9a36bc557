"""`create`: set the container up and leave its init waiting at the start barrier.

Everything that can be checked is checked before anything is made; after
that, any failure undoes what was made (init, cgroup, state dir), so a
failed create leaves nothing behind.
"""

import os
import time

from .. import OCI_VERSION, fastjson
from ..errors import EmergenceError
from . import config as config_mod
from .cgroups.hierarchy import discover
from .cgroups.manager import Cgroup
from .cgroups.paths import relative_path
from .nethooks import add_network_hooks
from .state import FIFO, Container, check_id, proc_start_time, write_atomic


def _rfc3339_now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _device_allow(config):
    """linux.resources.devices plus what every container must be able to use."""
    from .planner import DEFAULT_DEVICE_ALLOW
    linux = config.get("linux", {})
    res = linux.get("resources")
    if not res or "devices" not in res:
        return res
    extra = list(DEFAULT_DEVICE_ALLOW)
    for d in linux.get("devices", ()):
        if d["type"] != "p":
            extra.append({"allow": True, "type": "c" if d["type"] == "u" else d["type"],
                          "major": d["major"], "minor": d["minor"], "access": "rwm"})
    return {**res, "devices": list(res["devices"]) + extra}


def _root_ids(config):
    """Host uid and gid that the container's root maps to."""
    linux = config.get("linux", {})

    def host(mappings):
        for m in mappings:
            if m["containerID"] <= 0 < m["containerID"] + m["size"]:
                return m["hostID"] - m["containerID"]
        return 0
    return host(linux.get("uidMappings", ())), host(linux.get("gidMappings", ()))


def check_capabilities_held(process):
    """A capability the runtime itself lacks cannot be given (capset says only
    EPERM): name it.  Here CAP_SYS_RESOURCE is commonly missing."""
    from .capabilities import CAPABILITIES, mask
    caps = (process or {}).get("capabilities")
    if not caps:
        return
    wanted = 0
    for k in ("permitted", "effective", "inheritable", "ambient"):
        wanted |= mask(caps.get(k, ()))
    with open("/proc/self/status") as f:
        held = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    missing = wanted & ~held
    if missing:
        names = [n for n, bit in CAPABILITIES.items() if missing >> bit & 1]
        raise EmergenceError(f"process.capabilities asks for {', '.join(names)}, which this "
                             "runtime does not hold itself (its bounding set lacks it); "
                             "remove it from the config")


def create(root, container_id, bundle, pid_file=None, no_pivot=False, preserve_fds=0,
           debug=False, console_socket=None, keep_terminal=False, nets=(), publish=()):
    """Create the container; return (init pid, pty master or None). The caller owns the
    init.  With process.terminal, the pty master goes to CONSOLE_SOCKET, or, with
    KEEP_TERMINAL (a foreground `run`), is returned to proxy."""
    from .launch import Launch
    from .planner import Planner

    check_id(container_id)  # before the config: a bad id is the first thing to say
    bundle = os.path.abspath(bundle)
    config = config_mod.load(bundle)
    add_network_hooks(config, nets, publish)
    rootfs = config_mod.root_path(config, bundle)
    linux = config.get("linux", {})
    bpf = None
    if linux.get("seccomp"):
        from .seccomp import compile_bpf, filter_flags
        bpf = (filter_flags(linux["seccomp"]), compile_bpf(linux["seccomp"]).hex())
    terminal = config.get("process", {}).get("terminal", False)
    if terminal and not console_socket and not keep_terminal:
        raise EmergenceError("process.terminal is true but there is no --console-socket to "
                             "hand the terminal to; pass one, or set terminal to false")
    check_capabilities_held(config.get("process"))
    if config.get("process"):
        from .userdb import set_home
        set_home(config["process"], rootfs)
    hierarchies = discover()
    rel = relative_path(linux.get("cgroupsPath"), container_id)

    c = Container.claim(root, container_id)
    cg = Cgroup(hierarchies, rel)
    launch = None
    console = None
    resume = None
    try:
        write_atomic(os.path.join(c.dir, "config.json"), fastjson.dumps(config).encode())
        c.data = {"ociVersion": config.get("ociVersion", OCI_VERSION), "id": container_id,
                  "status": "creating", "bundle": bundle, "rootfs": rootfs,
                  "created": _rfc3339_now(), "annotations": config.get("annotations", {}),
                  "cgroup": {"rel": rel, "created": cg.created}}
        c.save()  # names the cgroup, for delete --force after a crash
        resources = _device_allow(config)
        cg.create(resources)
        cg.apply(resources)
        # Writable by the init whatever user it becomes (runc uses the same
        # mode); only `start`, as root, can read it and so release the init.
        fifo = os.path.join(c.dir, FIFO)
        os.mkfifo(fifo, 0o622)
        os.chmod(fifo, 0o622)  # not subject to the umask
        uid, gid = _root_ids(config)
        if (uid, gid) != (0, 0):
            os.chown(fifo, uid, gid)
        console_plan = None
        if terminal:
            from .terminal import Console
            console = Console(console_socket, min_fd=3 + preserve_fds)
            console_plan = (console.fd, *console.size(config["process"]))
        hooks = config.get("hooks", {})
        pass_fds = [console.fd] if console else []
        hook_state = None
        if any(hooks.get(k) for k in ("createContainer", "startContainer")):
            from .hooks import state_template
            hook_state = state_template(c.data, "created")
        if hooks.get("prestart") or hooks.get("createRuntime"):
            import fcntl
            r, w = os.pipe2(os.O_CLOEXEC)
            resume = (fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 3 + preserve_fds), w)
            os.close(r)
            pass_fds.append(resume[0])
        planner = Planner(config, bundle, rootfs, c.dir, cg, hierarchies, no_pivot=no_pivot,
                          preserve_fds=preserve_fds, console=console_plan,
                          hook_state=hook_state, resume_fd=resume[0] if resume else None)
        plan = planner.build(bpf)
        if debug:
            os.write(2, "".join(f"emergence: plan: {line}\n"
                                for line in plan.describe()).encode())
        launch = Launch(plan.encode(), min_fd=3 + preserve_fds, pass_fds=pass_fds)

        def runtime_hooks(_label):
            from . import hooks as hk
            # Step 3 of the lifecycle: the environment is created (runc reports the same)
            state = hk.oci_state(c.data, "created", launch.init_pid)
            hk.run("prestart", hooks.get("prestart", ()), state)
            hk.run("createRuntime", hooks.get("createRuntime", ()), state)
            os.write(resume[1], b"g")

        if resume:
            os.close(resume[0])
            resume = (None, resume[1])
        pid = launch.wait_ready(on_sync=runtime_hooks)
        master = console.handed_over() if console else None
        console = None
        st = proc_start_time(pid)
        if st is None:
            raise EmergenceError("the container init exited right after setup")
        c.data.update(status="created", pid=pid, startTime=st[1],
                      freezer=cg.freezer_file())
        c.save()
        if pid_file:
            write_atomic(os.path.abspath(pid_file), f"{pid}".encode(), 0o644)
        if resume is not None:
            os.close(resume[1])
            resume = None
        return pid, master
    except BaseException:
        if console is not None:
            console.close()
        for fd in resume or ():
            if fd is not None:
                os.close(fd)  # an init waiting on the pipe gives up
        if launch is not None:
            launch.abort()
        try:
            cg.remove()
        finally:
            c.remove_dir()
        raise
    finally:
        c.close()
