"""The live logs of `pipeline run --cluster` (emergence/pipeline/logstream.py)
against a real TLS etcd with the cluster's RBAC: a worker writes the chunks
of the stages it runs under its own logs/NAME/, the runner shows only those
of the host the leader assigned.  Each attack beside the legitimate use:
another worker writing as the assigned one, writing under its own name for a
task it was not given, redirecting the runner, a chatty stage and a lying
worker's oversized chunks (bounded), a secret (masked)."""

import os
import sys
import tempfile
import uuid

import pytest
from etcd3gw.exceptions import Etcd3Exception

from emergence.pipeline import logstream
from emergence.place.state import Cluster, Refused

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from place.conftest import SecureEtcd  # noqa: E402


@pytest.fixture(scope="module")
def sec():
    s = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), f"/pl-{uuid.uuid4().hex[:8]}/")
    try:
        yield s
    finally:
        s.stop()


def _as(sec, material):
    return Cluster(sec.url, prefix=sec.prefix, material=material)


@pytest.fixture(scope="module")
def nodes(sec):
    """The runner (a command node, the leader's role) and two workers."""
    return {"runner": _as(sec, sec.material),
            "w1": _as(sec, sec.issue("lgw1", ["worker"])),
            "w2": _as(sec, sec.issue("lgw2", ["worker"]))}


def _assign(runner, tid, host, attempt=1):
    runner.put({"state": "assigned", "host": host, "attempt": attempt}, "status", tid)


def _follow(runner, tid, secrets=()):
    lines = []
    return logstream.Follower(runner, tid, lines.append, secrets), lines


def _ship(cluster, host, tid, data, attempt=1):
    s = logstream.Shipper(cluster, host, tid, attempt, log=lambda m: None)
    s.feed(data)
    s.close()
    return s


def test_the_assigned_worker_streams_and_no_other_can_write_for_it(nodes):
    runner, w1, w2 = nodes["runner"], nodes["w1"], nodes["w2"]
    tid = f"lg-{uuid.uuid4().hex[:8]}"
    _assign(runner, tid, "lgw1")
    f, lines = _follow(runner, tid)
    # the legitimate use: w1 runs the task, its lines show while it runs
    s = logstream.Shipper(w1, "lgw1", tid, 1, log=lambda m: None)
    s.feed(b"first line\nsecond ")
    assert _until(lambda: (f.poll(), lines)[1] == ["first line"]), lines
    # another worker cannot write as w1 (etcd's RBAC, not the runner, refuses it)
    with pytest.raises(Refused):
        w2.put("forged by w2\n", "logs", "lgw1", tid, "1", "0001")
    with pytest.raises(Etcd3Exception) as e:  # the raw client too
        w2.client.put(w2.key("logs", "lgw1", tid, "1", "9999"), '"forged\\n"')
    assert "permission denied" in e.value.detail_text
    w1.put("kept\n", "logs", "lgw1", tid, "9", "0000")
    with pytest.raises(Refused):  # nor delete what w1 wrote
        w2.delete("logs", "lgw1", tid, "9", "0000")
    assert w1.get("logs", "lgw1", tid, "9", "0000") == "kept\n"
    # under its own name for a task it was not given: written, never shown
    _ship(w2, "lgw2", tid, b"from w2, not assigned\n")
    # nor can it point the runner at itself: status/ is the leader's
    with pytest.raises(Refused):
        w2.put({"state": "assigned", "host": "lgw2", "attempt": 1}, "status", tid)
    s.feed(b"half\n")
    s.close()
    f.finish()
    assert lines == ["first line", "second half"], lines
    assert runner.items("logs", "lgw1", tid) == {}  # read chunks are deleted
    assert "lgw2" in str(runner.items("logs"))  # w2's own write stays its own (lease-bound)


