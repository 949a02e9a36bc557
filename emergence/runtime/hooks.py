"""OCI hooks run in the runtime namespace: prestart, createRuntime (during
create, while the init waits before pivot_root), poststart (by start) and
poststop (by delete).  createContainer and startContainer run inside the
container and are executed by the shim (see planner.Planner)."""

import os

from .. import fastjson
from ..errors import EmergenceError, debug_note, shown

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")
# A hook's timeout above this (23 days) is no timeout: poll(2) counts in int
# milliseconds, and the shim's seconds * 1000 must not wrap.
TIMEOUT_MAX = 2_000_000


def timeout(hook):
    """The hook's timeout in seconds, or None."""
    t = hook.get("timeout")
    return t if t is not None and t <= TIMEOUT_MAX else None


def environment(hook, where="hook"):
    """A hook's env entries as a mapping, or None (inherit ours) when the hook
    has no `env`: runc and crun let such a hook inherit the runtime's
    environment (on the warm path, the caller's: the worker takes it), while an
    empty `env` is an empty environment.  runc and crun run a hook whose entry
    has no NAME= part (no program can look such an entry up); it is passed over,
    noted with --debug."""
    if "env" not in hook:
        return None
    env = {}
    for i, entry in enumerate(hook.get("env", ())):
        name, eq, value = entry.partition("=")
        if not eq or not name:
            debug_note(f"{where}.env[{i}]: {shown(entry)} is not NAME=value; passed over")
            continue
        env[name] = value
    return env


def oci_state(data, status, pid):
    s = {"ociVersion": data.get("ociVersion", ""), "id": data["id"], "status": status,
         "pid": pid, "bundle": data.get("bundle", "")}
    if data.get("annotations"):
        s["annotations"] = data["annotations"]
    return s


def state_template(data, status):
    """State JSON with the pid left as %PID%, filled in by the shim inside the
    container (where the pid differs from the runtime's view)."""
    text = fastjson.dumps(oci_state(data, status, 0))
    return text.replace('"pid": 0', '"pid": %PID%', 1)


def run(kind, hooks, state):
    """Run KIND hooks in order with STATE on stdin; raise on the first failure.
    A hook gets exactly the env of its entry (ours if it has none), and our stdout and stderr (its
    stderr is also kept for the error line); it dies with us (lifetime.dies_with_us)."""
    import subprocess
    payload = fastjson.dumps(state).encode()
    from ..lifetime import dies_with_us
    preexec = dies_with_us() if hooks else None
    for i, hook in enumerate(hooks):
        what = f"{kind} hook {i} ({shown(hook['path'])})"
        try:
            p = subprocess.run(hook.get("args") or [hook["path"]], executable=hook["path"],
                               input=payload, env=environment(hook, f"hooks.{kind}[{i}]"),
                               stderr=subprocess.PIPE, timeout=timeout(hook),
                               preexec_fn=preexec)
        except subprocess.TimeoutExpired:
            raise EmergenceError(f"{what}: did not finish within its timeout of "
                                 f"{hook['timeout']}s") from None
        except (OSError, ValueError) as e:  # ValueError: a path or value execve refuses
            raise EmergenceError(f"{what}: cannot run it: {e.strerror or e}") from None
        if p.stderr:
            os.write(2, p.stderr)  # the caller sees what the hook said, as it said it
        if p.returncode != 0:
            tail = p.stderr.decode(errors="replace").strip().splitlines()
            detail = f": {tail[-1]}" if tail else ""
            how = (f"killed by signal {-p.returncode}" if p.returncode < 0
                   else f"exited with status {p.returncode}")
            raise EmergenceError(f"{what}: {how}{detail}")


def run_warning_only(kind, hooks, state):
    """poststop: a failure is a warning, and the remaining hooks still run."""
    for hook in hooks:
        try:
            run(kind, [hook], state)
        except EmergenceError as e:
            os.write(2, f"emergence: warning: {e}\n".encode())
