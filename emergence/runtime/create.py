"""`create`: set the container up and leave its init waiting at the start barrier.

Everything that can be checked is checked before anything is made; after
that, any failure undoes what was made (init, cgroup, state dir), so a
failed create leaves nothing behind.  A create that is killed (kill -9) cannot
undo anything, so each step is recorded before it is taken: state.json names
the cgroup before it is made, and config.json (the hooks `delete` runs) is saved
before the shim starts; what is not recorded, the kernel knows (the cgroup's
processes).  `state` then says `stopped` and `delete` removes the rest.
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
from .state import FIFO, Container, check_id, crashpoint, proc_start_time, write_atomic


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


def _host_id(mappings, cid):
    for m in mappings:
        if m["containerID"] <= cid < m["containerID"] + m["size"]:
            return m["hostID"] + cid - m["containerID"]
    return None


def _barrier_ids(config):
    """Host uid and gid the init has when it opens exec.fifo (the process's user,
    seen from the host), so the fifo can be its alone (0600); None when that is
    not known here (a user namespace joined by path, without mappings)."""
    linux = config.get("linux", {})
    user = (config.get("process") or {}).get("user") or {"uid": 0, "gid": 0}
    userns = next((n for n in linux.get("namespaces", ()) if n.get("type") == "user"), None)
    if userns is None:
        return user.get("uid", 0), user.get("gid", 0)
    uids, gids = linux.get("uidMappings"), linux.get("gidMappings")
    if userns.get("path") or not uids or not gids:
        # unmapped: its root is our own uid and gid (planner.unmapped_userns)
        return None if userns.get("path") else (os.geteuid(), os.getegid())
    uid, gid = _host_id(uids, user.get("uid", 0)), _host_id(gids, user.get("gid", 0))
    return None if uid is None or gid is None else (uid, gid)


def socket_activation(config, preserve_fds):
    """Socket activation, as runc: when LISTEN_PID names this call, systemd's
    LISTEN_FDS descriptors (from 3 on) cross into the container ahead of the
    --preserve-fds ones, with LISTEN_FDS=N and LISTEN_PID=1 (the process, as the
    container sees it).  Returns the descriptors to preserve in all."""
    from .parent import caller_pid
    n = os.environ.get("LISTEN_FDS", "")
    if not n.isdigit() or int(n) == 0 or os.environ.get("LISTEN_PID") != str(caller_pid()):
        return preserve_fds
    n = int(n)
    for fd in range(3, 3 + n):
        try:
            os.fstat(fd)
        except OSError:
            raise EmergenceError(f"LISTEN_FDS={n}, but descriptor {fd} is not open; "
                                 "fix the socket unit or unset LISTEN_FDS") from None
    if config.get("process"):
        env = [e for e in config["process"].get("env", ())
               if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
        config["process"]["env"] = env + [f"LISTEN_FDS={n}", "LISTEN_PID=1"]
    return preserve_fds + n


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
    from .launch import Gate, Launch
    from .planner import Planner

    check_id(container_id)  # before the config: a bad id is the first thing to say
    bundle = os.path.abspath(bundle)
    config = config_mod.load(bundle)
    add_network_hooks(config, nets, publish)
    if "LISTEN_FDS" in os.environ:
        preserve_fds = socket_activation(config, preserve_fds)
    rootfs = config_mod.root_path(config, bundle)
    linux = config.get("linux", {})
    bpf = None
    notify = False
    if linux.get("seccomp"):
        from .seccomp import compile_bpf, filter_flags, wants_listener
        bpf = (filter_flags(linux["seccomp"]), compile_bpf(linux["seccomp"]).hex())
        notify = wants_listener(linux["seccomp"])
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

    # state.json names the cgroup before it exists, for delete --force after a crash
    c = Container.claim(root, container_id, {
        "ociVersion": config.get("ociVersion", OCI_VERSION), "id": container_id,
        "status": "creating", "bundle": bundle, "rootfs": rootfs, "created": _rfc3339_now(),
        "annotations": config.get("annotations", {}), "cgroup": {"rel": rel, "created": []}})
    crashpoint("create:claimed")
    cg = Cgroup(hierarchies, rel)
    launch = None
    gate = None
    console = None
    resume = None
    fifo_fd = None
    listener = None
    try:
        if os.environ.get("NOTIFY_SOCKET"):  # sd_notify from the container, as runc
            from .sdnotify import prepare
            prepare(config, c.dir)
        write_atomic(os.path.join(c.dir, "config.json"), fastjson.dumps(config).encode())
        crashpoint("create:config")
        # The init opens the fifo for writing (and blocks there) as the process's
        # user, through /proc/self/fd and a descriptor of it that we open here:
        # the state dir is 0700, so no path leads there but root's.
        fifo = os.path.join(c.dir, FIFO)
        os.mkfifo(fifo, 0o600)
        ids = _barrier_ids(config)
        if ids is not None and ids != (0, 0):
            os.chown(fifo, *ids)
        # not subject to the umask; an init of unknown uid gets 0622, still behind
        # two 0700 directories
        os.chmod(fifo, 0o600 if ids is not None else 0o622)
        import fcntl
        fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
        fifo_fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + preserve_fds)
        os.close(fd)
        crashpoint("create:fifo")
        console_plan = None
        if terminal:
            from .terminal import Console
            console = Console(console_socket, min_fd=3 + preserve_fds)
            console_plan = (console.fd, *console.size(config["process"]))
        hooks = config.get("hooks", {})
        pass_fds = [fifo_fd] + ([console.fd] if console else [])
        hook_state = None
        if any(hooks.get(k) for k in ("createContainer", "startContainer")):
            from .hooks import state_template
            hook_state = state_template(c.data, "created")
        if hooks.get("prestart") or hooks.get("createRuntime"):
            r, w = os.pipe2(os.O_CLOEXEC)
            resume = (fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 3 + preserve_fds), w)
            os.close(r)
            pass_fds.append(resume[0])
        if notify:
            from .hooks import oci_state
            from .seccomp import Listener
            listener = Listener(linux["seccomp"], lambda pid: oci_state(c.data, "creating", pid),
                                3 + preserve_fds)
            pass_fds.append(listener.child_fd)
            bpf = (*bpf, listener.child_fd)
        # The shim is spawned first and waits at the gate once it has cloned
        # the init: its exec and clone run while the cgroups are made.
        gate = Gate(3 + preserve_fds)
        planner = Planner(config, bundle, rootfs, "/proc/self/fd", cg, hierarchies,
                          no_pivot=no_pivot, barrier=str(fifo_fd),
                          preserve_fds=preserve_fds, console=console_plan,
                          hook_state=hook_state, resume_fd=resume[0] if resume else None,
                          gate_fd=gate.fd)
        plan = planner.build(bpf)
        if debug:
            os.write(2, "".join(f"emergence: plan: {line}\n"
                                for line in plan.describe()).encode())
        launch = Launch(plan.encode(), min_fd=3 + preserve_fds, pass_fds=pass_fds, gate=gate)
        os.close(fifo_fd)
        fifo_fd = None
        if listener is not None:
            listener.spawned()
        crashpoint("create:spawned")
        resources = _device_allow(config)
        try:
            cg.create(resources)
        finally:
            c.data["cgroup"]["created"] = cg.created
            leaves = set(cg.paths)
            if any(os.path.basename(p) != "emergence" for p in cg.created
                   if p not in leaves):
                c.save()  # parents made for a cgroupsPath: delete removes them too
        cg.apply(resources)
        crashpoint("create:cgroup")
        gate.open()

        def runtime_hooks(_label):
            from . import hooks as hk
            # Step 3 of the lifecycle: the environment is created (runc reports the same)
            state = hk.oci_state(c.data, "created", launch.init_pid)
            hk.run("prestart", hooks.get("prestart", ()), state)
            hk.run("createRuntime", hooks.get("createRuntime", ()), state)
            crashpoint("create:hooks")
            os.write(resume[1], b"g")

        if resume:
            os.close(resume[0])
            resume = (None, resume[1])
        pid = launch.wait_ready(on_sync=runtime_hooks, listener=listener)
        crashpoint("create:ready")
        master = console.handed_over() if console else None
        console = None
        st = proc_start_time(pid)
        if st is None:
            raise EmergenceError("the container init exited right after setup")
        c.data.update(status="created", pid=pid, startTime=st[1],
                      freezer=cg.freezer_file())
        c.save()
        crashpoint("create:created")
        if pid_file:
            write_atomic(os.path.abspath(pid_file), f"{pid}".encode(), 0o644)
        if resume is not None:
            os.close(resume[1])
            resume = None
        return pid, master
    except BaseException:
        if console is not None:
            console.close()
        if fifo_fd is not None:
            os.close(fifo_fd)
        for fd in resume or ():
            if fd is not None:
                os.close(fd)  # an init waiting on the pipe gives up
        if launch is not None:
            launch.abort()    # closes the gate too
        elif gate is not None:
            gate.close()
        try:
            cg.remove()
        finally:
            c.remove_dir()
        raise
    finally:
        if listener is not None:
            listener.close()
        c.close()


def warm_up(scratch):
    """The planner writes a bundle (SCRATCH/create) its workers' prefault plans."""
    from .spec import default_config
    d = os.path.join(scratch, "create")
    os.makedirs(os.path.join(d, "rootfs"), mode=0o700, exist_ok=True)
    config = default_config(args=["true"], terminal=False)
    config["root"]["path"] = os.path.join(d, "rootfs")
    write_atomic(os.path.join(d, "config.json"), fastjson.dumps(config).encode())


def prefault(scratch):
    """A worker plans a create of that bundle, never run (no state, cgroup or
    process is made): loading and checking a config, planning and encoding
    pay their copy-on-write faults before a call, as the warm-up's verbs do
    for theirs (a first create in a fresh worker took ~0.5 ms more)."""
    from .planner import Planner
    bundle = os.path.join(scratch, "create")
    config = config_mod.load(bundle)
    rootfs = config_mod.root_path(config, bundle)
    check_capabilities_held(config.get("process"))
    hierarchies = discover()
    cg = Cgroup(hierarchies, relative_path(None, "prefault"))
    Planner(config, bundle, rootfs, "/proc/self/fd", cg, hierarchies,
            barrier="3").build(None).encode()
