"""Task specs: what a user submits, checked before anything is written, and
the listing of tasks with their state, host and attempts."""

import math
import re
import uuid

from ..errors import EmergenceError
from .state import now

KINDS = ("image", "bundle", "sleep", "stage")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_NUMBERS = ("cpu", "memory", "gpus", "disk_io", "net")


def _number(value, field, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < minimum:
        raise EmergenceError(f"task field {field!r} must be a number >= {minimum:g}, "
                             f"not {value!r}")
    return float(value)


def validate(spec):
    """A clean copy of SPEC, or one line saying which field is wrong."""
    if not isinstance(spec, dict):
        raise EmergenceError("a task spec is a JSON object")
    out = dict(spec)
    kind = out.setdefault("kind", "image")
    if kind not in KINDS:
        raise EmergenceError(f"task kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "image" and not (isinstance(out.get("image"), str) and out["image"]):
        raise EmergenceError("an image task needs 'image' (a name in the store)")
    if kind == "bundle" and not (isinstance(out.get("bundle"), str) and out["bundle"]):
        raise EmergenceError("a bundle task needs 'bundle' (a bundle directory)")
    if kind == "stage" and not isinstance(out.get("stage"), dict):
        raise EmergenceError("a stage task needs 'stage' (pipeline run --cluster makes it)")
    if kind == "sleep":
        _number(out.get("seconds", 0), "seconds")
    cmd = out.get("cmd", [])
    if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
        raise EmergenceError("task field 'cmd' must be a list of strings")
    tid = out.setdefault("id", uuid.uuid4().hex[:12])
    if not isinstance(tid, str) or not _ID.match(tid):
        raise EmergenceError(f"task id {tid!r}: use letters, digits, '.', '_' or '-' "
                             "(at most 63)")
    d = out.get("demand", {})
    if not isinstance(d, dict):
        raise EmergenceError("task field 'demand' must be an object of resource: amount")
    for k, v in d.items():
        if k not in _NUMBERS:
            raise EmergenceError(f"unknown resource {k!r} in 'demand' "
                                 f"(known: {', '.join(_NUMBERS)})")
        _number(v, f"demand.{k}")
    for f in ("timeout", "expect", "input_bytes", "output_bytes"):
        if f in out and out[f] is not None:
            _number(out[f], f)
    if out.get("timeout") == 0:
        raise EmergenceError("task field 'timeout' must be more than 0 seconds")
    labels = out.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise EmergenceError("task field 'labels' must be an object of name: value strings")
    near = out.get("near", [])
    if not isinstance(near, list):
        raise EmergenceError("task field 'near' must be a list of {to, max_rtt, min_bandwidth}")
    for c in near:
        if not isinstance(c, dict) or not isinstance(c.get("to"), str):
            raise EmergenceError("each 'near' constraint needs 'to': a node or 'task:ID'")
        for f in ("max_rtt", "min_bandwidth"):
            if f in c:
                _number(c[f], f"near.{f}")
    return out


def submit(cluster, spec):
    """Validate SPEC, sign it with this command node's key and write it; any
    command node may do this, leader or not.  Workers run only signed tasks
    (unless the cluster is --insecure, where nothing is signed)."""
    spec = validate(spec)
    spec.pop("signature", None)
    spec["submitted"] = now()
    m = cluster.material
    if m is not None:
        from ..cluster.signing import sign
        roles = m.info.get("roles", [])
        if "command" not in roles:
            raise EmergenceError(f"this node ({m.info.get('name')}, roles "
                                 f"{', '.join(roles) or 'none'}) is not a command node: "
                                 "only command nodes submit tasks")
        spec = sign(spec, m.node_key(), m.node_cert_pem())
    if not cluster.create(spec, "tasks", spec["id"]):
        raise EmergenceError(f"a task with id {spec['id']!r} was already submitted")
    return spec["id"]


def listing(snap):
    """One row per task: id, state, host, attempts, exit."""
    rows = []
    status, results = snap.get("status", {}), snap.get("results", {})
    for tid, spec in sorted(snap.get("tasks", {}).items(),
                            key=lambda kv: kv[1].get("submitted", 0)):
        st = status.get(tid, {"state": "pending", "attempt": 0})
        r = results.get(tid)
        state = ("refused" if r.get("refused") else "done") if r else st.get("state", "pending")
        rows.append({"id": tid, "state": state, "why": (r or {}).get("refused"),
                     "host": (r or st).get("host"), "attempts": st.get("attempt", 0),
                     "exit": r.get("exit") if r else None,
                     "what": spec.get("image") or spec.get("bundle") or
                     (f"stage {spec['stage'].get('name')}" if isinstance(spec.get("stage"), dict)
                      else None) or
                     f"sleep {spec.get('seconds', 0)}"})
    return rows
