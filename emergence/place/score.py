"""The placement score, as pure functions over plain dicts (no I/O), so the
command node, `place --explain` and bench/place_sim.py run the same code.

Interference-aware scheduling (background: interference-aware-scheduling):
for hosts H, resources R, utilisation U[h][r] in [0, 1], the task's demand
V[r] and the mean utilisation Ū[r] over all hosts,

    D[h]   = Σ_r |(U[h][r] + V[r]) − Ū[r]|     the candidate h, with the task
    D_max  = max over all hosts of D after the placement

Placing on h changes only h's distance; every other host k keeps
D0[k] = Σ_r |U[k][r] − Ū[r]|, so D_max(h) = max(D[h], max_{k≠h} D0[k]), found
for all candidates in O(|H|·|R|) with the two largest D0.  V is taken per host
as demand / capacity, which is the background's V when hosts are alike.

Green energy: D_green[h] = D[h] + F(g(h), D[h], s_green), F by default the
published D·(1 − g)·s_green, pluggable through the entry-point group
`emergence.place.cost` (called as F(g=, d=, s_green=, host=, task=)).  The
candidate's own D enters D_max green-adjusted; ties on D_max go to the lower
D_green, then the name.

Locality: for an image task, a host that lacks some of the image's layers
adds s_locality · fetch / (fetch + run) to its D, fetch being the seconds to
get them from the peers that hold them at the measured bandwidth
(locality.py), run the task's expected run time.

Batch tasks (those declaring an expected run time) are placed by earliest
finish instead: queue wait + run time / host speed + input and output
transfer at the measured bandwidth (background: fault-tolerant command nodes).
"""

RESOURCES = ("cpu", "memory", "disk_io", "net")
# Demands that reserve capacity (a task that does not fit is not a candidate).
RESERVED = ("cpu", "memory", "gpus")
COST_GROUP = "emergence.place.cost"


def published_cost(g, d, s_green, **_):
    """The background's green adjustment: D·(1 − g)·s_green."""
    return d * (1.0 - g) * s_green


def load_cost(name):
    """The cost function F registered under NAME in `emergence.place.cost`;
    "published" (or None) is the background's formula."""
    from ..errors import EmergenceError
    if name in (None, "", "published"):
        return published_cost
    from importlib.metadata import entry_points
    eps = entry_points()
    group = eps.select(group=COST_GROUP) if hasattr(eps, "select") else eps.get(COST_GROUP, [])
    for ep in group:
        if ep.name == name:
            return ep.load()
    raise EmergenceError(f"no cost function {name!r} in the entry-point group {COST_GROUP}; "
                         "use 'published' or install a package that registers it")


def mean_utilisation(hosts):
    """Ū[r] over all hosts (not only the candidates: the cluster's mean)."""
    n = len(hosts) or 1
    return {r: sum(h["util"].get(r, 0.0) for h in hosts) / n for r in RESOURCES}


def demand_fraction(host, demand):
    """V[r] for this host: the task's absolute demand over the host's capacity;
    a resource given already as a fraction (disk_io, net) passes through."""
    cap = host.get("capacity", {})
    v = {}
    for r in RESOURCES:
        d = demand.get(r, 0.0)
        c = cap.get(r)
        v[r] = d / c if c else d
    return v


def distance(util, v, mean):
    """D = Σ_r |(U[r] + V[r]) − Ū[r]|."""
    return sum(abs(util.get(r, 0.0) + v.get(r, 0.0) - mean[r]) for r in RESOURCES)


def unfit_reason(host, task):
    """None if the host can take the task, else why not (one short phrase)."""
    need = task.get("demand", {})
    cap, alloc = host.get("capacity", {}), host.get("allocated", {})
    for r in RESERVED:
        want = need.get(r, 0)
        if want:
            free = cap.get(r, 0) - alloc.get(r, 0)
            if want > free + 1e-9:
                return f"{r}: needs {want:g}, {free:g} free"
    arch = task.get("arch")
    if arch and host.get("arch") != arch:
        return f"arch: needs {arch}, host is {host.get('arch')}"
    labels = host.get("labels", {})
    for k, want in task.get("labels", {}).items():
        if labels.get(k) != want:
            return f"label {k}={want} missing"
    return None


