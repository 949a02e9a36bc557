"""`pipeline run --cluster`: each stage attempt that is not a cache hit
becomes a placement task of kind `stage` (stagetask.py), submitted signed by
this command node as soon as the stage's needs have passed; the leader
places it, a worker verifies the signature, applies its policy, runs it and
records the digest of the result it published.  The runner pulls that
result by digest (share verifies it), restores the outputs and the log, and
goes on: the reports are a local run's, with the host in each attempt.
While the task runs, its output streams back (logstream.py): each line is
shown as it comes, masked, prefixed with the stage's name.

Cancelling (fail-fast, ^C) records a result for the task first: the worker
sees the task is over and removes its container, as for any duplicate."""

import time

from ..errors import EmergenceError
from .stagetask import publish_src, stage_spec, tag_image


class ClusterError(EmergenceError):
    """The cluster could not be used (etcd, credentials, a refused stage): exit 3."""

    exit_code = 3


def check(pipeline):
    """Problems that keep PIPELINE off the cluster, one line each."""
    out = []
    for st in pipeline.stages.values():
        if st.secrets:
            out.append(f"pipeline: stage {st.name!r}: secrets are not sent to cluster workers "
                       "(etcd holds tasks in clear); run it without --cluster")
        if st.network != "none":
            out.append(f"pipeline: stage {st.name!r}: network {st.relay or st.network!r} is "
                       "not available on cluster workers (their stages have loopback only)")
    return out


def connect(opts):
    """The cluster the runner submits to, as `emergence submit` finds it; one
    line if this node may not submit or nothing would place or run a task."""
    from ..place.commands import _cluster
    try:
        cluster = _cluster(opts)
        m = cluster.material
        roles = m.info.get("roles", []) if m is not None else ["command"]
        if "command" not in roles:
            raise ClusterError(f"pipeline --cluster: this node ({m.info.get('name')}, roles "
                               f"{', '.join(roles) or 'none'}) is not a command node: only "
                               "command nodes submit tasks; run it on one")
        if cluster.get("leader") is None:
            raise ClusterError("pipeline --cluster: the cluster has no leader: start a "
                               "command node (`emergence cluster join --role command`)")
        if not cluster.items("members"):
            raise ClusterError("pipeline --cluster: the cluster has no worker: join one "
                               "(`emergence cluster join --role worker`)")
    except ClusterError:
        raise
    except EmergenceError as e:
        raise ClusterError(f"pipeline --cluster: {e}") from None
    return cluster


