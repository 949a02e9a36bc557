"""The journal under Relay's state: edits append, other processes read only
what was appended, compaction and torn lines lose nothing committed."""

import json

from emergence.relay import journal
from emergence.relay.journal import Journal


def test_a_second_reader_sees_appends_then_a_compaction(tmp_path):
    base = str(tmp_path / "j")
    a, b = Journal(base), Journal(base)
    a.refresh()
    a.commit({"x": 1, "y": {"z": 2}})
    assert b.refresh() is None and b.data == {"x": 1, "y": {"z": 2}}   # first load
    a.commit({"x": None, "w": 3})
    assert b.refresh() == {"x", "w"} and b.data == {"y": {"z": 2}, "w": 3}
    assert b.refresh() == set()                                        # nothing new
    a.compact()
    a.commit({"v": 4})
    assert b.refresh() is None and b.data == a.data == {"y": {"z": 2}, "w": 3, "v": 4}


def test_a_torn_line_is_dropped_and_cut_off(tmp_path):
    base = str(tmp_path / "j")
    a = Journal(base)
    a.refresh()
    a.commit({"x": 1})
    with open(base + ".log", "ab") as f:
        f.write(b'{"s":2,"c":{"x":')             # a crash midway through a write
    b = Journal(base)
    b.refresh()
    assert b.data == {"x": 1}
    b.commit({"y": 2})
    lines = open(base + ".log", "rb").read().splitlines()
    assert [json.loads(x)["c"] for x in lines] == [{"x": 1}, {"y": 2}]
    c = Journal(base)
    c.refresh()
    assert c.data == {"x": 1, "y": 2}


def test_kill_between_snapshot_and_log_reset_replays_nothing_twice(tmp_path):
    base = str(tmp_path / "j")
    a = Journal(base)
    a.refresh()
    a.commit({"n": 1})
    a.commit({"n": None, "m": 2})
    log = open(base + ".log", "rb").read()
    a.compact()
    with open(base + ".log", "wb") as f:        # as if killed before the log was emptied
        f.write(log)
    b = Journal(base)
    b.refresh()
    assert b.data == {"m": 2} and b.seq == 2


def test_appends_are_the_size_of_the_change_and_compaction_is_amortised(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "COMPACT_MIN", 4096)
    a = Journal(str(tmp_path / "j"))
    a.refresh()
    a.commit({f"k{i}": {"v": "x" * 50} for i in range(1000)})    # a big state
    a.compact()
    before = a.appended
    for i in range(20):
        a.commit({f"new{i}": {"v": "y" * 50}})
    per = (a.appended - before) / 20
    assert per < 120          # one short line, whatever the 1,000 keys already there
