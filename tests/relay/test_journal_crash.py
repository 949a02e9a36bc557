"""kill -9 during a journal's compaction loses nothing: a writer is killed at
each step of it (the EMERGENCE_CRASHPOINT seam) and at random moments while
it commits and compacts; every commit it reported is read back, the next
writer goes on from there, and no temp file stays behind."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from emergence.relay.journal import Journal

WRITER = r"""
import sys
from emergence.relay import journal
journal.COMPACT_MIN = 2048          # compact every few commits
j = journal.Journal(sys.argv[1])
j.refresh()
start = int(sys.argv[2])
for k in range(start, start + int(sys.argv[3])):
    j.commit({f"k{k}": {"v": "x" * 40, "k": k}, f"k{k - 7}": None}, sync=False)
    print(k, flush=True)            # reported only once committed
"""


def write(base, start, count, crashpoint=None):
    env = dict(os.environ)
    env.pop("EMERGENCE_CRASHPOINT", None)
    if crashpoint:
        env["EMERGENCE_CRASHPOINT"] = crashpoint
    return subprocess.Popen([sys.executable, "-c", WRITER, base, str(start), str(count)],
                            stdout=subprocess.PIPE, text=True, env=env)


def expected(upto):
    """The data after commits 0..UPTO: each adds k, deletes k-7."""
    return {f"k{k}": {"v": "x" * 40, "k": k} for k in range(max(0, upto - 6), upto + 1)}


def check(base, upto):
    j = Journal(base)
    j.refresh()
    assert j.data == expected(upto)
    return j


def leftovers(tmp_path):
    return [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("step", ["writing", "written", "renamed", "truncated"])
def test_a_kill_at_each_step_of_a_compaction_loses_nothing(tmp_path, step):
    base = str(tmp_path / "j")
    p = write(base, 0, 10_000, f"journal:compact:{step}")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL        # killed by the seam, in its first compaction
    done = [int(x) for x in out.split()]
    assert 0 < len(done) < 10_000
    # the commit whose compaction was killed is kept too: its line came first
    last = done[-1] + 1
    check(base, last)
    # the next writer goes on from there and compacts in turn
    p = write(base, last + 1, 200)
    assert p.wait(timeout=60) == 0
    check(base, last + 200)
    assert leftovers(tmp_path) == []              # a killed compaction's temp file is gone


def test_kills_at_random_moments_lose_no_reported_commit(tmp_path):
    base = str(tmp_path / "j")
    rnd = random.Random(26)
    nxt = 0
    for _ in range(12):
        p = write(base, nxt, 1_000_000)
        time.sleep(rnd.uniform(0.15, 0.4))
        p.kill()
        out, _ = p.communicate(timeout=60)
        done = [int(x) for x in out.split()]
        if done:
            nxt = done[-1] + 1
        j = Journal(base)
        j.refresh()
        # every reported commit is there; one more may be, committed but not yet reported
        assert j.data in (expected(nxt - 1), expected(nxt))
        if j.data == expected(nxt):
            nxt += 1
    assert nxt > 100