def qos_reason(host, task, locate):
    """None if the host meets the task's network constraints, else why not.

    task["near"] is a list of {"to": NODE or "task:ID", "max_rtt": s,
    "min_bandwidth": bytes/s}; LOCATE(target) gives the node a target runs on
    (None if unknown).  RTT and bandwidth are the host's measured figures."""
    for c in task.get("near", ()):
        target = c["to"]
        node = locate(target) if target.startswith("task:") else target
        if node is None:
            return f"near {target}: not running anywhere"
        if node == host["name"]:
            continue  # the same host: loopback beats any bound
        rtt = host.get("rtt", {}).get(node)
        bw = host.get("bandwidth", {}).get(node)
        if "max_rtt" in c:
            if rtt is None:
                return f"near {target}: no RTT measured to {node}"
            if rtt > c["max_rtt"]:
                return f"near {target}: RTT to {node} {rtt * 1e3:.1f} ms > " \
                       f"{c['max_rtt'] * 1e3:.1f} ms"
        if "min_bandwidth" in c:
            if bw is None:
                return f"near {target}: no bandwidth measured to {node}"
            if bw < c["min_bandwidth"]:
                return f"near {target}: bandwidth to {node} {bw:.3g} B/s < " \
                       f"{c['min_bandwidth']:.3g} B/s"
    return None


def finish_time(host, task, origin=None):
    """A batch task's estimated finish on HOST, in seconds from now: queue wait
    there + run time scaled by the host's speed + moving its input from the
    node that holds it and its result back to ORIGIN at measured bandwidth."""
    speed = host.get("speed", 1.0) or 1.0
    t = host.get("queue_wait", 0.0) + task.get("expect", 0.0) / speed
    bw = host.get("bandwidth", {})
    src = task.get("input_node")
    for node, size in ((src, task.get("input_bytes", 0)), (origin, task.get("output_bytes", 0))):
        if size and node and node != host["name"]:
            rate = bw.get(node)
            t += size / rate if rate else float("inf")
    return t


def _key(row, batch):
    # figures equal up to float noise are a tie, broken by the next key
    first = row["finish"] if batch else row["D_max"]
    return (row.get("unresponsive", False), round(first, 9), round(row["D_green"], 9),
            row["name"])


