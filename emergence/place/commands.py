"""The placement verbs: a cluster on etcd, submitting tasks, listing them, and
explaining a placement.  Each handler loads its modules when called; every
verb works without `emergence node` (it talks to etcd directly)."""

import math
import os
import sys

from ..command import FLAG, JSON, MULTI, VALUE, Option, UsageError, Verb
from ..errors import EmergenceError

TITLE = "Cluster (tasks placed across nodes; state in etcd, --etcd URL)"

ETCD = Option(VALUE, "the cluster's etcd (default $EMERGENCE_ETCD, else the one this "
                     "node joined; several: URLs joined by commas, tried in turn)", "URL")
PREFIX = Option(VALUE, "key prefix in etcd (default the cluster's, /emergence/)", "PREFIX")
CLUSTER_DIR = Option(VALUE, "this node's certificates and etcd user (default "
                            "$EMERGENCE_CLUSTER_DIR or /var/lib/emergence/cluster)", "DIR")
INSECURE = Option(FLAG, "plain http etcd without certificates or users (anyone who "
                        "reaches it controls the cluster)")
COMMON = {"etcd": ETCD, "prefix": PREFIX, "cluster-dir": CLUSTER_DIR, "insecure": INSECURE}
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _material(opts):
    from ..cluster.files import Material, default_dir
    return Material(opts.get("cluster-dir") or default_dir())


def _cluster(opts):
    """The cluster this command talks to: with this node's certificate, or
    plain http with --insecure (and a warning)."""
    from .state import DEFAULT_ENDPOINT, DEFAULT_PREFIX, Cluster
    url = opts.get("etcd") or opts.get("endpoints") or os.environ.get("EMERGENCE_ETCD")
    if opts.get("insecure"):
        from ..cluster.bootstrap import warn_insecure
        warn_insecure()
        return Cluster(url or DEFAULT_ENDPOINT.replace("https:", "http:"),
                       prefix=opts.get("prefix") or DEFAULT_PREFIX, insecure=True)
    m = _material(opts)
    if not url and m.exists():
        url = m.info["endpoints"]  # every member: the client fails over
    prefix = opts.get("prefix") or (m.info.get("prefix") if m.exists() else None)
    return Cluster(url or DEFAULT_ENDPOINT, prefix=prefix or DEFAULT_PREFIX,
                   material=m)


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
    if not math.isfinite(f):
        raise UsageError(f"--{name} {v!r} is not a finite number")
    if f < 0:
        raise UsageError(f"--{name} must not be negative")
    return f


def _fraction(opts, name):
    f = _float(opts, name) or 0.0
    if f > 1:
        raise UsageError(f"--{name} is a share between 0 and 1, not {opts.get(name)}")
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
    subs = ("init", "join", "members", "token", "issue")
    if not args or args[0] not in subs:
        raise UsageError("usage: emergence cluster init|join|members|token create|issue "
                         "[options]")
    sub, rest = args[0], args[1:]
    if sub == "token":
        if rest != ["create"]:
            raise UsageError("usage: emergence cluster token create [--role R] [--ttl S]")
        return _token(opts)
    if rest:
        raise UsageError(f"`cluster {sub}` takes no arguments, only options")
    if sub == "join":
        return _join(opts, ctx)
    return {"init": _init, "members": _members, "issue": _issue}[sub](opts)


def _roles(opts, default):
    from ..cluster.pki import check_roles
    raw = opts.get("role") or default
    roles = ["command", "worker"] if raw == "both" else raw.split(",")
    try:
        return check_roles(roles)
    except EmergenceError:
        raise UsageError("--role is worker, command, reader or both")


