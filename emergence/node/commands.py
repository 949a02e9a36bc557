"""`emergence node start|stop|status|run`: the host's one long-running process."""

import json
import os
import sys

from ..command import FLAG, JSON, VALUE, Option, UsageError, Verb
from ..errors import EmergenceError

TITLE = "Node (the long-running process: warm planner, serving, reconciling, metrics)"


def _control(run_dir, request, timeout=5.0):
    """Ask the running node; None when none answers.  The node must be root
    (or us), by SO_PEERCRED; a node that refuses us is an error."""
    import socket
    import struct
    path = os.path.join(run_dir, "control.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        uid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               struct.calcsize("3i")))[1]
        if uid not in (0, os.geteuid()):
            raise EmergenceError(f"{path} is served by uid {uid}, not root; not asking it")
        try:
            s.sendall(request.encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # a node that refuses us answers at once and closes: read why
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        reply = json.loads(data) if data else None
    except (FileNotFoundError, ConnectionRefusedError, socket.timeout):
        return None
    except PermissionError:
        raise EmergenceError(f"cannot reach the node's control socket {path}: permission "
                             "denied; the node answers root only (run this as root)") from None
    except (ConnectionResetError, BrokenPipeError, ValueError):
        raise EmergenceError(f"the node's control socket {path} gave no answer; "
                             "see the node's log") from None
    finally:
        s.close()
    if isinstance(reply, dict) and "error" in reply:
        raise EmergenceError(f"the node refused: {reply['error']}")
    return reply


def _pid(run_dir):
    path = os.path.join(run_dir, "node.pid")
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except PermissionError:
        raise EmergenceError(f"cannot read {path}: permission denied; the node is root's "
                             "(run this as root)") from None
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, and not ours to signal
    return pid


def _start(cfg, foreground):
    import subprocess
    import time
    run_dir = cfg["node"]["run_dir"]
    pid = _pid(run_dir)
    if pid:
        raise EmergenceError(f"the node is already running (pid {pid}); "
                             "`emergence node stop` first")
    if foreground:
        from .daemon import main
        main(cfg)
        return 0
    log_dir = os.path.join(cfg["node"]["state_dir"], "node")
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    log_path = os.path.join(log_dir, "node.log")
    with open(log_path, "ab") as log:
        start_at = log.tell()
        # the configuration on stdin, not in argv: every user can read a cmdline
        p = subprocess.Popen([sys.executable, "-m", "emergence.node.daemon", "-"],
                             stdin=subprocess.PIPE, stdout=log, stderr=log, cwd="/",
                             start_new_session=True, close_fds=True)
        try:
            p.stdin.write(json.dumps(cfg).encode())
            p.stdin.close()
        except BrokenPipeError:
            pass  # it died at once: the log says why, below
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if p.poll() is not None:
            with open(log_path, "rb") as f:
                f.seek(start_at)
                tail = f.read().decode(errors="replace").strip().splitlines()
            why = tail[-1] if tail else f"exit status {p.returncode}"
            raise EmergenceError(f"the node did not start: {why} (log: {log_path})")
        try:
            status = _control(run_dir, "status", timeout=1)
        except EmergenceError:  # it is going down as we ask: the next round says why
            status = None
        if status and status.get("ready"):
            sys.stdout.write(f"node started, pid {status['pid']}; log {log_path}\n")
            return 0
        time.sleep(0.05)
    p.terminate()
    raise EmergenceError(f"the node did not answer within 30 s (log: {log_path})")


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except PermissionError:
        raise EmergenceError(f"cannot signal the node (pid {pid}): permission denied; "
                             "run this as root") from None
    except ProcessLookupError:
        pass


def _stop(run_dir):
    import time
    pid = _pid(run_dir)
    if pid is None:
        sys.stdout.write("the node is not running\n")
        return 0
    # ask, then SIGTERM, then SIGKILL: each gets its time to take effect
    for how, wait in (("asked", 10), ("after SIGTERM", 5)):
        if how == "asked":
            _control(run_dir, "stop")
        else:
            _signal(pid, 15)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _pid(run_dir) is None:
                sys.stdout.write(f"node stopped (pid {pid}" +
                                 (", after SIGTERM)\n" if how != "asked" else ")\n"))
                return 0
            time.sleep(0.05)
    _signal(pid, 9)
    sys.stdout.write(f"node killed (pid {pid}): it did not stop within 15 s\n")
    return 1


def _status(run_dir, as_json):
    from . import BUILD_ID
    status = _control(run_dir, "status")
    if status is None:
        if as_json:
            sys.stdout.write(json.dumps({"running": False}) + "\n")
        else:
            sys.stdout.write("the node is not running (every verb still works: the cold "
                             "path)\n")
        return 3  # as LSB's status: not running
    status["running"] = True
    if as_json:
        sys.stdout.write(json.dumps(status) + "\n")
        return 0
    out = [f"node: running, pid {status['pid']}, up {status['uptime_seconds']} s, "
           f"build {status['build']}"]
    pl = status.get("planner")
    if pl:
        stale = "" if status["build"] == BUILD_ID else (
            f" (this install is build {BUILD_ID}: calls take the cold path; "
            "restart the node)")
        out.append(f"planner: {'running' if pl['running'] else 'restarting'}, pid {pl['pid']}, "
                   f"{pl['socket']}, started {pl['starts']}x{stale}")
    else:
        out.append("planner: off")
    if status.get("listen"):
        out.append(f"http: {status['listen']}")
    for name, svc in sorted(status["services"].items()):
        rest = ", ".join(f"{k}={v}" for k, v in svc.items() if k != "state")
        out.append(f"{name}: {svc['state']}" + (f" ({rest})" if rest else ""))
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _node(ctx, opts, args):
    from . import config
    if len(args) != 1 or args[0] not in ("start", "stop", "status", "run"):
        raise UsageError("usage: emergence node start|stop|status|run [--config FILE] "
                         "[--SECTION-KEY VALUE]...")
    flags = {k: v for k, v in opts.items()
             if k not in ("config", "json", "foreground", "help", "cluster-init")}
    if opts.get("cluster-init"):  # a one-machine cluster: its own etcd, command + worker
        flags.setdefault("place-cluster-init", "true")
        flags.setdefault("place-role", "both")
    cfg = config.load(opts.get("config"), flags)
    run_dir = cfg["node"]["run_dir"]
    from .rundir import check
    if args[0] in ("start", "run"):  # the run dir is ours, or we do not start
        check(run_dir, create=True)
        return _start(cfg, foreground=args[0] == "run" or opts.get("foreground"))
    check(run_dir, owners=(0, os.geteuid()))  # its pid file and sockets are to be trusted
    if args[0] == "stop":
        return _stop(run_dir)
    return _status(run_dir, opts.get("json"))


def _shown(default):
    """A default as node.toml spells it: true, 2.0, a,b; none for nothing set."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list):
        return ",".join(map(str, default)) or "none"
    if default is None or default == "":
        return "none"
    return str(default)


def _options():
    opts = {
        "config": Option(VALUE, "the configuration file (default /etc/emergence/node.toml)",
                         "FILE"),
        "foreground": Option(FLAG, "start: stay in the foreground (as `run`; for systemd)"),
        "cluster-init": Option(FLAG, "start: a one-machine cluster (a local etcd; this node "
                                     "both commands and works)"),
        "json": JSON,
        # retired, so that using it says what replaced it (config.RETIRED)
        "place-token": Option(VALUE, "no more: the node token guards placement settings",
                              "VALUE"),
    }
    try:
        from .config import defaults, flag_names
        table = defaults()
    except Exception:  # a broken part must not break `emergence --help`
        return opts
    for flag, (sec, key) in flag_names(table).items():
        default = table[sec][key]
        opts[flag] = Option(VALUE, f"[{sec}] {key} (default {_shown(default)})", "VALUE")
    return opts


VERBS = [
    Verb("node", "start, stop or show the node (`node start`, `node status`)",
         "start|stop|status|run [--config FILE] [--SECTION-KEY VALUE]...",
         _options(), _node),
]
