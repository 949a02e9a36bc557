"""Run a pipeline: images first, then every stage's base key (what it runs,
in what, on what), then the DAG in parallel up to JOBS.  When a stage's needs
have passed, its key takes the digests of their actual outputs (a hit
restores them, so a run with no change is only lookups); a hit restores
instead of running.  Fail-fast stops launching stages after the first
failure; --keep-going runs everything that does not depend on a failure.

Each run has its own id (in its container ids) and run dir
(STORE/pipeline/runs/ID: bundles, staged inputs, secrets files), removed by
the run, or by its watcher when the runner dies (watch.py)."""

import os
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..errors import EmergenceError
from . import cache as cache_mod
from .execute import attempt, mask
from .inputs import StatCache, files_of, tree_digest


class InfraError(EmergenceError):
    """The machinery failed, not a stage: exit 3."""

    exit_code = 3


class Result:
    def __init__(self, name):
        self.name = name
        self.state = "pending"   # passed | failed | skipped
        # set by the scheduling thread once the stage's thread has returned: its
        # state is set before its output digests are, and a stage that needs
        # it must not be keyed from digests not yet there (a key that differed
        # between two runs of the same inputs: a cache miss, or a false hit)
        self.finished = False
        self.key = ""
        self.duration = 0.0
        self.exit_code = None
        self.attempts = []       # [{"exit_code", "duration", "timed_out"}]
        self.cache_hit = False
        self.output_digests = {}
        self.manifest = None     # --cluster: the result artifact's digest, for the next stage
        self.message = ""
        self.log = b""
        self.log_path = ""
        self.outputs_dir = ""

    def as_json(self):
        return {"name": self.name, "state": self.state, "key": self.key,
                "duration": round(self.duration, 4), "exit_code": self.exit_code,
                "attempts": len(self.attempts), "attempt_log": self.attempts,
                "retried": max(0, len(self.attempts) - 1), "cache_hit": self.cache_hit,
                "output_digests": self.output_digests, "message": self.message,
                "log": self.log_path}


class Context:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def resolve_images(pipeline, store_root):
    """stage -> image manifest digest; .nix images are built (once each)."""
    from ..image.store import Store
    built, out = {}, {}
    for st in pipeline.stages.values():
        if st.image.endswith(".nix"):
            if st.image not in built:
                from ..image.build import build
                try:
                    built[st.image] = build(store_root, st.image, progress=False)["digest"]
                except EmergenceError as e:
                    raise InfraError(f"stage {st.name!r}: building {st.image}: {e}") from None
            out[st.name] = built[st.image]
        else:
            try:
                out[st.name] = Store(store_root, create=False).resolve(st.image)["digest"]
            except EmergenceError as e:
                raise InfraError(f"stage {st.name!r}, field 'image': {e}") from None
    return out


def compute_keys(pipeline, images, stat_cache):
    keys, files = {}, {}
    for name in pipeline.order():
        st = pipeline.stages[name]
        files[name] = files_of(pipeline.base, st.inputs)
        tree, _ = tree_digest(pipeline.base, files[name], stat_cache)
        keys[name] = cache_mod.stage_key(images[name], st.command, st.env, tree,
                                         {n: keys[n] for n in st.needs}, st.network,
                                         st.secrets, st.outputs, st.limits)
    return keys, files


