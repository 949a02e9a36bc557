"""OCI hooks run in the runtime namespace: prestart, createRuntime (during
create, while the init waits before pivot_root), poststart (by start) and
poststop (by delete).  createContainer and startContainer run inside the
container and are executed by the shim (see planner.Planner)."""

import os

from .. import fastjson
from ..errors import EmergenceError

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")


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
    A hook gets exactly the env of its entry, and our stdout and stderr (its
    stderr is also kept for the error line)."""
    import subprocess
    payload = fastjson.dumps(state).encode()
    for i, hook in enumerate(hooks):
        what = f"{kind} hook {i} ({hook['path']})"
        try:
            p = subprocess.run(hook.get("args") or [hook["path"]], executable=hook["path"],
                               input=payload, env=dict(e.split("=", 1) for e in
                                                       hook.get("env", ())),
                               stderr=subprocess.PIPE, timeout=hook.get("timeout"))
        except subprocess.TimeoutExpired:
            raise EmergenceError(f"{what}: did not finish within its timeout of "
                                 f"{hook['timeout']}s") from None
        except OSError as e:
            raise EmergenceError(f"{what}: cannot run it: {e.strerror}") from None
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