def _rows(hosts, task, s_green, cost, locate, origin, s_locality=1.0):
    """(rows of candidates, rows of excluded hosts, batch?) in host order."""
    res = RESOURCES
    n = len(hosts) or 1
    utils = [h["util"] for h in hosts]
    mean = [sum(u.get(r, 0.0) for u in utils) / n for r in res]
    # D0 of every host, and the two largest: D_max(h) needs max over k != h
    base = [sum(abs(u.get(r, 0.0) - m) for r, m in zip(res, mean)) for u in utils]
    i1 = max(range(len(base)), key=base.__getitem__) if base else -1
    rest = [b for j, b in enumerate(base) if j != i1]
    second = max(rest) if rest else 0.0
    first = base[i1] if base else 0.0
    batch = bool(task.get("expect")) and not task.get("service")
    demand = task.get("demand", {})
    # the common case (capacity only) checked inline; reasons only for the excluded
    reserved = [(r, demand[r]) for r in RESERVED if demand.get(r)]
    plain_fit = not (task.get("arch") or task.get("labels") or task.get("near"))
    published = cost is published_cost
    out, excluded = [], []
    for i, h in enumerate(hosts):
        cap = h.get("capacity", {})
        if plain_fit:
            alloc = h.get("allocated", {})
            fits = True
            for r, want in reserved:
                if want > cap.get(r, 0) - alloc.get(r, 0) + 1e-9:
                    fits = False
                    break
        if not plain_fit or not fits:
            why = unfit_reason(h, task) or qos_reason(h, task, locate)
            if why:
                excluded.append({"name": h["name"], "excluded": why})
                continue
        u = utils[i]
        d = 0.0
        for r, m in zip(res, mean):
            want = demand.get(r, 0.0)
            c = cap.get(r)
            d += abs(u.get(r, 0.0) + (want / c if c else want) - m)
        share = h.get("fetch_share")
        if share:  # the share of its time the task would spend fetching layers
            d += s_locality * share
        g = h.get("green", 0.0)
        if published:
            d_green = d + d * (1.0 - g) * s_green
        else:
            d_green = d + cost(g=g, d=d, s_green=s_green, host=h, task=task)
        other = second if i == i1 else first
        row = {"name": h["name"], "D": d, "D_green": d_green,
               "D_max": d_green if d_green > other else other}
        if h.get("unresponsive"):
            row["unresponsive"] = True
        if "load_source" in h:
            row["load"] = h["load_source"]
        if "fetch" in h:
            row["fetch"], row["fetch_bytes"] = h["fetch"], h["fetch_bytes"]
        if batch:
            row["finish"] = finish_time(h, task, origin)
        out.append(row)
    return out, excluded, batch


def rank(hosts, task, s_green=0.0, cost=published_cost, locate=lambda t: None, origin=None,
         s_locality=1.0):
    """Every host with its figures, best first.

    Returns a list of dicts: name, and either `excluded` (why it cannot take the
    task) or D, D_green, D_max (and `finish` for batch tasks), in the order the
    scheduler prefers them.  Hosts marked `unresponsive` come after all others."""
    out, excluded, batch = _rows(hosts, task, s_green, cost, locate, origin, s_locality)
    out.sort(key=lambda r: _key(r, batch))
    return out + sorted(excluded, key=lambda r: r["name"])


def choose(hosts, task, s_green=0.0, cost=published_cost, locate=lambda t: None,
           origin=None):
    """The best host's name (rank's first, without sorting the rest), or None
    when no host can take the task."""
    out, _, batch = _rows(hosts, task, s_green, cost, locate, origin)
    if not out:
        return None
    return min(out, key=lambda r: _key(r, batch))["name"]


def explain(ranked):
    """Lines for `place --explain`: every candidate's figures and why it lost."""
    lines = []
    best = ranked[0] if ranked and "excluded" not in ranked[0] else None
    for r in ranked:
        if "excluded" in r:
            lines.append(f"  {r['name']:<16} excluded: {r['excluded']}")
            continue
        figures = f"D={r['D']:.4f} D_green={r['D_green']:.4f} D_max={r['D_max']:.4f}"
        if "finish" in r:
            figures += f" finish={r['finish']:.3f}s"
        if "fetch" in r:
            figures += f" fetch={r['fetch']:.2f}s ({r['fetch_bytes'] / 1e6:.1f} MB missing)"
        if r is best:
            verdict = "chosen"
        elif r.get("unresponsive"):
            verdict = "lost: marked unresponsive"
        elif "finish" in r and r["finish"] > best["finish"]:
            verdict = f"lost: finishes {r['finish'] - best['finish']:.3f}s later"
        elif r["D_max"] > best["D_max"]:
            verdict = f"lost: D_max higher by {r['D_max'] - best['D_max']:.4f}"
        elif r["D_green"] > best["D_green"]:
            verdict = f"lost: same D_max, D_green higher by {r['D_green'] - best['D_green']:.4f}"
        else:
            verdict = "lost: tie, broken by name"
        lines.append(f"  {r['name']:<16} {figures}  {verdict}"
                     + (f"  [U: {r['load']}]" if r.get("load") else ""))
    return lines
