"""A worker node: registers with a lease, heartbeats its telemetry, watches
its assignments and runs each with the runtime, then reports the result.

Exactly-once in effect: a result is recorded with a create-if-absent
transaction keyed by task id, so the first result wins; a worker whose
result comes second discards it and removes its container.  An assignment
whose task already has a result is dropped without running.

Before anything runs, a task must be signed by a command node (the
cluster CA's certificate with role `command`, emergence/cluster/signing.py)
and ask nothing of this host that its policy does not allow
(emergence/cluster/policy.py: bind mounts, host namespaces, capabilities,
devices); otherwise its result is a refusal with the reason
(`refused`), recorded first-wins like any result, and nothing runs.  A
bundle task runs the copy of config.json that was checked.

Fencing: a worker that cannot renew its lease for `fence_after` of its TTL
(default 0.6) stops its task containers itself, before etcd expires the
lease and the leader (which waits for the expiry plus a margin) sends the
task elsewhere: two attempts of one task never run at once.  A fenced
attempt reports nothing; if the lease survived, the worker runs it again,
and if it expired, the worker withdraws its acknowledgement so the leader
re-dispatches at once.

Task kinds:
  image    `emergence run --image IMAGE ID -- CMD…` (a Nix-built image)
  bundle   `emergence run --bundle DIR ID`
  sleep    no container: sleeps `seconds` (for tests and the simulator of
           a cluster on a small machine; it exercises the same dispatch path)
  stage    a CI stage of `pipeline run --cluster` (pipeline/stagetask.py):
           inputs pulled by digest through share, the result published as
           the shared cache's artifact, its manifest digest in the result;
           its output goes live to logs/NAME/ (pipeline/logstream.py)
"""

import os
import subprocess
import sys
import threading
import time

from .state import now

DEFAULTS = {"lease_ttl": 5.0, "interval": 2.0, "cpu": None, "memory": None,
            "arch": None, "labels": {}, "green": 0.0, "speed": 1.0,
            "root": "/run/emergence", "store": None, "policy": None, "fence_after": 0.6}


def _default_store():
    from .. import default_store
    return default_store()


def _machine_arch():
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def _mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _net_bytes():
    total = 0
    try:
        with open("/proc/net/dev") as f:
            for line in f.readlines()[2:]:
                name, _, rest = line.partition(":")
                if name.strip() != "lo":
                    cols = rest.split()
                    total += int(cols[0]) + int(cols[8])
    except (OSError, IndexError, ValueError):
        pass
    return total


class _Superseded(Exception):
    """Another host's result came first while this one still ran."""


def emergence_argv():
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "emergence"]