def _init(opts):
    from urllib.parse import urlparse

    from ..cluster import etcd
    from ..cluster.client import endpoints
    state = "/var/lib/emergence"
    members = _members_flag(opts)
    given = opts.get("endpoints") or opts.get("etcd") or os.environ.get("EMERGENCE_ETCD")
    if opts.get("insecure"):
        from ..cluster.bootstrap import warn_insecure
        warn_insecure()
        url = given or "http://127.0.0.1:2379"
    else:
        url = given or "https://127.0.0.1:2379"
    urls = endpoints(url)
    m = _material(opts)
    answering = []
    for one in urls:
        try:
            etcd.wait_ready(one, timeout=0.5, material=m)
            answering.append(one)
        except EmergenceError:
            pass
    if answering:
        if opts.get("endpoints") and m.exists() and not opts.get("insecure"):
            # join given members: this node's clients use all of them
            m.save_info(**dict(m.info, endpoints=urls))
        sys.stdout.write(f"etcd already answers at {','.join(answering)}; add nodes with "
                         "`emergence cluster token create` and `emergence cluster join`\n")
        return 0
    if opts.get("endpoints"):
        raise UsageError(f"--endpoints {','.join(urls)}: no member answers; start them, or "
                         "use --members N to start N members here")
    url = urls[0]
    u = urlparse(url)
    if u.scheme == "http" and not opts.get("insecure"):
        raise UsageError(f"--etcd {url} is plain http: use https:// or pass --insecure")
    data = opts.get("data-dir") or f"{state}/place/etcd"
    log = os.path.join(os.path.dirname(data.rstrip("/")), "etcd.log")
    prefix = opts.get("prefix") or "/emergence/"
    if opts.get("insecure"):
        proc, url = etcd.start(data, name="emergence", client_port=u.port or 2379, log=log,
                               detach=True)
        sys.stdout.write(f"etcd at {url} (pid {proc.pid}, data {data}, prefix {prefix}, "
                         "INSECURE)\n")
        return 0
    from ..cluster.bootstrap import init_members
    procs, urls, m = init_members(m.dir, data, members, name=opts.get("name"), prefix=prefix,
                                  client_port=u.port or 2379, log=log, detach=True,
                                  also_listen=opts.get("address", []))
    url, pids = ",".join(urls), ",".join(str(p.pid) for p in procs)
    sys.stdout.write(f"etcd at {url} (pid {pids}, data {data}, prefix "
                     f"{m.info['prefix']}), TLS and RBAC; this node is "
                     f"{m.info['name']} (command, worker), certificates in {m.dir}\n"
                     "add a node: `emergence cluster token create --role worker > FILE` here, "
                     "then `emergence cluster join --from http://THIS-NODE:7480 "
                     "--token-file FILE` there\n")
    return 0


def _members_flag(opts):
    raw = opts.get("members") or "1"
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= 9 or n % 2 == 0:
        raise UsageError(f"--members {raw!r}: use 1, 3, 5, 7 or 9 (an odd number keeps a "
                         "majority when one fails)")
    return n


def _token(opts):
    from ..cluster.join import DEFAULT_TTL, create_token
    ttl = _float(opts, "ttl") or DEFAULT_TTL
    sys.stdout.write(create_token(_material(opts), _roles(opts, "worker"), ttl) + "\n")
    return 0


def _issue(opts):
    import json

    from ..cluster import files
    from ..cluster.bootstrap import issue
    if not opts.get("name") or not opts.get("out"):
        raise UsageError("usage: emergence cluster issue --name NODE --role ROLE --out FILE")
    bundle = issue(_material(opts).dir, opts["name"], _roles(opts, "worker"),
                   opts.get("address", []))
    files.write(opts["out"], json.dumps(bundle, indent=1) + "\n")
    sys.stdout.write(f"{opts['out']}: certificate and etcd user for {bundle['name']} "
                     f"({', '.join(bundle['roles'])}); carry it to the node (it holds a "
                     "private key), then `emergence cluster join --bundle FILE`\n")
    return 0


def _credentials(opts, name):
    """Get this node's certificate if asked to (--bundle, or --from with a token)."""
    m = _material(opts)
    if opts.get("bundle"):
        from ..cluster.bootstrap import install, read_bundle
        b = read_bundle(opts["bundle"])
        install(m.dir, b)
        sys.stderr.write(f"joined as {b['name']} ({', '.join(b['roles'])}); "
                         f"certificates in {m.dir}\n")
    elif opts.get("from"):
        from ..cluster.join import read_token, request
        m = request(opts["from"], read_token(opts.get("token-file")), name, m.dir)
        sys.stderr.write(f"joined as {m.info['name']} ({', '.join(m.info['roles'])}); "
                         f"certificates in {m.dir}\n")
    elif opts.get("token-file") or opts.get("certs-only"):
        raise UsageError("--token-file needs --from URL (the node that holds the CA)")


