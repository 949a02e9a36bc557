"""The placement verbs: a cluster on etcd, submitting tasks, listing them, and
explaining a placement.  Each handler loads its modules when called; every
verb works without `emergence node` (it talks to etcd directly)."""

import os
import sys

from ..command import FLAG, JSON, MULTI, VALUE, Option, UsageError, Verb
from ..errors import EmergenceError

TITLE = "Cluster (tasks placed across nodes; state in etcd, --etcd URL)"

ETCD = Option(VALUE, "the cluster's etcd (default $EMERGENCE_ETCD or "
                     "http://127.0.0.1:2379)", "URL")
PREFIX = Option(VALUE, "key prefix in etcd (default /emergence/)", "PREFIX")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _cluster(opts):
    from .state import DEFAULT_ENDPOINT, DEFAULT_PREFIX, Cluster
    return Cluster(opts.get("etcd") or os.environ.get("EMERGENCE_ETCD") or DEFAULT_ENDPOINT,
                   prefix=opts.get("prefix") or DEFAULT_PREFIX)


def _float(opts, name, unit=False):
    v = opts.get(name)
    if v is None:
        return None
    s = v.strip().lower().rstrip("bi") if unit else v
    mult = 1
    if unit and s and s[-1] in _UNITS:
        s, mult = s[:-1], _UNITS[s[-1]]
    try:
        f = float(s) * mult
    except ValueError:
        raise UsageError(f"--{name} {v!r} is not a number"
                         + (" (bytes, or with k/m/g/t)" if unit else ""))
    if f < 0:
        raise UsageError(f"--{name} must not be negative")
    return f


def _labels(opts, name="label"):
    out = {}
    for kv in opts.get(name, []):
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise UsageError(f"--{name} {kv!r}: write NAME=VALUE")
        out[k] = v
    return out


def _logger(name):
    import time

    def log(msg):
        t = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        sys.stderr.write(f"{t} {name}: {msg}\n")
        sys.stderr.flush()
    return log


def _cluster_verb(ctx, opts, args):
    if not args or args[0] not in ("init", "join", "members"):
        raise UsageError("usage: emergence cluster init|join|members [options]")
    sub, rest = args[0], args[1:]
    if rest:
        raise UsageError(f"`cluster {sub}` takes no arguments, only options")
    if sub == "init":
        return _init(opts)
    if sub == "join":
        return _join(opts)
    return _members(opts)


def _init(opts):
    from . import etcd
    from .state import DEFAULT_PREFIX
    url = opts.get("etcd") or os.environ.get("EMERGENCE_ETCD") or "http://127.0.0.1:2379"
    try:
        etcd.wait_ready(url, timeout=0.5)
        sys.stdout.write(f"etcd already answers at {url}; join with "
                         f"`emergence cluster join --etcd {url}`\n")
        return 0
    except EmergenceError:
        pass
    from urllib.parse import urlparse
    port = urlparse(url).port or 2379
    data = opts.get("data-dir") or "/var/lib/emergence/place/etcd"
    proc, url = etcd.start(data, name="emergence", client_port=port,
                           log=os.path.join(os.path.dirname(data.rstrip("/")), "etcd.log"),
                           detach=True)
    sys.stdout.write(f"etcd at {url} (pid {proc.pid}, data {data}, prefix {DEFAULT_PREFIX})\n"
                     f"start nodes with `emergence cluster join --role command` and "
                     f"`emergence cluster join --role worker`\n")
    return 0


def _join(opts):
    import signal
    import socket
    role = opts.get("role", "worker")
    if role not in ("worker", "command"):
        raise UsageError("--role is worker or command")
    name = opts.get("name") or socket.gethostname()
    cluster = _cluster(opts)
    cluster.get("leader")  # one clear line now if etcd is away
    ttl = _float(opts, "lease-ttl") or 5.0
    log = _logger(name)
    if role == "command":
        from .commander import Commander
        conf = {"lease_ttl": ttl}
        if opts.get("ack-timeout"):
            conf["ack_timeout"] = _float(opts, "ack-timeout")
        node = Commander(cluster, name, conf, log)
    else:
        from .worker import Worker
        conf = {"lease_ttl": ttl, "cpu": _float(opts, "cpu"),
                "memory": _float(opts, "memory", unit=True), "arch": opts.get("arch"),
                "labels": _labels(opts), "green": _float(opts, "green") or 0.0,
                "speed": _float(opts, "speed") or 1.0}
        conf["root"] = opts.get("root") or "/run/emergence"
        node = Worker(cluster, name, conf, log)

    def stop(*_):
        node.stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.run()
    if role == "command":
        node.resign()
    log(f"{role} node {name} stopped")
    return 0