class Worker:
    def __init__(self, cluster, name, config=None, log=print):
        self.cluster, self.name, self.log = cluster, name, log
        c = dict(DEFAULTS, **(config or {}))
        self.config = c
        self.capacity = {"cpu": float(c["cpu"] or os.cpu_count() or 1),
                         "memory": float(c["memory"] or _mem_total())}
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set by the watch, by stop(), by a resumed fence
        self.watch = None
        self.running = {}   # task id -> attempt
        self.started = set()  # (task id, attempt) begun here
        self.lock = threading.Lock()
        self.lease = None
        self.answered_probe = None
        self.runs = []  # durations of finished tasks, for the mean run time
        self.usage = {}  # (task, attempt) -> measured cpu cores and peak memory
        self.cpu_seconds = {}
        self.counts = {"ran": 0, "won": 0, "discarded": 0, "skipped": 0, "refused": 0}
        self.checked = {}  # (task id, attempt) -> the bundle config that passed the policy
        self._net = (time.monotonic(), _net_bytes())
        from .load import HostLoad
        self.load = HostLoad(c.get("net_bandwidth"))  # measured, for the leader's score
        from .locality import Publisher
        self.holdings = Publisher(c["store"] or _default_store())
        self.threads = []
        self.lease_ok = time.monotonic()  # when the last successful renewal was sent
        self.fenced = set()  # (task id, attempt) stopped because the lease was at risk
        self.lease_lost = False  # set when the lease expired and a new one was taken

    def member(self):
        c = self.config
        return {"name": self.name, "role": "worker", "capacity": self.capacity,
                "arch": c["arch"] or _machine_arch(), "labels": c["labels"] or {},
                "green": float(c["green"]), "speed": float(c["speed"]), "pid": os.getpid(),
                "started": now()}

    def telemetry(self):
        with self.lock:
            alloc = {"cpu": 0.0, "memory": 0.0}
            for spec in self.running.values():
                for r in alloc:
                    alloc[r] += spec.get("demand", {}).get(r, 0.0)
            n = len(self.running)
        t, b = time.monotonic(), _net_bytes()
        rate = (b - self._net[1]) / max(1e-3, t - self._net[0])
        self._net = (t, b)
        util = {r: alloc[r] / self.capacity[r] if self.capacity[r] else 0.0 for r in alloc}
        util["disk_io"] = 0.0
        util["net"] = 0.0
        self.load.sample()
        return {"ts": now(), "util": util, "load": self.load.windows(),
                "running": n, "load1": os.getloadavg()[0],
                "net_bytes_per_s": rate, "probe": self.answered_probe,
                "mean_run": sum(self.runs[-20:]) / len(self.runs[-20:]) if self.runs else 0.0,
                "green": float(self.config["green"])}

    def register(self):
        sent = time.monotonic()
        self.lease = self.cluster.lease(float(self.config["lease_ttl"]))
        self.lease_ok = sent
        self.cluster.put(self.member(), "members", self.name, lease=self.lease)
        self.cluster.put(self.telemetry(), "telemetry", self.name, lease=self.lease)
        self.holdings.last = self.holdings.stamp = None  # a new lease: publish them again
        self._publish_holdings()

    def _publish_holdings(self):
        """What this worker's store holds, when it changed (locality.py)."""
        from .state import Refused
        h = self.holdings.changed()
        if h is None:
            return
        try:
            self.cluster.put(h, "holdings", self.name, lease=self.lease)
        except Refused:  # a cluster made before holdings/ was granted: price nothing
            self.holdings.root = None

    def run(self):
        ttl = float(self.config["lease_ttl"])
        self.register()
        self.log(f"worker {self.name} up: {self.capacity['cpu']:g} cpu, lease {ttl:g}s")
        hb = threading.Thread(target=self._heartbeat, daemon=True)
        hb.start()
        threading.Thread(target=self._fence_watch, daemon=True).start()
        # woken by a watch on its assignments; `interval` is only the fallback
        from .watch import PrefixWatch
        self.watch = PrefixWatch(self.cluster, self.cluster.key("assign", self.name) + "/",
                                 self.wake)
        try:
            while not self.stopping.is_set():
                self.wake.clear()
                try:
                    self._poll()
                except Exception as e:
                    self.log(f"worker {self.name}: {type(e).__name__}: {e}")
                    time.sleep(0.5)
                self.wake.wait(float(self.config["interval"]))
        finally:
            self.watch.stop()
        for t in self.threads:
            t.join(timeout=30)

    def stop(self):
        self.stopping.set()
        self.wake.set()

    def _heartbeat(self):
        ttl = float(self.config["lease_ttl"])
        while not self.stopping.is_set():
            try:
                sent = time.monotonic()
                if self.lease.refresh() <= 0:
                    self.log(f"worker {self.name}: lease expired, registering again")
                    self.register()
                    self._withdraw_fenced()
                else:
                    self.lease_ok = sent
                    self._resume_fenced()
                    probe = self.cluster.get("probe", self.name)
                    if probe is not None and probe != self.answered_probe:
                        self.answered_probe = probe
                        self.log(f"worker {self.name}: answering probe {probe}")
                    self.cluster.put(self.telemetry(), "telemetry", self.name,
                                     lease=self.lease)
                    self._publish_holdings()
            except Exception as e:
                self.log(f"worker {self.name}: heartbeat: {type(e).__name__}: {e}")
            self.stopping.wait(ttl / 4)

    def _fence_watch(self):
        """Stop this worker's task containers when the lease is at risk: the
        last renewal that etcd took was sent more than `fence_after` of the TTL
        ago (a blocked renewal does not block this thread)."""
        ttl = float(self.config["lease_ttl"])
        limit = ttl * float(self.config["fence_after"])
        while not self.stopping.wait(min(0.1, ttl / 20)):
            if time.monotonic() - self.lease_ok <= limit:
                continue
            with self.lock:
                doomed = [(tid, spec) for tid, spec in self.running.items()
                          if spec.get("kind", "image") != "sleep"
                          and (tid, spec.get("_attempt")) not in self.fenced]
            for tid, spec in doomed:
                attempt = spec["_attempt"]
                self.fenced.add((tid, attempt))
                self._remove(self._container_id(tid, attempt))
                self.log(f"fence: {tid} attempt {attempt} on {self.name} stopped: no lease "
                         f"renewal for {time.monotonic() - self.lease_ok:.1f}s of {ttl:g}s")

    def _resume_fenced(self):
        """The lease held after all: fenced attempts whose assignment is still
        here run again (the next poll picks them up)."""
        for key in [k for k in self.fenced if k not in self._live()]:
            self.fenced.discard(key)
            self.started.discard(key)
            self.wake.set()

    def _withdraw_fenced(self):
        """The lease expired: the leader re-dispatches what this worker held.
        Withdrawing the acknowledgement of each fenced attempt lets it do so
        now rather than at the task's timeout."""
        for tid, attempt in [k for k in self.fenced if k not in self._live()]:
            self.fenced.discard((tid, attempt))
            try:
                if self.cluster.get("ack", tid, str(attempt)) == self.name:
                    self.cluster.delete("ack", tid, str(attempt))
            except Exception as e:
                self.log(f"worker {self.name}: withdrawing {tid}: {type(e).__name__}: {e}")

    def _live(self):
        with self.lock:
            return {(tid, spec.get("_attempt")) for tid, spec in self.running.items()}

    def _poll(self):
        for tid, a in sorted(self.cluster.items("assign", self.name).items()):
            key = (tid, a["attempt"])
            if key in self.started:
                continue
            self.started.add(key)
            if self.cluster.get("results", tid) is not None:
                self.counts["skipped"] += 1
                self.cluster.delete("assign", self.name, tid)
                continue
            config, why = self._check(tid, a["spec"])
            if why:
                try:
                    self._refuse(tid, a["attempt"], why)
                except Exception:
                    self.started.discard(key)  # etcd away: refuse again next poll
                    raise
                continue
            if config is not None:
                self.checked[key] = config
            self.cluster.put(self.name, "ack", tid, str(a["attempt"]))
            with self.lock:
                self.running[tid] = dict(a["spec"], _attempt=a["attempt"])
            t = threading.Thread(target=self._run_one, args=(tid, a["attempt"], a["spec"]),
                                 daemon=True)
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
            t.start()

    def _check(self, tid, spec):
        """(checked bundle config or None, None) for a task this worker may
        run, or (None, the reason it may not)."""
        from ..cluster import policy, signing
        if not isinstance(spec, dict) or spec.get("id") != tid:
            return None, "the assignment's task id does not match the task"
        ca = self.cluster.ca_cert()
        if ca is not None:
            try:
                signing.verify(spec, ca)
            except signing.Refused as e:
                return None, str(e)
        return policy.check_task(spec, self.config.get("policy"))

    def _refuse(self, tid, attempt, why):
        """Record WHY as the task's result (first wins, as any result): the
        task is over, `emergence tasks` shows the reason; nothing ran."""
        result = {"host": self.name, "attempt": attempt, "exit": -1, "refused": why,
                  "output": f"refused by {self.name}: {why}\n", "finished": now(),
                  "seconds": 0.0}
        self.cluster.first_result(tid, result)
        self.cluster.delete("assign", self.name, tid)
        self.counts["refused"] += 1
        self.log(f"worker {self.name}: refused task {tid}: {why}")

    def _container_id(self, tid, attempt):
        return f"{self.config.get('container_prefix', 'pl-')}{tid}-{attempt}"[:64]

    def _argv(self, tid, attempt, spec, bundle=None):
        em = emergence_argv() + ["--root", self.config["root"]]
        if self.config.get("store"):
            em += ["--store", self.config["store"]]
        cid = self._container_id(tid, attempt)
        if spec.get("kind") == "bundle":
            return em + ["run", "--bundle", bundle or spec["bundle"], cid]
        return em + ["run", "--image", spec["image"], cid, "--"] + list(spec.get("cmd", []))

    def _remove(self, cid):
        em = emergence_argv() + ["--root", self.config["root"]]
        subprocess.run(em + ["kill", cid, "KILL"], capture_output=True)
        subprocess.run(em + ["delete", "--force", cid], capture_output=True)

    def _run_container(self, tid, attempt, spec):
        """`emergence run` the task; while it runs, watch for another host's
        result: then this run is a duplicate, and its container is removed
        at once rather than left to finish for nothing."""
        import tempfile
        cid = self._container_id(tid, attempt)
        timeout = float(spec.get("timeout") or 3600)
        config = self.checked.pop((tid, attempt), None)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryDirectory(
                prefix="pl-bundle-") as bundle:
            if config is not None:  # the config that was checked, not the file now
                import json
                with open(os.path.join(bundle, "config.json"), "w") as f:
                    json.dump(config, f)
            p = subprocess.Popen(self._argv(tid, attempt, spec, bundle if config else None),
                                 stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, text=True)
            t0 = last_check = time.monotonic()
            while True:
                # wait4 gives the rusage of the run and everything it waited
                # for: the container's processes are its children
                pid, code, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    p.returncode = os.waitstatus_to_exitcode(code)
                    wall = max(1e-3, time.monotonic() - t0)
                    cpu_s = ru.ru_utime + ru.ru_stime
                    self.usage[(tid, attempt)] = {"cpu": cpu_s / wall,
                                                  "memory": float(ru.ru_maxrss * 1024),
                                                  "seconds": wall}
                    self.cpu_seconds[(tid, attempt)] = cpu_s
                    break
                time.sleep(0.05)
                if time.monotonic() - last_check < 0.5:
                    continue
                last_check = time.monotonic()
                other = None
                try:
                    other = self.cluster.get("results", tid)
                except Exception:
                    pass  # etcd away: finish the run, report later
                if other is not None:
                    self._remove(cid)
                    p.wait()
                    self.log(f"duplicate: {tid} attempt {attempt} on {self.name}: "
                             f"{other.get('host')} already has the result; container "
                             f"{cid} removed")
                    raise _Superseded()
                if time.monotonic() - t0 > timeout:
                    self._remove(cid)
                    p.wait()
                    out.seek(0)
                    return -1, (out.read() + "killed at its timeout")[-4000:]
            out.seek(0)
            return p.returncode, out.read()[-4000:]

    def _run_stage(self, tid, attempt, spec):
        """A CI stage (pipeline/stagetask.py); stopped, as a duplicate, when
        another result for the task appears (the runner's cancel is one)."""
        from ..pipeline.stagetask import execute
        stop, done = threading.Event(), threading.Event()

        def watch():
            while not done.wait(0.5):
                try:
                    if self.cluster.get("results", tid) is not None:
                        stop.set()
                        return
                except Exception:
                    pass  # etcd away: finish the run, report later
        threading.Thread(target=watch, daemon=True).start()
        from ..pipeline.logstream import Shipper
        live = Shipper(self.cluster, self.name, tid, attempt, self.log)  # logs/NAME/ only
        try:
            got = execute(spec, self.config["store"] or _default_store(), self.config["root"],
                          self._container_id(tid, attempt), stop, live.feed)
        finally:
            live.close()  # the last lines are in etcd before the result is
            done.set()
        if stop.is_set():
            self.log(f"duplicate: {tid} attempt {attempt} on {self.name}: the task has a "
                     "result (or was cancelled); its container was removed")
            raise _Superseded()
        return got

    def _report(self, tid, result, patience=120.0):
        """Record the result; through a partition, keep trying (it may still be
        first).  None if etcd stayed away for PATIENCE seconds."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self.cluster.first_result(tid, result)
            except Exception as e:
                if time.monotonic() > deadline or self.stopping.is_set():
                    self.log(f"worker {self.name}: reporting {tid} gave up: "
                             f"{type(e).__name__}: {e}")
                    return None
                time.sleep(0.5)

    def _run_one(self, tid, attempt, spec):
        t0 = time.monotonic()
        kind = spec.get("kind", "image")
        try:
            extra = {}
            if kind == "sleep":
                time.sleep(float(spec.get("seconds", 0.0)))
                status, output = 0, ""
            elif kind == "stage":
                status, output, extra = self._run_stage(tid, attempt, spec)
            else:
                status, output = self._run_container(tid, attempt, spec)
        except _Superseded:
            self.counts["discarded"] += 1
            with self.lock:
                self.running.pop(tid, None)
            return
        except Exception as e:
            status, output = -1, f"{type(e).__name__}: {e}"
        if (tid, attempt) in self.fenced:  # stopped by the fence: nothing to report
            with self.lock:
                self.running.pop(tid, None)
            return
        took = time.monotonic() - t0
        self.runs.append(took)
        self.counts["ran"] += 1
        result = {"host": self.name, "attempt": attempt, "exit": status, "output": output,
                  "finished": now(), "seconds": took,
                  "usage": self.usage.pop((tid, attempt), None),
                  "cpu_seconds": self.cpu_seconds.pop((tid, attempt), None), **extra}
        try:
            first = self._report(tid, result)
            if first is None:
                return
            if first:
                self.counts["won"] += 1
            else:
                self.counts["discarded"] += 1
                self.log(f"duplicate: {tid} attempt {attempt} on {self.name} finished after "
                         "the first result; discarded")
                if kind != "sleep":
                    self._remove(self._container_id(tid, attempt))
            self.cluster.delete("assign", self.name, tid)
        except Exception as e:
            self.log(f"worker {self.name}: reporting {tid}: {type(e).__name__}: {e}")
        finally:
            with self.lock:
                self.running.pop(tid, None)
