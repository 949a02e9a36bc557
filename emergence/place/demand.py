"""What a task will use (V), when it does not say: a per-image running
estimate from the usage its earlier runs reported.

The estimate is an exponentially weighted moving average (EWMA, α = 0.3 by
default): one number per image and resource, updated in O(1) per finished
run, recent runs weighing more so an image whose workload changes is
followed within a few runs.  Declared resources always win over the estimate.
"""

ALPHA = 0.3


def update(estimate, usage, alpha=ALPHA):
    """The estimate after one more run that used USAGE ({resource: amount}).
    ESTIMATE is {"runs": n, "usage": {...}} or None for the first run."""
    if not estimate or not estimate.get("runs"):
        return {"runs": 1, "usage": dict(usage)}
    old = estimate["usage"]
    new = {}
    for r in set(old) | set(usage):
        if r in usage and r in old:
            new[r] = alpha * usage[r] + (1 - alpha) * old[r]
        else:
            new[r] = usage.get(r, old.get(r))
    return {"runs": estimate["runs"] + 1, "usage": new}


def demand_of(task, estimate, default=None):
    """V for TASK: its declared demand, completed by the image's estimate,
    then by DEFAULT; `source` says which one each resource came from."""
    declared = task.get("demand", {})
    learned = (estimate or {}).get("usage", {})
    out, source = {}, {}
    for r in set(declared) | set(learned) | set(default or {}):
        if r in declared:
            out[r], source[r] = declared[r], "declared"
        elif r in learned:
            out[r], source[r] = learned[r], "estimated"
        else:
            out[r], source[r] = default[r], "default"
    return out, source