def _members(opts):
    from .. import fastjson
    snap = _cluster(opts).snapshot()
    leader = snap.get("leader")
    tele, unresp = snap.get("telemetry", {}), snap.get("unresponsive", {})
    rows = []
    nodes = [(n, m) for n, m in snap.get("commanders", {}).items()]
    nodes += [(n, m) for n, m in snap.get("members", {}).items()]
    for name, m in sorted(nodes, key=lambda nm: (nm[0], nm[1].get("role") != "command")):
        t = tele.get(name, {})
        rows.append({"name": name, "role": m.get("role"),
                     "leader": name == leader and m.get("role") == "command",
                     "cpu": m.get("capacity", {}).get("cpu"),
                     "util": t.get("util", {}), "running": t.get("running"),
                     "unresponsive": unresp.get(name, {}).get("why")})
    if opts.get("json"):
        sys.stdout.write(fastjson.dumps(rows) + "\n")
        return 0
    sys.stdout.write(f"{'NAME':<16} {'ROLE':<8} {'CPU':>5} {'CPU%':>5} {'RUN':>4}  NOTE\n")
    for r in rows:
        note = "leader" if r["leader"] else (f"unresponsive: {r['unresponsive']}"
                                             if r["unresponsive"] else "")
        cpu = f"{r['cpu']:g}" if r["cpu"] else "-"
        use = f"{r['util'].get('cpu', 0) * 100:.0f}" if r["role"] == "worker" else "-"
        run = str(r["running"]) if r["running"] is not None else "-"
        sys.stdout.write(f"{r['name']:<16} {r['role']:<8} {cpu:>5} {use:>5} {run:>4}  {note}\n")
    return 0


def _submit(ctx, opts, args):
    import time

    from .tasks import submit
    spec = {}
    if opts.get("spec"):
        import json
        if args:
            raise UsageError("--spec FILE is the whole task; no IMAGE or CMD with it")
        try:
            with open(opts["spec"]) as f:
                spec = json.load(f)
        except OSError as e:
            raise EmergenceError(f"--spec {opts['spec']}: {e.strerror}")
        except ValueError as e:
            raise EmergenceError(f"--spec {opts['spec']}: not JSON ({e})")
        if not isinstance(spec, dict):
            raise EmergenceError(f"--spec {opts['spec']}: a task spec is a JSON object")
    elif opts.get("sleep") is not None:
        spec = {"kind": "sleep", "seconds": _float(opts, "sleep")}
        if args:
            raise UsageError("--sleep tasks take no image or command")
    elif opts.get("bundle"):
        spec = {"kind": "bundle", "bundle": os.path.abspath(opts["bundle"])}
        if args:
            raise UsageError("--bundle tasks run the bundle's own process; no IMAGE or CMD")
    else:
        if not args:
            raise UsageError("usage: emergence submit IMAGE [-- CMD...] [--cpu N] "
                             "[--memory BYTES] [--timeout S] [--expect S]")
        spec = {"kind": "image", "image": args[0], "cmd": args[1:]}
    demand = dict(spec.get("demand") or {}) if isinstance(spec.get("demand"), dict) else {}
    for r in ("cpu", "gpus"):
        if opts.get(r) is not None:
            demand[r] = _float(opts, r)
    if opts.get("memory") is not None:
        demand["memory"] = _float(opts, "memory", unit=True)
    if demand:
        spec["demand"] = demand
    for f in ("timeout", "expect"):
        if opts.get(f) is not None:
            spec[f] = _float(opts, f)
    if opts.get("id"):
        spec["id"] = opts["id"]
    if opts.get("arch"):
        spec["arch"] = opts["arch"]
    labels = _labels(opts)
    if labels:
        spec["labels"] = labels
    cluster = _cluster(opts)
    tid = submit(cluster, spec)
    sys.stdout.write(tid + "\n")
    if opts.get("wait"):
        while True:
            r = cluster.get("results", tid)
            if r is not None:
                sys.stdout.write(r.get("output", ""))
                return 0 if r.get("exit") == 0 else 1
            time.sleep(0.2)
    return 0


def _tasks(ctx, opts, args):
    from .. import fastjson
    from .tasks import listing
    if args:
        raise UsageError("`tasks` takes no arguments")
    rows = listing(_cluster(opts).snapshot())
    if opts.get("json"):
        sys.stdout.write(fastjson.dumps(rows) + "\n")
        return 0
    sys.stdout.write(f"{'ID':<14} {'STATE':<9} {'HOST':<12} {'ATTEMPTS':>8} {'EXIT':>4}  WHAT\n")
    for r in rows:
        ex = "-" if r["exit"] is None else str(r["exit"])
        sys.stdout.write(f"{r['id']:<14} {r['state']:<9} {r['host'] or '-':<12} "
                         f"{r['attempts']:>8} {ex:>4}  {r['what']}\n")
    return 0