def run_pipeline(pipeline, store_root, root, jobs=1, keep_going=False, use_cache=True,
                 secrets=None, logs_dir=None, id_prefix="pl-", on_event=None, share=None):
    """Returns ({name: Result} in the pipeline's order, the run's context:
    `finish(ctx)` removes its run dir).  Fail-fast kills the stages still
    running when one fails; they are reported skipped.  SHARE: the run's
    options (`--share`, `--peer`, ...), for the cache shared with peers."""
    secrets = secrets or {}
    on_event = on_event or (lambda kind, result: None)
    try:
        cache = cache_mod.Cache(store_root)
        share = share or {}
        on_cluster = bool(share.get("cluster") or getattr(pipeline, "cluster", False))
        from .shared import from_options
        shared, share_cfg = from_options(cache, share, store_root, on_cluster) \
            if use_cache or on_cluster else (None, {})
        images = resolve_images(pipeline, store_root)
        stat_cache = StatCache(os.path.join(store_root, "pipeline", "statcache.json"))
        keys, files = compute_keys(pipeline, images, stat_cache)
        stat_cache.save()
    except OSError as e:
        raise InfraError(f"pipeline: {e}") from None
    logs_dir = logs_dir or os.path.join(store_root, "pipeline", "logs")
    os.makedirs(logs_dir, exist_ok=True)
    from .execute import emergence_argv
    from .watch import Watcher, make_run_dir
    run_id = os.urandom(4).hex()
    run_dir, lock_fd = make_run_dir(store_root, run_id)
    ctx = Context(store=store_root, root=root, run_dir=run_dir, images=images,
                  secrets=secrets, id_prefix=id_prefix, run_id=run_id,
                  cancel=threading.Event(), watcher=Watcher(emergence_argv(), root, run_dir),
                  lock_fd=lock_fd, dispatch=None)
    if on_cluster:
        from . import dispatch
        try:
            ctx.dispatch = dispatch.from_options(share, pipeline, share_cfg, run_id, id_prefix,
                                                 shared)
        except BaseException:
            finish(ctx)
            raise
    results = {n: Result(n) for n in pipeline.order()}
    ctx.on_line = lambda name, line: on_event("line", (results[name], line))  # --cluster, live
    for n, r in results.items():
        r.key = keys[n]
        r.log_path = os.path.join(logs_dir, f"{n}.log")
        r.outputs_dir = os.path.join(run_dir, "outputs", n)

    def keyed(name):
        """The key once its needs passed: theirs and their outputs' digests."""
        r = results[name]
        r.key = cache_mod.final_key(keys[name], {n: results[n].output_digests
                                                 for n in pipeline.stages[name].needs})

    def one(name):
        st = pipeline.stages[name]
        r = results[name]
        t0 = time.monotonic()
        entry = cache.get(r.key) if use_cache and st.cache else None
        if entry is None and shared and use_cache and st.cache:
            entry = shared.fetch(r.key) and cache.get(r.key)  # signed, verified, or a miss
        if entry is not None:
            os.makedirs(r.outputs_dir, exist_ok=True)
            r.log = cache.restore(entry, r.outputs_dir)
            if r.log is None:  # tampered or torn: a miss, run it
                entry = None
        if entry is not None:
            r.cache_hit, r.state, r.exit_code = True, "passed", 0
            r.output_digests = entry.get("output_digests", {})
            if ctx.dispatch:  # the next stages' workers pull it from here, by digest
                r.manifest = shared.publish(entry)
            r.message = f"cache hit (ran in {entry.get('duration', 0):.2f} s before" + (
                f" on {', '.join(entry['from_peer'])})" if entry.get("from_peer") else ")")
        else:
            src = os.path.join(run_dir, "src", name)
            from .execute import stage_inputs
            stage_inputs(pipeline.base, files[name], src)
            in_dirs = {n: results[n].outputs_dir for n in st.stage_inputs}
            logs = []
            while True:
                n = len(r.attempts) + 1
                where = {}
                if ctx.dispatch:
                    code, log, why, msg, elapsed, host, r.manifest = ctx.dispatch.attempt(
                        ctx, st, r.key, n, {k: results[k].manifest for k in st.stage_inputs},
                        src, r.outputs_dir)
                    where = {"host": host}
                else:
                    code, log, why, msg, elapsed = attempt(ctx, st, r.key, n, in_dirs, src,
                                                           r.outputs_dir)
                r.attempts.append({"exit_code": code, "duration": round(elapsed, 4),
                                   "timed_out": why == "timeout", "message": msg, **where})
                logs.append(log if len(r.attempts) == 1 else
                            f"--- attempt {n} ---\n".encode() + log)
                r.exit_code, r.message = code, msg
                if code == 0 or ctx.cancel.is_set():
                    break
                retryable = st.retry_codes is None or code in st.retry_codes
                if len(r.attempts) > st.retries or not retryable or why:
                    break
                on_event("retry", r)
            r.log = b"".join(logs)
            r.state = "passed" if r.exit_code == 0 else "failed"
            if r.state == "failed" and r.message.startswith("cancelled"):
                r.state = "skipped"  # it did not fail: fail-fast stopped it
            if r.state == "passed":
                os.makedirs(r.outputs_dir, exist_ok=True)
                r.output_digests = cache_mod.output_digests(r.outputs_dir, st.outputs)
                if len(r.attempts) > 1:
                    r.message = f"passed on attempt {len(r.attempts)}"
                if shared and r.key in shared.why:
                    # the peers had it, but it could not be taken: say why it ran here
                    r.message = (r.message + "; " if r.message else "") + \
                        f"built here: the peers' result was refused ({shared.why[r.key]})"
                if ctx.dispatch:
                    pass  # the worker cached and published it; fetch_digest indexed it here
                elif use_cache and st.cache and not _holds_secret(r.outputs_dir, secrets):
                    entry = cache.put(r.key, r.outputs_dir, r.log,
                                      {"duration": time.monotonic() - t0, "exit_code": 0,
                                       "output_digests": r.output_digests, "stage": name})
                    if shared:
                        shared.publish(entry)
        r.log = mask(r.log, secrets.values())
        with open(r.log_path, "wb") as f:
            f.write(r.log)
        r.duration = time.monotonic() - t0
        return r

    try:
        pending = list(results)
        running = {}
        stop = False
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            try:
                while pending or running:
                    stop = _launch(pipeline, results, pending, running, pool, one, jobs, stop,
                                   on_event, keyed)
                    if not running:
                        continue
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        name = running.pop(fut)
                        try:
                            r = fut.result()
                            r.finished = True
                        except InfraError:
                            raise
                        except (EmergenceError, OSError) as e:  # the machinery, not the stage
                            raise InfraError(f"stage {name!r}: {e}") from None
                        if r.state == "failed" and not keep_going:
                            stop = True
                            ctx.cancel.set()  # kill what still runs
                        on_event("done", r)
            except BaseException:
                ctx.cancel.set()  # Ctrl-C, SIGTERM or a broken store: no container outlives us
                raise
    except BaseException:
        finish(ctx)
        raise
    shutil.rmtree(os.path.join(run_dir, "src"), ignore_errors=True)
    return results, ctx


