"""`emergence pipeline run|graph|validate FILE`."""

import os
import sys

from ..command import FLAG, MULTI, VALUE, Option, UsageError, Verb

TITLE = "Pipeline (CI stages in containers, cached by content address)"

USAGE = ("pipeline run FILE [--jobs N] [--keep-going] [--no-cache] [--junit F] [--json F] "
         "[--out DIR] [--logs DIR] [--share [--peer URL]... [--trusted-key KEY]...] "
         "[--cluster [--etcd URL] [--prefix P] [--cluster-dir D] [--advertise URL]] | "
         "pipeline graph FILE [--dot] | pipeline validate FILE")


def _pipeline(ctx, opts, args):
    if len(args) != 2 or args[0] not in ("run", "graph", "validate"):
        raise UsageError(f"usage: emergence {USAGE}")
    sub, path = args
    from .spec import PipelineError, load
    try:
        pipeline = load(path)
    except PipelineError as e:
        if len(e.problems) > 1:  # every one, a line each; the summary is the error
            from ..errors import one_line
            sys.stderr.write("".join(f"emergence: {one_line(p)}\n" for p in e.problems))
            raise PipelineError(f"pipeline: {path}: {len(e.problems)} problems (above); "
                                "nothing ran") from None
        raise
    if sub == "validate":
        sys.stdout.write(f"{path}: {len(pipeline.stages)} stages, valid\n")
        return 0
    if sub == "graph":
        from . import graph
        sys.stdout.write(graph.dot(pipeline) if opts.get("dot") else graph.text(pipeline))
        return 0
    return _run(ctx, opts, pipeline)


def _run(ctx, opts, pipeline):
    import shutil
    import time

    from . import report
    from .schedule import finish, run_pipeline
    from .spec import secret_values
    try:
        jobs = int(opts.get("jobs", len(os.sched_getaffinity(0)) or 1))  # the cores we have
        if jobs < 1:
            raise ValueError
    except ValueError:
        raise UsageError("--jobs must be a positive integer") from None
    secrets = secret_values(pipeline)
    import signal

    def terminated(signum, frame):
        raise KeyboardInterrupt  # unwinds through the scheduler, which kills the stages
    for sig in (signal.SIGTERM, signal.SIGHUP):  # SIGKILL: the run's watcher (watch.py)
        signal.signal(sig, terminated)
    view = report.LineView()
    t0 = time.monotonic()
    try:
        results, run = run_pipeline(
            pipeline, ctx.store, ctx.root, jobs=jobs, keep_going=opts.get("keep-going", False),
            use_cache=not opts.get("no-cache", False), secrets=secrets,
            logs_dir=opts.get("logs"), id_prefix=opts.get("id-prefix", "pl-"), on_event=view,
            share=opts)
    finally:
        view.close()
    try:
        total = time.monotonic() - t0
        failed = [r.name for r in results.values() if r.state == "failed"]
        code = 1 if failed else 0
        if opts.get("out"):
            for r in results.values():
                if r.state == "passed" and os.path.isdir(r.outputs_dir):
                    shutil.copytree(r.outputs_dir, os.path.join(opts["out"], r.name),
                                    dirs_exist_ok=True, symlinks=True)
        if opts.get("json"):
            report.write_json(opts["json"], pipeline, results, code, total)
        if opts.get("junit"):
            report.write_junit(opts["junit"], pipeline, results, total)
        report.github(results, total)
        tail = f"; failed: {', '.join(failed)}" if failed else ""
        sys.stdout.write(f"pipeline: {report.summary_line(results)} in {total:.2f} s{tail}\n")
        return code
    finally:
        finish(run)


VERBS = [
    Verb("pipeline", "run, graph or validate a CI pipeline file (TOML/JSON)",
         USAGE.partition(" ")[2], {
        "jobs": Option(VALUE, "stages run at once (default: the CPUs this process may use)",
                       "N", aliases=("j",)),
        "keep-going": Option(FLAG, "after a failure, run every stage that does not need it",
                             aliases=("k",)),
        "no-cache": Option(FLAG, "run every stage, ignoring and not filling the cache"),
        "junit": Option(VALUE, "write a JUnit XML report", "FILE"),
        "json": Option(VALUE, "write a JSON report", "FILE"),
        "out": Option(VALUE, "copy each passed stage's outputs to DIR/STAGE", "DIR"),
        "logs": Option(VALUE, "per-stage logs (default STORE/pipeline/logs)", "DIR"),
        "id-prefix": Option(VALUE, "prefix of the container ids (default pl-)", "P"),
        "dot": Option(FLAG, "graph: print Graphviz DOT"),
        "share": Option(FLAG, "publish results for peers and fetch misses from them "
                              "([share] peers and trusted_keys)"),
        "peer": Option(MULTI, "a peer node's URL (added to [share] peers)", "URL"),
        "trusted-key": Option(MULTI, "a node key (NAME:BASE64) whose signed results to trust",
                              "KEY"),
        "config": Option(VALUE, "the node's config file (default /etc/emergence/node.toml)",
                         "FILE"),
        "cluster": Option(FLAG, "run the stages as signed placement tasks on the cluster's "
                                "workers (inputs and results move through share)"),
        "etcd": Option(VALUE, "--cluster: the cluster's etcd (default: the cluster dir's)",
                       "URL"),
        "prefix": Option(VALUE, "--cluster: the cluster's key prefix", "P"),
        "cluster-dir": Option(VALUE, "--cluster: this command node's cluster credentials",
                              "DIR"),
        "advertise": Option(VALUE, "--cluster: this node's share URL, for workers to fetch "
                                   "inputs from (default [share] advertise)", "URL"),
    }, _pipeline),
]
