"""Kubernetes' default scores, so a real run can compare against them:
NodeResourcesFit's LeastAllocated and NodeResourcesBalancedAllocation, over
CPU and memory requests as kube-scheduler counts them (what is allocated on
the host plus this task, against its capacity; 0..100, higher is better).
Fit is checked before (score.rank's exclusions); these only order."""

MAX_SCORE = 100.0


def _fractions(host, demand):
    cap, al = host.get("capacity", {}), host.get("allocated", {})
    out = []
    for r in ("cpu", "memory"):
        c = float(cap.get(r) or 0.0)
        used = float(al.get(r, 0.0)) + float(demand.get(r, 0.0))
        out.append(min(1.0, used / c) if c > 0 else 1.0)
    return out


def least_allocated(host, demand):
    """Mean free share after placing (equal weights), times 100."""
    fr = _fractions(host, demand)
    return MAX_SCORE * sum(1.0 - f for f in fr) / len(fr)


def balanced_allocation(host, demand):
    """(1 − the standard deviation of the used shares) times 100; with two
    resources the deviation is |cpu − memory| / 2."""
    c, m = _fractions(host, demand)
    return MAX_SCORE * (1.0 - abs(c - m) / 2.0)


SCORES = {"LeastAllocated": least_allocated, "BalancedAllocation": balanced_allocation}


def order(ranked, hosts, demand, scheduler):
    """RANKED (score.rank's candidates) re-ordered by SCHEDULER's score,
    unresponsive hosts still last, ties by name; each row gains `k8s_score`."""
    fn = SCORES[scheduler]
    by_name = {h["name"]: h for h in hosts}
    out = []
    for r in ranked:
        h = by_name.get(r["name"])
        out.append(dict(r, k8s_score=fn(h, demand) if h else 0.0))
    out.sort(key=lambda r: (bool(r.get("unresponsive")), -r["k8s_score"], r["name"]))
    return out