def _join(opts, ctx):
    import signal
    import socket
    role = opts.get("role", "worker")
    if role not in ("worker", "command"):
        raise UsageError("--role is worker or command")
    name = opts.get("name") or socket.gethostname()
    # every number checked before anything happens (credentials, etcd)
    ttl = _float(opts, "lease-ttl") or 5.0
    ack = _float(opts, "ack-timeout")
    worker = {"lease_ttl": ttl, "cpu": _float(opts, "cpu"),
              "memory": _float(opts, "memory", unit=True), "arch": opts.get("arch"),
              "labels": _labels(opts), "green": _fraction(opts, "green"),
              "speed": _float(opts, "speed") or 1.0}
    if not opts.get("insecure"):
        _credentials(opts, name)
        if opts.get("certs-only"):
            return 0
    cluster = _cluster(opts)
    cluster.get("leader")  # one clear line now if etcd is away
    log = _logger(name)
    if role == "command":
        from .commander import Commander
        conf = {"lease_ttl": ttl}
        if ack:
            conf["ack_timeout"] = ack
        node = Commander(cluster, name, conf, log)
    else:
        from .worker import Worker
        conf = dict(worker, policy={"bundles": opts.get("allow-bundle", []),
                                    "binds": opts.get("allow-bind", [])})
        # the tasks' containers live where this command's --root/--store say
        conf["root"] = opts.get("root") or ctx.root
        conf["store"] = ctx.globals.get("store")
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
        what = r["what"] + (f" (refused: {r['why']})" if r.get("why") else "")
        sys.stdout.write(f"{r['id']:<14} {r['state']:<9} {r['host'] or '-':<12} "
                         f"{r['attempts']:>8} {ex:>4}  {what}\n")
    return 0


def _place(ctx, opts, args):
    from .. import fastjson
    from . import score
    from .commander import DEFAULTS, candidates, rank_task, task_demand
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
    chosen = candidates(spec, snap, settings)
    best = chosen[0]["name"] if chosen else None
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
    if chosen and "k8s_score" in chosen[0]:
        sys.stdout.write(f"  scheduler {settings['scheduler']} (Kubernetes' score, 0..100) "
                         "chooses in this order: " + ", ".join(
                             f"{r['name']} {r['k8s_score']:.1f}" for r in chosen) + "\n")
    return 0


VERBS = [
    Verb("cluster", "start a TLS etcd with a CA, mint join tokens, join a node, list members",
         "init|join|members|token create|issue [--etcd URL] [--role worker|command] "
         "[--name N] [--from URL --token-file F | --bundle F] [--cpu N] [--label K=V]...",
         {**COMMON,
          "address": Option(MULTI, "init/issue: another address (IP or DNS name) the "
                                   "node's certificate is for", "ADDR"),
          "ttl": Option(VALUE, "token create: seconds the token stays valid (default 3600)",
                        "S"),
          "out": Option(VALUE, "issue: the bundle file to write (0600)", "FILE"),
          "from": Option(VALUE, "join: the HTTP address of the node holding the CA "
                                "(http://HOST:7480)", "URL"),
          "token-file": Option(VALUE, "join: the one-time join token (or "
                                      "$EMERGENCE_JOIN_TOKEN)", "FILE"),
          "bundle": Option(VALUE, "join: a bundle from `cluster issue` instead of a token",
                           "FILE"),
          "certs-only": Option(FLAG, "join: get the certificate and stop"),
          "allow-bundle": Option(MULTI, "join --role worker: a directory bundle tasks may "
                                        "come from", "DIR"),
          "allow-bind": Option(MULTI, "join --role worker: a host path tasks may bind "
                                      "mount", "PATH"),
          "members": Option(VALUE, "init: etcd members to start on this host, each its own "
                                   "process, data dir and ports (default 1; 3 survives "
                                   "one failure)", "N"),
          "endpoints": Option(VALUE, "init: an etcd cluster already running (URLs joined "
                                     "by commas) to use instead of starting one; every "
                                     "verb: the same as --etcd", "URL,URL"),
          "data-dir": Option(VALUE, "init: etcd's data (default "
                                    "/var/lib/emergence/place/etcd)", "DIR"),
          "role": Option(VALUE, "join: worker (runs tasks) or command (places them); "
                                "token create/issue: worker, command, reader or both",
                         "ROLE"),
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
         {**COMMON,
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
         {**COMMON, "json": JSON}, _tasks),
    Verb("place", "where a task goes; --explain: every host's D, D_green and why it lost",
         "[--explain] TASK",
         {**COMMON,
          "explain": Option(FLAG, "every candidate's figures, the excluded and why"),
          "json": JSON}, _place),
]
