"""A command node.  Every command node campaigns for the etcd leader key on its
own lease; the one holding it places and dispatches, the others wait and take
over within the lease's time when the leader stops renewing it.  All state is
in etcd, so the new leader goes on from exactly where the old one stopped.

Each pass of the leader (on a change under the prefix, seen by an etcd watch,
and at least every `interval` seconds for deadlines) reads the whole state
at one revision and, per task:
  - new: rank the hosts (score.rank) and dispatch to the best;
  - assigned, result present: done;
  - assigned, host's lease gone for `fence_margin` seconds (the host stops
    its containers before the lease expires: worker.py's fence), not
    acknowledged within `ack_timeout`, or not finished within its timeout:
    re-dispatch to the next-best host not
    yet tried (all tried: the best again) and mark the silent host
    unresponsive; unresponsive hosts rank last.
An unresponsive host whose telemetry moves again is asked for fresh load
figures (probe/HOST); when it answers, its rank is recomputed and logged and
the mark lifted.  Every write is a transaction guarded by leadership.
"""

import random
import threading
import time

from . import demand as demand_mod
from . import locality, score
from .state import now

DEFAULTS = {"lease_ttl": 5.0, "interval": 0.5, "ack_timeout": 3.0, "timeout": 60.0,
            "fence_margin": 1.0,
            "s_green": 0.0, "scheduler": "InterferenceAwareScheduler", "cost": "published"}
STALE_AFTER = 30.0  # seconds: an older load measurement is not used (allocations are)
# the keys whose change calls for a pass (telemetry moves every heartbeat: not it)
WAKING = ("tasks/", "results/", "ack/", "members/", "leader", "config/")
SCHEDULERS = ("InterferenceAwareScheduler", "RandomScheduler", "LeastAllocated",
              "BalancedAllocation")


def hosts_view(snap, include_unresponsive=True, stale_after=STALE_AFTER, at=None):
    """The hosts the score sees: live members (role worker) with their load,
    what the leader has already allocated to them, and the unresponsive mark.

    U[h] is the host's measured load (its 1-minute window, load.py) plus the
    demand of tasks placed there since that measurement; without a fresh
    measurement it is what is allocated, and `load_source` says which."""
    from .load import corrected
    members = snap.get("members", {})
    tele = snap.get("telemetry", {})
    unresp = snap.get("unresponsive", {})
    tasks, status = snap.get("tasks", {}), snap.get("status", {})
    at = now() if at is None else at
    alloc, placed = {}, {}
    for tid, st in status.items():
        if st.get("state") == "assigned" and st.get("host"):
            d = tasks.get(tid, {}).get("demand", {})
            a = alloc.setdefault(st["host"], {"cpu": 0.0, "memory": 0.0, "gpus": 0.0,
                                              "tasks": 0})
            for r in ("cpu", "memory", "gpus"):
                a[r] += d.get(r, 0.0)
            a["tasks"] += 1
            placed.setdefault(st["host"], []).append((st.get("dispatched", 0.0), d))
    hosts = []
    for name, m in sorted(members.items()):
        if m.get("role") != "worker":
            continue
        if name in unresp and not include_unresponsive:
            continue
        t = tele.get(name, {})
        cap = m.get("capacity", {})
        a = alloc.get(name, {})
        util, how = corrected(t.get("load"), t.get("ts"), placed.get(name, ()), cap, at,
                              stale_after)
        if util is None:
            util = dict(t.get("util", {}))
            for r in ("cpu", "memory"):  # what is promised counts before it shows
                if cap.get(r):
                    util[r] = max(util.get(r, 0.0), a.get(r, 0.0) / cap[r])
            how = f"allocations ({how})"
        slots = max(1.0, cap.get("cpu", 1.0))
        hosts.append({"name": name, "util": util, "capacity": cap, "load_source": how,
                      "allocated": {r: a.get(r, 0.0) for r in ("cpu", "memory", "gpus")},
                      "arch": m.get("arch"), "labels": m.get("labels", {}),
                      "green": t.get("green", m.get("green", 0.0)),
                      "speed": m.get("speed", 1.0),
                      "queue_wait": a.get("tasks", 0) / slots * t.get("mean_run", 0.0),
                      "rtt": t.get("rtt", {}), "bandwidth": t.get("bandwidth", {}),
                      "unresponsive": name in unresp})
    return hosts


