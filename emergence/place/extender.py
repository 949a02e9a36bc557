"""A kube-scheduler extender on the node's listener, so a Kubernetes cluster
can use this scorer: kube-scheduler POSTs its ExtenderArgs (the pod, and the
nodes as a NodeList or, when `nodeCacheCapable`, as NodeNames) to
`/place/extender/filter` and `/place/extender/prioritize`, and gets an
ExtenderFilterResult and a HostPriorityList (scores 0..10) back
(k8s.io/kube-scheduler/extender/v1).

The pod becomes a task: its CPU and memory requests as Kubernetes sums them
(the containers' sum, or the largest init container's when that is more),
its first container's image (whose per-image estimate and layer locality
count, as for a submitted task).  A node is one of this cluster's workers by
name; others fail the filter, and score 0.  Scores follow the scheduler set
in config/scheduler: D_max mapped linearly (the lowest D_max 10, the highest
0), Kubernetes' own scores divided by 10, random by rank."""

import math

from ..errors import EmergenceError

MAX_PRIORITY = 10
_DECIMAL = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50,
           "Ei": 2 ** 60}


def quantity(v, what):
    """A Kubernetes resource quantity ("500m", "1.5", "128Mi", "1G", 2) as a
    finite non-negative number."""
    if isinstance(v, bool):
        raise EmergenceError(f"{what} {v!r} is not a quantity")
    if isinstance(v, (int, float)):
        n = float(v)
    elif isinstance(v, str) and 0 < len(v) <= 64:
        s = v.strip()
        for suffix, mult in list(_BINARY.items()) + sorted(_DECIMAL.items(),
                                                            key=lambda kv: -len(kv[0])):
            if suffix and s.endswith(suffix):
                num, m = s[:-len(suffix)], mult
                break
        else:
            num, m = s, 1.0
        try:
            n = float(num) * m
        except ValueError:
            raise EmergenceError(f"{what} {v[:64]!r} is not a quantity like 500m or 128Mi")
    else:
        raise EmergenceError(f"{what} is not a quantity like 500m or 128Mi")
    if not math.isfinite(n) or n < 0:
        raise EmergenceError(f"{what} {str(v)[:64]!r} is not a finite quantity >= 0")
    return n


def _requests(containers, where):
    out = []
    if containers is None:
        return out
    if not isinstance(containers, list):
        raise EmergenceError(f"Pod.spec.{where} must be a list")
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            raise EmergenceError(f"Pod.spec.{where}[{i}] must be an object")
        req = ((c.get("resources") or {}).get("requests") or {}) \
            if isinstance(c.get("resources") or {}, dict) else None
        if not isinstance(req, dict):
            raise EmergenceError(f"Pod.spec.{where}[{i}].resources must be an object")
        out.append({r: quantity(req[r], f"{where}[{i}] request {r}")
                    for r in ("cpu", "memory") if r in req})
    return out


def pod_task(args):
    """The task for ExtenderArgs.Pod (validated as a submitted one)."""
    from .tasks import validate
    pod = args.get("Pod") if isinstance(args, dict) else None
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        raise EmergenceError("ExtenderArgs needs Pod with a spec")
    spec = pod["spec"]
    containers = _requests(spec.get("containers"), "containers")
    if not containers:
        raise EmergenceError("Pod.spec.containers is empty")
    inits = _requests(spec.get("initContainers"), "initContainers")
    demand = {}
    for r in ("cpu", "memory"):
        total = sum(c.get(r, 0.0) for c in containers)
        total = max([total] + [c.get(r, 0.0) for c in inits])
        if total:
            demand[r] = total
    image = spec["containers"][0].get("image")
    name = (pod.get("metadata") or {}).get("name") if isinstance(pod.get("metadata"),
                                                                 dict) else None
    task = {"id": "k8s-" + (str(name)[:40] if name else "pod"), "demand": demand}
    if isinstance(image, str) and 0 < len(image) <= 512:
        task.update(kind="image", image=image)
    else:
        task.update(kind="sleep", seconds=0)
    return validate(task)


def node_names(args):
    """The candidate nodes' names: NodeNames, or the names in Nodes.items."""
    names = args.get("NodeNames")
    if names is None:
        nodes = args.get("Nodes")
        items = nodes.get("items") if isinstance(nodes, dict) else None
        if not isinstance(items, list):
            raise EmergenceError("ExtenderArgs needs Nodes.items or NodeNames")
        names = [((n.get("metadata") or {}).get("name") if isinstance(n, dict) else None)
                 for n in items]
    if not isinstance(names, list) or not all(isinstance(n, str) and 0 < len(n) <= 253
                                              for n in names):
        raise EmergenceError("node names must be strings (at most 253 characters)")
    return names


def _ranked(args, snap, settings):
    from .commander import candidates, rank_task
    task = pod_task(args)
    names = node_names(args)
    ranked = candidates(task, snap, settings)
    excluded = {r["name"]: r["excluded"] for r in rank_task(task, snap, settings)
                if "excluded" in r}
    return names, ranked, excluded


def filter_result(args, snap, settings):
    """ExtenderFilterResult: the nodes the task fits on, the others with why."""
    names, ranked, excluded = _ranked(args, snap, settings)
    fits = {r["name"] for r in ranked}
    failed = {}
    for n in names:
        if n not in fits:
            failed[n] = excluded.get(n) or "not a worker of this emergence cluster"
    keep = [n for n in names if n in fits]
    out = {"FailedNodes": failed, "FailedAndUnresolvableNodes": {}, "Error": ""}
    if args.get("NodeNames") is not None:
        out.update(NodeNames=keep, Nodes=None)
    else:
        items = [n for n in args["Nodes"]["items"]
                 if (n.get("metadata") or {}).get("name") in fits]
        out.update(Nodes=dict(args["Nodes"], items=items), NodeNames=None)
    return out


def priorities(args, snap, settings):
    """HostPriorityList: every given node with a score 0..10."""
    names, ranked, _ = _ranked(args, snap, settings)
    score = {}
    if ranked and "k8s_score" in ranked[0]:
        score = {r["name"]: round(r["k8s_score"] / 100 * MAX_PRIORITY) for r in ranked}
    elif settings.get("scheduler") == "RandomScheduler":
        n = len(ranked)
        score = {r["name"]: round(MAX_PRIORITY * (n - 1 - i) / max(1, n - 1))
                 for i, r in enumerate(ranked)}
    elif ranked:
        lo = min(r["D_max"] for r in ranked)
        hi = max(r["D_max"] for r in ranked)
        for r in ranked:
            s = MAX_PRIORITY if hi - lo <= 1e-12 else \
                MAX_PRIORITY * (hi - r["D_max"]) / (hi - lo)
            score[r["name"]] = int(round(s)) - (1 if r.get("unresponsive") and s > 0 else 0)
    return [{"Host": n, "Score": int(max(0, min(MAX_PRIORITY, score.get(n, 0))))}
            for n in names]