class Dispatch:
    def __init__(self, cluster, shared, peers, run_id, id_prefix, poll=0.2):
        self.cluster, self.shared = cluster, shared
        self.store = shared.store
        self.peers = list(dict.fromkeys(p.rstrip("/") for p in peers))
        self.run_id, self.id_prefix, self.poll = run_id, id_prefix, poll
        self.changes = self.watch = None  # _changes()
        self.tagged = {}  # image digest -> this run's tag of it
        self.refs = []    # this run's tags in the store, dropped by close()

    def attempt(self, ctx, st, key, n, in_manifests, src_dir, collected):
        """One attempt of ST on the cluster: (exit code, log, why, message,
        seconds, host, manifest digest or None) as execute.attempt, plus where."""
        from ..place.tasks import submit
        image = ctx.images[st.name]
        if image not in self.tagged:
            self.tagged[image] = tag_image(self.store, image, self.run_id)
            self.refs.append(self.tagged[image])
        src, ref = publish_src(self.store, src_dir, self.run_id)
        self.refs.append(ref)
        tid = f"{self.id_prefix}{self.run_id}-{st.name}-{n}"
        if len(tid) > 63:  # a task id's limit: the stage's name shortened to a digest
            import hashlib
            tid = f"{self.id_prefix[:20]}{self.run_id}-" \
                  f"{hashlib.sha256(st.name.encode()).hexdigest()[:16]}-{n}"
        spec = {"kind": "stage", "id": tid,
                "demand": {"cpu": float(min(st.limits.get("cpus", 1.0), 1.0))},
                "timeout": float(st.timeout) + 300.0,
                "stage": stage_spec(st, key, image, src, in_manifests, self.peers)}
        t0 = time.monotonic()
        try:
            tid = submit(self.cluster, spec)
        except EmergenceError as e:
            raise ClusterError(f"stage {st.name!r}: submitting its task: {e}") from None
        from .logstream import Follower
        emit = getattr(ctx, "on_line", None) or (lambda name, line: None)
        live = Follower(self.cluster, tid, lambda line: emit(st.name, line),
                        ctx.secrets.values())
        try:
            result = self._wait(ctx, tid, spec, t0, live)
        finally:
            live.finish()  # the last lines, before the stage's end is told
        if result.get("host") == "runner" or result.get("withdrawn"):
            timed_out = result.get("withdrawn") == "timeout"
            msg = ("cancelled: another stage failed (fail-fast); task withdrawn"
                   if not timed_out else "no worker finished it in time")
            return 137, b"", "cancelled" if not timed_out else "timeout", msg, \
                time.monotonic() - t0, "", None
        elapsed = time.monotonic() - t0
        host = str(result.get("host", "?"))
        log = str(result.get("output", "")).encode()
        if result.get("refused"):
            return -1, log, "runtime", f"refused by {host}: {result['refused']}", elapsed, \
                host, None
        code = result.get("exit")
        if code == -1:  # the worker could not run it (a pull, the image, the runtime)
            last = (result.get("output") or "?").strip().splitlines()[-1:] or ["?"]
            return -1, log, "runtime", f"could not run on {host}: {last[0][:300]}", elapsed, \
                host, None
        if code != 0 or not isinstance(result.get("result"), str):
            code = code if isinstance(code, int) and code != 0 else 1
            msg = f"exited with {code} on {host}" + (
                f" (signal {code - 128})" if code > 128 else "")
            return code, log, None, msg, elapsed, host, None
        entry = self.shared.fetch_digest(key, result["result"])
        full = self.shared.cache.restore(entry, collected) if entry else None
        if full is None:
            return 1, log, "runtime", (f"the result {host} recorded ({result['result']}) "
                                       "could not be fetched or did not check out"), \
                elapsed, host, None
        return 0, full, None, "", elapsed, host, result["result"]

    def _wait(self, ctx, tid, spec, t0, live):
        """The task's result, following its live log meanwhile; woken by a
        watch on results/, status/ and logs/ (polling only as a fallback)."""
        deadline = t0 + spec["timeout"] + 600
        seen = self._changes().gen
        while True:
            if ctx.cancel.is_set() or time.monotonic() > deadline:
                timed_out = not ctx.cancel.is_set()
                self._cancel(tid)
                result = self.cluster.get("results", tid) or {}
                if result.get("host") == "runner" or not result:
                    return {"withdrawn": "timeout" if timed_out else "cancelled"}
                return result
            try:
                result = self.cluster.get("results", tid)
                if result is not None:
                    return result
                live.poll()
            except Exception:  # etcd away for a moment: the task goes on
                pass
            seen = self.changes.wait(seen, self.poll if self.watch is None else 1.0)

    def _changes(self):
        """One watch for the run, started with its first task."""
        if self.changes is None:
            from ..place.watch import PrefixWatch
            self.changes = _Changes()
            try:
                self.watch = PrefixWatch(self.cluster, self.cluster.prefix, self.changes,
                                         sections=("results/", "status/", "logs/"))
            except Exception:
                self.watch = None  # polled instead
        return self.changes

    def close(self):
        """The run is over: its image and input tags go (their blobs to gc)."""
        if self.watch is not None:
            self.watch.stop()
        try:
            self.store.remove_refs(self.refs)
        except (EmergenceError, OSError):
            pass

    def _cancel(self, tid):
        try:
            self.cluster.first_result(tid, {"host": "runner", "exit": -1, "cancelled": True,
                                            "output": "cancelled by the pipeline runner\n",
                                            "finished": time.time(), "seconds": 0.0})
        except Exception:
            pass  # the worker's timeout ends it


class _Changes:
    """What a PrefixWatch sets: a counter several waiting stages can follow."""

    def __init__(self):
        import threading
        self.cond = threading.Condition()
        self.gen = 0

    def set(self):
        with self.cond:
            self.gen += 1
            self.cond.notify_all()

    def wait(self, seen, timeout):
        with self.cond:
            self.cond.wait_for(lambda: self.gen != seen, timeout)
            return self.gen


def from_options(opts, pipeline, shared_cfg, run_id, id_prefix, shared):
    """A Dispatch for this run, or None when it runs locally."""
    if not (opts.get("cluster") or getattr(pipeline, "cluster", False)):
        return None
    problems = check(pipeline)
    if problems:
        from .spec import PipelineError
        raise PipelineError(problems[0] if len(problems) == 1 else
                            f"pipeline: {len(problems)} problems for --cluster; the first: "
                            f"{problems[0]}", problems)
    peers = list(shared_cfg.get("peers", ()))
    me = opts.get("advertise") or shared_cfg.get("advertise")
    if me:
        peers.insert(0, me)
    if not peers:
        raise ClusterError("pipeline --cluster: workers fetch inputs through share: give this "
                           "node's URL (--advertise URL or [share] advertise) and the "
                           "workers' (--peer URL or [share] peers)")
    return Dispatch(connect(opts), shared, peers, run_id, id_prefix)