def estimate_key(spec):
    """What runs of the same work share: the image, or the bundle's path."""
    if spec.get("image"):
        return spec["image"]
    return f"bundle:{spec['bundle']}" if spec.get("bundle") else None


def task_demand(spec, snap):
    """V: declared, completed by the image's running estimate."""
    est = snap.get("estimates", {}).get(estimate_key(spec))
    v, _ = demand_mod.demand_of(spec, est)
    return v


def rank_task(spec, snap, settings, exclude=()):
    """score.rank for SPEC against the snapshot's hosts."""
    stale = float(settings.get("stale_after", STALE_AFTER))
    hosts = [h for h in hosts_view(snap, stale_after=stale) if h["name"] not in exclude]
    status = snap.get("status", {})

    def locate(target):
        st = status.get(target[len("task:"):], {})
        return st.get("host") if st.get("state") == "assigned" else None

    task = dict(spec, demand=task_demand(spec, snap))
    est = snap.get("estimates", {}).get(estimate_key(spec)) or {}
    hosts = locality.annotate(hosts, task, snap.get("holdings", {}),
                              est.get("usage", {}).get("seconds"))
    cost = score.load_cost(settings.get("cost"))
    return score.rank(hosts, task, s_green=float(settings.get("s_green", 0.0)), cost=cost,
                      locate=locate, origin=spec.get("origin"),
                      s_locality=float(settings.get("s_locality", 1.0)))


def candidates(spec, snap, settings, rng=random):
    """The hosts that can take SPEC, best first by the chosen scheduler
    (config/scheduler): D_max (InterferenceAwareScheduler, the default),
    Kubernetes' LeastAllocated or BalancedAllocation (k8s.py), or random;
    unresponsive hosts last in every case."""
    ranked = [r for r in rank_task(spec, snap, settings) if "excluded" not in r]
    name = settings.get("scheduler")
    if name == "RandomScheduler":
        rng.shuffle(ranked)
        ranked.sort(key=lambda r: r.get("unresponsive", False))
    elif name in ("LeastAllocated", "BalancedAllocation"):
        from . import k8s
        stale = float(settings.get("stale_after", STALE_AFTER))
        ranked = k8s.order(ranked, hosts_view(snap, stale_after=stale),
                           task_demand(spec, snap), name)
    return ranked


