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


def test_state_of_earlier_versions_is_taken_over(tmp_path):
    """graph.json, applied.json and ipam/NET.json, as earlier versions wrote
    them whole, become the journals' first lines: nothing is forgotten."""
    import ipaddress
    import os

    from emergence.relay.engine import Relay
    state = tmp_path / "s"
    (state / "ipam").mkdir(parents=True)
    net = {"bridge": "rlred", "subnets": ["10.88.0.0/24"], "gateway": ["10.88.0.1"],
           "mtu": 1500, "nat": True, "isolated": True, "veth_prefix": "rl"}
    att = {"network": "red", "container": "c1", "netns": "/var/run/netns/rl-gone",
           "ifname": "eth0", "origin": "attach", "address": ["10.88.0.2"]}
    (state / "graph.json").write_text(json.dumps(
        {"networks": {"red": net}, "attachments": [att], "port_forwards": [], "routes": []}))
    (state / "applied.json").write_text(json.dumps(
        {"networks": {"red": net}, "attachments": {"att:red/c1/eth0": {"att": att,
                                                                     "host": "rlabc"}},
         "routes": {}, "nft": "0123456789abcdef"}))
    (state / "ipam" / "red.json").write_text(json.dumps(
        {"allocations": {"10.88.0.2": {"key": "att:red/c1/eth0", "netns": [1, 2]}},
         "last": {"10.88.0.0/24": "10.88.0.2"}}))
    r = Relay(str(state))
    g = r.desired()
    assert list(g.networks) == ["red"] and list(g.attachments) == ["att:red/c1/eth0"]
    assert str(g.attachments["att:red/c1/eth0"].addresses[0]) == "10.88.0.2"
    a = r.applied()
    assert a["nft"] == "0123456789abcdef" and a["attachments"]["att:red/c1/eth0"]["host"] == "rlabc"
    assert set(r.ipam.holders("red")) == {"10.88.0.2"}
    new = r.ipam.allocate("red", [ipaddress.ip_network("10.88.0.0/24")],
                          [ipaddress.ip_address("10.88.0.1")], "att:red/c2/eth0")
    assert [str(x) for x in new] == ["10.88.0.3"]
    for old in ("graph.json", "applied.json", "ipam/red.json"):
        assert not os.path.exists(state / old) and os.path.exists(state / (old + ".migrated"))
    again = Relay(str(state))                  # a second start reads the journals
    assert list(again.desired().attachments) == ["att:red/c1/eth0"]
    assert set(again.ipam.holders("red")) == {"10.88.0.2", "10.88.0.3"}


def test_a_loaded_graph_decodes_an_attachment_only_when_looked_at(tmp_path):
    """A CNI call loads the whole graph but touches one attachment or two: the
    rest stay the journal's dicts (decoding 1,000 cost ~10 ms a call)."""
    from emergence.relay.graph import Attachment, Graph, Network, StateNodes
    net = Network("red", "rlred", ["10.88.0.0/16"])
    atts = [Attachment("red", f"c{i}", f"/var/run/netns/c{i}", "eth0", [f"10.88.1.{i + 2}"])
            for i in range(50)]
    items = {"net:red": net.to_dict(), **{a.key: a.to_dict() for a in atts}}
    g = Graph.from_items(items)
    t = g.attachments
    assert isinstance(t, StateNodes) and len(t) == 50 and "att:red/c7/eth0" in t

    def raw():
        return sum(type(v) is dict for v in dict.values(t))
    assert raw() == 50 and list(g.networks) == ["red"]
    assert str(t["att:red/c7/eth0"].addresses[0]) == "10.88.1.9" and raw() == 49
    assert t.get("att:red/c8/eth0") == atts[8] and t.get("att:red/none/eth0") is None
    assert t.pop("att:red/c9/eth0") == atts[9] and raw() == 47
    del t["att:red/c10/eth0"]
    assert raw() == 46 and len(t) == 48
    assert sorted(t.items()) == sorted((a.key, a) for i, a in enumerate(atts)
                                       if i not in (9, 10)) and raw() == 0
    assert dict(t.items()) == {a.key: a for i, a in enumerate(atts) if i not in (9, 10)}