def finish(ctx):
    """The run dir goes (secrets first), then the watcher is told all is clean."""
    if getattr(ctx, "dispatch", None):
        ctx.dispatch.close()
    shutil.rmtree(os.path.join(ctx.run_dir, "secrets"), ignore_errors=True)
    shutil.rmtree(ctx.run_dir, ignore_errors=True)
    ctx.watcher.close()
    try:
        os.unlink(ctx.run_dir + ".lock")
    except OSError:
        pass
    os.close(ctx.lock_fd)


def _launch(pipeline, results, pending, running, pool, one, jobs, stop, on_event, keyed):
    """Start what can start; skip what never will.  Returns STOP."""
    for name in list(pending):
        needs = pipeline.stages[name].needs
        bad = [n for n in needs
               if results[n].finished and results[n].state in ("failed", "skipped")]
        if bad or stop:
            r = results[name]
            r.state, r.finished = "skipped", True
            r.message = (f"not run: needs {bad[0]!r}, which did not pass" if bad
                         else "not run: an earlier stage failed (fail-fast)")
            pending.remove(name)
            on_event("done", r)
            continue
        if all(results[n].finished and results[n].state == "passed" for n in needs) \
                and len(running) < max(1, jobs):
            pending.remove(name)
            keyed(name)
            results[name].state = "running"
            on_event("start", results[name])
            running[pool.submit(one, name)] = name
    return stop


def _holds_secret(directory, secrets):
    """Does any output file hold a secret's value?  Read in chunks that
    overlap by the longest value, so memory does not grow with the outputs."""
    vals = [v.encode() for v in secrets.values() if v]
    if not vals:
        return False
    keep = max(map(len, vals)) - 1
    for d, _, files in os.walk(directory):
        for f in files:
            try:
                fh = open(os.path.join(d, f), "rb")
            except OSError:
                continue
            with fh:
                tail = b""
                for chunk in iter(lambda f=fh: f.read(1 << 20), b""):
                    data = tail + chunk
                    if any(v in data for v in vals):
                        return True
                    tail = data[-keep:] if keep else b""
    return False