def _place(ctx, opts, args):
    from .. import fastjson
    from . import score
    from .commander import DEFAULTS, rank_task, task_demand
    if len(args) != 1:
        raise UsageError("usage: emergence place [--explain] TASK")
    snap = _cluster(opts).snapshot()
    spec = snap.get("tasks", {}).get(args[0])
    if spec is None:
        raise EmergenceError(f"no task {args[0]!r}; see `emergence tasks`")
    settings = {k: DEFAULTS[k] for k in ("s_green", "scheduler", "cost")}
    settings.update(snap.get("config", {}))
    ranked = rank_task(spec, snap, settings)
    if opts.get("json"):
        sys.stdout.write(fastjson.dumps(ranked) + "\n")
        return 0
    best = ranked[0]["name"] if ranked and "excluded" not in ranked[0] else None
    if not opts.get("explain"):
        sys.stdout.write(f"{best or '(no host fits)'}\n")
        return 0
    st = snap.get("status", {}).get(args[0], {})
    policy = "earliest finish" if spec.get("expect") and not spec.get("service") else "D_max"
    v = task_demand(spec, snap)
    sys.stdout.write(
        f"task {args[0]}: demand {fastjson.dumps(v)}, policy {policy}, "
        f"s_green {float(settings['s_green']):g}, cost {settings['cost']}\n"
        f"  D[h] = sum_r |(U[h][r] + V[r]) - mean U[r]|; D_green = D + F(g, D); "
        f"D_max = max over hosts after placing on h\n"
        f"  now: {st.get('state', 'pending')} on {st.get('host') or '-'} "
        f"(attempt {st.get('attempt', 0)})\n")
    sys.stdout.write("\n".join(score.explain(ranked)) + "\n")
    return 0


VERBS = [
    Verb("cluster", "start a local etcd, join a node (worker or command), list members",
         "init|join|members [--etcd URL] [--role worker|command] [--name N] [--cpu N] "
         "[--memory B] [--label K=V]...",
         {"etcd": ETCD, "prefix": PREFIX,
          "data-dir": Option(VALUE, "init: etcd's data (default "
                                    "/var/lib/emergence/place/etcd)", "DIR"),
          "role": Option(VALUE, "join: worker (runs tasks) or command (places them)", "ROLE"),
          "name": Option(VALUE, "join: this node's name (default the hostname)", "NAME"),
          "cpu": Option(VALUE, "join: CPUs offered (default all)", "N"),
          "memory": Option(VALUE, "join: memory offered, bytes or k/m/g", "BYTES"),
          "arch": Option(VALUE, "join: architecture (default this machine's)", "ARCH"),
          "label": Option(MULTI, "join: a capability label (gpu=a100, data=local)",
                          "K=V"),
          "green": Option(VALUE, "join: share of green energy, 0..1", "G"),
          "speed": Option(VALUE, "join: relative speed (1 = reference)", "X"),
          "lease-ttl": Option(VALUE, "join: seconds until a silent node is gone "
                                     "(default 5)", "S"),
          "ack-timeout": Option(VALUE, "join --role command: seconds a host has to "
                                       "acknowledge (default 3)", "S"),
          "root": Option(VALUE, "join: container state dir for tasks", "DIR"),
          "json": JSON}, _cluster_verb),
    Verb("submit", "submit a task: placed on the best host, re-dispatched on timeout",
         "IMAGE [-- CMD...] | --bundle DIR | --sleep S  [--cpu N] [--memory B] "
         "[--timeout S] [--expect S] [--wait]",
         {"etcd": ETCD, "prefix": PREFIX,
          "cpu": Option(VALUE, "CPUs the task needs", "N"),
          "memory": Option(VALUE, "memory it needs, bytes or k/m/g", "BYTES"),
          "gpus": Option(VALUE, "GPUs it needs", "N"),
          "timeout": Option(VALUE, "seconds before it is sent elsewhere (default 60)", "S"),
          "expect": Option(VALUE, "expected run time: a batch task, placed by earliest "
                                  "finish", "S"),
          "arch": Option(VALUE, "the architecture it needs", "ARCH"),
          "label": Option(MULTI, "a label the host must have", "K=V"),
          "bundle": Option(VALUE, "run a bundle directory instead of an image", "DIR"),
          "sleep": Option(VALUE, "no container: sleep S seconds (tests)", "S"),
          "id": Option(VALUE, "the task's id (default a random one)", "ID"),
          "spec": Option(VALUE, "the task as JSON (all fields: near, input_bytes, "
                                "output_bytes, input_node, service, ...)", "FILE"),
          "wait": Option(FLAG, "wait for the result and print its output")}, _submit),
    Verb("tasks", "list the cluster's tasks: state, host, attempts", "[--json]",
         {"etcd": ETCD, "prefix": PREFIX, "json": JSON}, _tasks),
    Verb("place", "where a task goes; --explain: every host's D, D_green and why it lost",
         "[--explain] TASK",
         {"etcd": ETCD, "prefix": PREFIX,
          "explain": Option(FLAG, "every candidate's figures, the excluded and why"),
          "json": JSON}, _place),
]