class Commander:
    """One command node: campaign, and while leading, place and watch tasks."""

    def __init__(self, cluster, name, config=None, log=print):
        self.cluster, self.name, self.log = cluster, name, log
        self.config = dict(DEFAULTS, **(config or {}))
        self.leading = False
        self.lease = None
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.watch = None
        self.counts = {"dispatched": 0, "redispatched": 0, "reranked": 0, "done": 0}
        self.rng = random.Random()
        self.gone_since = {}  # host -> when this leader first saw its lease gone

    # -- the loop -------------------------------------------------------------
    def run(self):
        ttl = float(self.config["lease_ttl"])
        self.lease = self.cluster.lease(ttl)
        self.cluster.put({"name": self.name, "role": "command", "started": now()},
                         "commanders", self.name, lease=self.lease)
        self.log(f"command node {self.name} up (lease {ttl:g}s)")
        last_refresh = time.monotonic()
        # a pass on every change that matters (not telemetry), else each interval
        from .watch import PrefixWatch
        self.watch = PrefixWatch(self.cluster, self.cluster.prefix, self.wake,
                                 sections=WAKING)
        try:
            self._loop(ttl, last_refresh)
        finally:
            self.watch.stop()

    def _loop(self, ttl, last_refresh):
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                if time.monotonic() - last_refresh > ttl / 3:
                    if self.lease.refresh() <= 0:
                        self._new_lease(ttl)
                    last_refresh = time.monotonic()
                was = self.leading
                self.leading = self.cluster.campaign(self.name, self.lease)
                if self.leading and not was:
                    self.log(f"leader: {self.name} leads now")
                elif was and not self.leading:
                    self.log(f"leader: {self.name} lost the lead")
                if self.leading:
                    self.step()
            except Exception as e:  # etcd away for a moment: keep trying
                self.log(f"command node {self.name}: {type(e).__name__}: {e}")
                self.leading = False
                time.sleep(0.5)
            # the lease wants renewing every ttl/3 whatever the interval
            self.wake.wait(min(float(self.config["interval"]), ttl / 3))

    def _new_lease(self, ttl):
        self.log(f"command node {self.name}: lease expired, registering again")
        self.leading = False
        self.lease = self.cluster.lease(ttl)
        self.cluster.put({"name": self.name, "role": "command", "started": now()},
                         "commanders", self.name, lease=self.lease)

    def stop(self):
        self.stopping.set()
        self.wake.set()

    def resign(self):
        if self.lease is not None:
            try:
                self.lease.revoke()
            except Exception:
                pass

    def settings(self, snap):
        s = {k: self.config[k] for k in ("s_green", "scheduler", "cost")}
        s.update(snap.get("config", {}))
        return s

    # -- one pass ---------------------------------------------------------------
    def step(self):
        snap = self.cluster.snapshot()
        settings = self.settings(snap)
        t = now()
        tasks, status = snap.get("tasks", {}), snap.get("status", {})
        results, acks = snap.get("results", {}), snap.get("ack", {})
        members = snap.get("members", {})
        mono = time.monotonic()
        self.gone_since = {h: self.gone_since.get(h, mono)
                           for h in _assigned_hosts_all(snap) if h not in members}
        self._probe_unresponsive(snap, settings)
        # 1. results first, so the room they free is there for the queue below
        open_tasks = []
        for tid, spec in tasks.items():
            st = status.get(tid)
            if st is None:
                st = {"state": "pending", "attempt": 0, "history": []}
            if st["state"] == "done":
                continue
            if tid in results:
                self._finish(tid, spec, st, results[tid], snap)
                continue
            open_tasks.append((tid, spec, st))
        # 2. the fair queue: what must move (a lost host, no ack, timed out) and
        # what waits for room again goes before new tasks; then the oldest first
        queue = []
        for tid, spec, st in open_tasks:
            if st["state"] == "pending":
                queue.append((tid, spec, st, None))
                continue
            host, attempt = st["host"], st["attempt"]
            acked = f"{tid}/{attempt}" in acks
            timeout = float(spec.get("timeout") or self.config["timeout"])
            why = None
            if host not in members:
                if mono - self.gone_since.get(host, mono) < float(self.config["fence_margin"]):
                    continue  # expired just now: give its fence the margin to finish
                why = "its lease expired (node gone)"
            elif not acked and t - st["dispatched"] > float(self.config["ack_timeout"]):
                why = f"no acknowledgement in {self.config['ack_timeout']:g}s"
            elif t - st["dispatched"] > timeout:
                why = f"no result in its timeout of {timeout:g}s"
            if why:
                self._mark_unresponsive(host, tid, why, snap)
                queue.append((tid, spec, st, why))
        queue.sort(key=queue_order)
        for tid, spec, st, why in queue:
            self._dispatch(tid, spec, st, snap, settings, why=why)

    def _finish(self, tid, spec, st, r, snap):
        st = dict(st, state="done", host=r.get("host"), attempt=r.get("attempt"),
                  finished=r.get("finished"))
        puts = [(st, "status", tid)]
        dels = [("assign", h, tid) for h in _assigned_hosts(snap, tid)]
        est = _estimate_update(snap, spec, r)
        if est is not None:
            puts.append((est, "estimates", estimate_key(spec)))
            snap.setdefault("estimates", {})[estimate_key(spec)] = est
        if self.cluster.guarded(self.name, puts, dels):
            self.counts["done"] += 1
            snap.setdefault("status", {})[tid] = st

    def _dispatch(self, tid, spec, st, snap, settings, why):
        tried = [a["host"] for a in st.get("history", [])]
        ranked = candidates(spec, snap, settings, self.rng)
        why = why or st.get("requeued")
        if not ranked:
            # nowhere to go now: pending again (and off the silent host), keeping
            # why, so the dispatch that follows is logged as the re-dispatch it is
            if st.get("state") != "pending" or st.get("waiting") is None:
                new = dict(st, state="pending", waiting="no host fits", requeued=why,
                           from_host=st.get("host") or st.get("from_host"))
                dels = [("assign", st["host"], tid)] if st.get("host") else []
                new["host"] = None
                if self.cluster.guarded(self.name, [(new, "status", tid)], dels):
                    snap.setdefault("status", {})[tid] = new
            return
        fresh = [r for r in ranked if r["name"] not in tried]
        best = (fresh or ranked)[0]
        attempt = st.get("attempt", 0) + 1
        t = now()
        history = st.get("history", []) + [{"host": best["name"], "attempt": attempt,
                                             "at": t, "why": why}]
        new = {"state": "assigned", "host": best["name"], "attempt": attempt,
               "dispatched": t, "history": history, "D": best["D"],
               "D_green": best["D_green"], "D_max": best["D_max"],
               "load": best.get("load"), "scheduler": settings.get("scheduler")}
        puts = [(new, "status", tid),
                ({"attempt": attempt, "spec": spec, "dispatched": t},
                 "assign", best["name"], tid)]
        dels = [("assign", st["host"], tid)] if st.get("host") and \
            st["host"] != best["name"] else []
        if not self.cluster.guarded(self.name, puts, dels):
            self.leading = False
            return
        snap.setdefault("status", {})[tid] = new
        if why is None:
            self.counts["dispatched"] += 1
        else:
            self.counts["redispatched"] += 1
            old = st.get("host") or st.get("from_host")
            self.log(f"re-dispatch {tid} attempt {attempt}: {old} -> {best['name']} "
                     f"({old}: {why})")

    def _mark_unresponsive(self, host, tid, why, snap):
        unresp = snap.setdefault("unresponsive", {})
        if host in unresp:
            return
        mark = {"since": now(), "task": tid, "why": why,
                "heartbeat": snap.get("telemetry", {}).get(host, {}).get("ts", 0)}
        if self.cluster.guarded(self.name, [(mark, "unresponsive", host)]):
            unresp[host] = mark
            self.log(f"unresponsive: {host} ({why}, task {tid}); ranked last")

    def _probe_unresponsive(self, snap, settings):
        """Ask a host that was silent and speaks again for fresh figures; when
        they come, recompute its rank and lift the mark."""
        tele, probes = snap.get("telemetry", {}), snap.get("probe", {})
        for host, mark in list(snap.get("unresponsive", {}).items()):
            t = tele.get(host)
            if not t or t.get("ts", 0) <= mark.get("heartbeat", 0) or \
                    host not in snap.get("members", {}):
                continue  # still silent
            nonce = probes.get(host)
            if nonce is None:
                nonce = f"{self.name}-{int(now() * 1000)}"
                if self.cluster.guarded(self.name, [(nonce, "probe", host)]):
                    self.log(f"probe: {host} answers again; asked for its load and traffic")
                continue
            if t.get("probe") != nonce:
                continue
            snap["unresponsive"] = {h: m for h, m in snap["unresponsive"].items()
                                    if h != host}
            ranked = rank_task({"demand": {}}, snap, settings)  # its place by load alone
            pos = next((i for i, r in enumerate(ranked) if r["name"] == host), None)
            row = ranked[pos] if pos is not None else {}
            if self.cluster.guarded(self.name, [], [("unresponsive", host), ("probe", host)]):
                self.counts["reranked"] += 1
                u = t.get("util", {})
                where = pos + 1 if pos is not None else "?"
                self.log(f"re-rank: {host} answered (cpu {u.get('cpu', 0):.2f}, "
                         f"net {t.get('net_bytes_per_s', 0):.0f} B/s, "
                         f"{t.get('running', 0)} running); now {where} of {len(ranked)}, "
                         f"D={row.get('D', float('nan')):.4f}")
                snap.get("probe", {}).pop(host, None)


def queue_order(entry):
    """Re-queued first (a task that must move, or that waits for room after
    losing its host), then by age: new submissions never overtake them."""
    _, spec, st, why = entry
    requeued = why is not None or st.get("requeued") is not None
    return (0 if requeued else 1, spec.get("submitted", 0))


def _assigned_hosts_all(snap):
    return {st.get("host") for st in snap.get("status", {}).values()
            if st.get("state") == "assigned"}


def _assigned_hosts(snap, tid):
    return [h for h, _, t in (k.partition("/") for k in snap.get("assign", {})) if t == tid]


def _estimate_update(snap, spec, result):
    key, usage = estimate_key(spec), result.get("usage")
    if not key or not usage:
        return None
    return demand_mod.update(snap.get("estimates", {}).get(key), usage)
