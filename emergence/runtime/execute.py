"""`exec`: run another process in a created or running container.

The process joins every namespace and the cgroup of the container and gets
its seccomp profile, capabilities and rlimits unless told otherwise; like
the init, it is set up by the shim alone and is a child of this process,
whose exit status becomes ours.
"""

import os

from .. import fastjson
from ..errors import ConfigError, EmergenceError, shown, warn
from . import config as config_mod
from .state import Container


def _env_merge(env, extra):
    """Append NAME=value pairs, replacing an existing NAME (as runc does)."""
    out = list(env)
    for item in extra:
        if "=" not in item:
            raise ConfigError(f"--env {shown(item)}: use NAME=value")
        name = item.split("=", 1)[0] + "="
        out = [e for e in out if not e.startswith(name)] + [item]
    return out


def _parse_user(text):
    uid, _, gid = text.partition(":")
    try:
        return int(uid), int(gid) if gid else 0
    except ValueError:
        raise ConfigError(f"--user {shown(text)}: give numeric uid[:gid]") from None


def process_from_flags(base, args, opts):
    """The process to exec: the container's own, changed by the command-line flags."""
    if not args:
        raise ConfigError("exec needs a command to run (or --process FILE)")
    proc = fastjson.loads(fastjson.dumps(base))  # a deep copy
    proc["args"] = list(args)
    proc["terminal"] = bool(opts.get("tty"))
    proc.pop("consoleSize", None)
    if opts.get("cwd"):
        proc["cwd"] = opts["cwd"]
    proc["env"] = _env_merge(proc.get("env", []), opts.get("env", []))
    if opts.get("user"):
        uid, gid = _parse_user(opts["user"])
        proc["user"] = {**proc.get("user", {}), "uid": uid, "gid": gid}
    gids = [g for item in opts.get("additional-gids", []) for g in item.split(",") if g]
    if gids:
        try:
            proc.setdefault("user", {})["additionalGids"] = [int(g) for g in gids]
        except ValueError:
            raise ConfigError("--additional-gids takes numeric gids") from None
    caps = opts.get("cap", [])
    if caps:
        sets = proc.setdefault("capabilities", {})
        for k in ("bounding", "effective", "permitted"):
            sets[k] = list(dict.fromkeys(sets.get(k, []) + caps))
    if opts.get("no-new-privs"):
        proc["noNewPrivileges"] = True
    if opts.get("apparmor"):
        proc["apparmorProfile"] = opts["apparmor"]
    if opts.get("process-label"):
        proc["selinuxLabel"] = opts["process-label"]
    return proc


def process_from_file(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"--process {path}: {e.strerror}") from None
    proc = config_mod.parse(raw, f"--process {path}")
    try:
        config_mod.PROCESS(proc, "process")
    except ConfigError as e:
        raise ConfigError(str(e).replace("config.json: ", f"{path}: ", 1)) from None
    return proc


def validate_process(proc):
    """The Linux checks of config.validate_semantics that apply to a process alone."""
    stub = {"root": {"path": "/"}, "process": proc, "linux": {}}
    try:
        config_mod.validate_process(stub)
    except ConfigError as e:
        raise ConfigError(str(e).replace("config.json: ", "exec: ", 1)) from None


def exec_command(root, container_id, args, opts, preserve_fds, debug=False):
    """`exec` as the command line gives it: --process FILE, or flags and a command."""
    if opts.get("process"):
        proc = process_from_file(opts["process"])
    else:
        with Container.open(root, container_id, lock=False) as c:
            base = c.saved_config()["process"]
        proc = process_from_flags(base, args, opts)
    if opts.get("ignore-paused"):
        raise ConfigError("exec --ignore-paused is not supported: a process joining the "
                          "frozen cgroup would freeze before it starts; resume the container "
                          "first")
    if opts.get("cgroup"):
        raise ConfigError("exec --cgroup (joining a sub-cgroup) is not supported; the process "
                          "joins the container's own cgroup")
    return exec_process(root, container_id, proc, detach=opts.get("detach", False),
                        pid_file=opts.get("pid-file"), preserve_fds=preserve_fds, debug=debug,
                        console_socket=opts.get("console-socket"))


def exec_process(root, container_id, proc, detach=False, pid_file=None, preserve_fds=0,
                 debug=False, console_socket=None):
    from .run import Forwarder
    # Forward signals from before the process exists: one sent the moment it
    # starts must reach it, not kill us.
    forwarder = None if detach or proc.get("terminal") else Forwarder()
    if forwarder is None:
        return _exec(root, container_id, proc, detach, pid_file, preserve_fds, debug,
                     console_socket, None)
    with forwarder:
        return _exec(root, container_id, proc, detach, pid_file, preserve_fds, debug,
                     console_socket, forwarder)


def _exec(root, container_id, proc, detach, pid_file, preserve_fds, debug, console_socket,
          forwarder):
    from .cgroups.hierarchy import discover
    from .cgroups.manager import Cgroup
    from .launch import Launch
    from .planner import exec_plan
    from .run import wait_status
    from .state import write_atomic
    validate_process(proc)
    from .create import check_capabilities_held
    check_capabilities_held(proc)
    terminal = proc.get("terminal", False)
    if terminal and detach and not console_socket:
        raise EmergenceError("exec --tty --detach needs a --console-socket to hand the "
                             "terminal to")
    with Container.open(root, container_id) as c:
        c.require(("created", "running"), "exec needs a created or running container")
        config = c.saved_config()
        config_mod.check_supported({"process": proc}, warn)
        from .userdb import set_home
        set_home(proc, f"/proc/{c.pid}/root")
        seccomp = config.get("linux", {}).get("seccomp")
        bpf = listener = None
        if seccomp:
            from .seccomp import compile_bpf, filter_flags, wants_listener
            bpf = (filter_flags(seccomp), compile_bpf(seccomp).hex())
            if wants_listener(seccomp):  # the agent gets this process's listener too
                from .hooks import oci_state
                from .seccomp import Listener
                listener = Listener(seccomp, lambda _: oci_state(c.data, c.status(), c.pid),
                                    3 + preserve_fds)
                bpf = (*bpf, listener.child_fd)
        cg = Cgroup(discover(), c.data["cgroup"]["rel"]) if c.data.get("cgroup") else None
        console = console_plan = None
        if terminal:
            from .terminal import Console
            console = Console(console_socket, min_fd=3 + preserve_fds)
            console_plan = (console.fd, *console.size(proc))
        plan = exec_plan(config, c.pid, cg, proc, bpf, preserve_fds, console_plan)
        if debug:
            os.write(2, "".join(f"emergence: plan: {line}\n"
                                for line in plan.describe()).encode())
        fds = ((console.fd,) if console else ()) + ((listener.child_fd,) if listener else ())
        try:
            launch = Launch(plan.encode(), min_fd=3 + preserve_fds, pass_fds=fds)
        except BaseException:
            if listener is not None:
                listener.close()
            raise
        try:
            if listener is not None:
                listener.spawned()
            pid = launch.wait_ready(listener=listener)
            if forwarder is not None:
                forwarder.target(pid)  # (held signals are delivered now)
            master = console.handed_over() if console else None
        except BaseException:
            if console is not None:
                console.close()
            launch.abort()
            raise
        finally:
            if listener is not None:
                listener.close()
    if pid_file:
        write_atomic(os.path.abspath(pid_file), f"{pid}".encode(), 0o644)
    if detach:
        return 0
    if master is not None:
        from .terminal import proxy
        return proxy(master, pid)
    return wait_status(pid)