def test_the_runner_follows_the_attempt_the_leader_moved(nodes):
    runner, w1, w2 = nodes["runner"], nodes["w1"], nodes["w2"]
    tid = f"lg-{uuid.uuid4().hex[:8]}"
    _assign(runner, tid, "lgw1")
    f, lines = _follow(runner, tid)
    _ship(w1, "lgw1", tid, b"on w1\n")
    f.poll()
    _assign(runner, tid, "lgw2", 2)  # w1 went silent: the leader sent it to w2
    _ship(w2, "lgw2", tid, b"on w2\n", attempt=2)
    _ship(w1, "lgw1", tid, b"late w1, attempt 1\n")  # the old attempt is not followed
    f.finish()
    assert lines == ["on w1", "--- moved to lgw2 (placement attempt 2) ---", "on w2"], lines


def test_a_chatty_stage_is_capped_in_etcd_and_on_the_runner(nodes):
    runner, w1 = nodes["runner"], nodes["w1"]
    tid = f"lg-{uuid.uuid4().hex[:8]}"
    _assign(runner, tid, "lgw1")
    s = logstream.Shipper(w1, "lgw1", tid, 1, log=lambda m: None)
    total = 0
    for i in range(20000):  # ~1.2 MB, faster than etcd takes it
        line = f"chatty line {i:06d} " + "x" * 40 + "\n"
        s.feed(line.encode())
        total += len(line)
    s.close()
    held = runner.items("logs", "lgw1", tid, "1")
    assert len(held) <= logstream.MAX_CHUNKS, len(held)
    assert sum(len(v) for v in held.values()) <= logstream.MAX_CHUNKS * logstream.CHUNK
    f, lines = _follow(runner, tid)
    f.finish()
    assert lines[0].startswith("chatty line 000000")
    dropped = [x for x in lines if "bytes dropped" in x]
    assert len(dropped) == 1 and lines[-1] == dropped[0], lines[-3:]
    shown = sum(len(x) + 1 for x in lines if x.startswith("chatty"))
    assert int(dropped[0].split()[1]) + shown >= total - 2 * 64  # said, not silently lost
    assert shown <= logstream.MAX_CHUNKS * logstream.CHUNK
    assert runner.items("logs", "lgw1", tid) == {}


def test_a_lying_workers_oversized_chunks_are_cut_and_masked(nodes):
    runner, w1 = nodes["runner"], nodes["w1"]
    tid = f"lg-{uuid.uuid4().hex[:8]}"
    _assign(runner, tid, "lgw1")
    secret = "s3cr3t-" + uuid.uuid4().hex
    for n in range(logstream.MAX_CHUNKS + 5):  # more keys than the cap, each 200 kB
        w1.put(("y" * 200000) + "\n", "logs", "lgw1", tid, "1", f"{n:04d}")
    pem = "-----BEGIN KEY-----\nc2VjcmV0LWtleQ==\n-----END KEY-----"
    w1.put(f"the token is {secret}\n{pem}\n", "logs", "lgw1", tid, "1", "0000")
    f, lines = _follow(runner, tid, [secret, pem])
    f.finish()
    assert lines[:4] == ["the token is ***", "***", "***", "***"], lines[:4]
    assert secret not in "".join(lines) and "c2VjcmV0LWtleQ" not in "".join(lines)
    shown = sum(len(x) for x in lines)
    assert shown <= logstream.MAX_CHUNKS * (logstream.CHUNK + 64), shown


def _until(pred, timeout=30.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_a_chunk_boundary_never_splits_a_character(nodes):
    runner, w1 = nodes["runner"], nodes["w1"]
    tid = f"lg-{uuid.uuid4().hex[:8]}"
    _assign(runner, tid, "lgw1")
    text = "a" + "\u00e9" * 5000 + "\nb" + "\u00e9" * 5000 + "\n"  # across chunks
    _ship(w1, "lgw1", tid, text.encode())
    f, lines = _follow(runner, tid)
    f.finish()
    assert "".join(lines) == text.replace("\n", "") and "\ufffd" not in "".join(lines)
