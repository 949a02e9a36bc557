"""The scheduler's launch step (schedule._launch), a pure function of the
stages' results: a stage starts only once each stage it needs has finished,
not merely once a need's thread has set its state to passed (its output
digests, part of the next stage's key, come after: keyed early, the same
inputs gave two keys, a cache miss or a false hit)."""

import types

from emergence.pipeline.schedule import Result, _launch


def _pipeline(**needs):
    return types.SimpleNamespace(stages={n: types.SimpleNamespace(needs=list(v))
                                         for n, v in needs.items()})


class _Pool:
    def __init__(self):
        self.started = []

    def submit(self, fn, name):
        self.started.append(name)
        return object()


def _launch_once(results, pipeline):
    pool, keyed = _Pool(), []
    _launch(pipeline, results, [n for n, r in results.items() if r.state == "pending"], {},
            pool, None, 4, False, lambda *a: None, keyed.append)
    return pool.started, keyed


def test_a_stage_waits_until_its_need_has_finished_not_just_passed():
    p = _pipeline(build=[], test=["build"])
    results = {"build": Result("build"), "test": Result("test")}
    results["build"].state = "passed"        # set by its thread; digests not yet
    assert _launch_once(results, p) == ([], [])
    results["build"].output_digests = {"bin": "sha256:x"}
    results["build"].finished = True          # its future returned
    assert _launch_once(results, p) == (["test"], ["test"])


def test_a_failed_need_skips_the_stage_only_once_finished():
    p = _pipeline(build=[], test=["build"])
    results = {"build": Result("build"), "test": Result("test")}
    results["build"].state = "failed"
    assert _launch_once(results, p) == ([], []) and results["test"].state == "pending"
    results["build"].finished = True
    _launch_once(results, p)
    assert results["test"].state == "skipped" and results["test"].finished
