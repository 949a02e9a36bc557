"""Membership learned by gossip, nodes in network namespaces: A knows only B,
B knows only C, and A learns C (and talks to it directly); C's death is
noticed; a member signed by an untrusted key, or outside member_networks,
is never learned."""

import time

import pytest
from netnslib import in_ns, mesh, node_key  # noqa: F401
from sharelib import nodes  # noqa: F401

from emergence.share.members import Members, url_allowed
from emergence.share.signing import SecretKey

pytestmark = pytest.mark.slow
FAST = {"gossip_interval": 0.3, "member_timeout": 2.0}


def wait_for(what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def members(node, ns=None):
    body = node.get("/share/v1/members", ns) or {}
    return {m["url"]: m for m in body.get("members", [])}


def test_a_learns_c_through_b_and_notices_its_death(mesh, tmp_path):  # noqa: F811
    (na, aa), (nb, ab), (nc, ac) = mesh(3)
    keys = [node_key(tmp_path / f"shm-state{i}", f"shm-{i}-1") for i in range(3)]
    url = {n: f"http://{a}:7480" for n, a in ((na, aa), (nb, ab), (nc, ac))}
    common = {**FAST, "trusted_keys": keys}
    c = mesh.start(nc, ac, 2, {**common, "advertise": url[nc]})
    mesh.start(nb, ab, 1, {**common, "advertise": url[nb], "peers": [url[nc]]})
    a = mesh.start(na, aa, 0, {**common, "advertise": url[na], "peers": [url[nb]]})

    def a_knows_c():
        m = members(a).get(url[nc])
        return m and m["state"] == "alive" and m["latency_ms"] is not None
    wait_for(a_knows_c)  # latency set: A exchanged with C itself, not only heard of it
    assert url[nc] in a.get("/share/v1/peers")["peers"]
    assert url[na] in members(c)  # and C learned A
    # `emergence peers` from inside A's netns lists C as learned, with its latency
    from conftest import emergence_command
    p = in_ns(na, *emergence_command(), "peers", "--peer", url[na], "--json", "--config",
              "/dev/null")
    assert p.returncode == 0, p.stderr
    import json
    rows = {r["peer"]: r for r in json.loads(p.stdout)}
    assert rows[url[nc]]["up"] and rows[url[nc]]["learned"] and \
        rows[url[nc]]["latency_ms"] > 0
    assert not rows[url[na]]["learned"]

    c.kill()
    t = time.monotonic()
    wait_for(lambda: members(a).get(url[nc], {}).get("state") == "dead")
    assert time.monotonic() - t < 10
    assert url[nc] not in a.get("/share/v1/peers")["peers"]
    wait_for(lambda: url[nc] not in members(a))  # forgotten after twice the timeout
    assert members(a)[url[nb]]["state"] == "alive"


def test_untrusted_member_is_not_learned(mesh, tmp_path):  # noqa: F811
    """C's key is not trusted by A: B passes C's record on, A refuses it, so
    A never lists C as a peer (nor gossips with it, nor pulls from it)."""
    (na, aa), (nb, ab), (nc, ac) = mesh(3)
    keys = [node_key(tmp_path / f"shm-state{i}", f"shm-{i}-1") for i in range(3)]
    url = [f"http://{x}:7480" for x in (aa, ab, ac)]
    c = mesh.start(nc, ac, 2, {**FAST, "trusted_keys": keys, "advertise": url[2]})
    mesh.start(nb, ab, 1, {**FAST, "trusted_keys": keys, "advertise": url[1],
                           "peers": [url[2]]})
    a = mesh.start(na, aa, 0, {**FAST, "trusted_keys": keys[:2], "advertise": url[0],
                               "peers": [url[1]]})
    wait_for(lambda: url[2] in (a.get("/share/v1/members") or {}).get("refused", {}))
    assert a.get("/share/v1/members")["refused"][url[2]] == "key not in [share] trusted_keys"
    assert url[2] not in members(a) and url[2] not in a.get("/share/v1/peers")["peers"]
    time.sleep(1)  # C gossips with A too (C trusts A); A still refuses C every time
    assert url[2] not in members(a) and members(c)[url[0]]["state"] == "alive"


def test_member_records_are_checked():
    """The record rules, on the pure merge (no network)."""
    a, c = SecretKey.generate("a-1"), SecretKey.generate("c-1")
    other = SecretKey.generate("c-1")  # same name, other key
    m = Members(a, "http://10.0.0.1:7480", [], [a.public(), c.public()],
                networks=["10.0.0.0/24"])
    rec = Members(c, "http://10.0.0.3:7480", [], []).own()
    assert m.merge([rec]) == 1 and m.live() == ["http://10.0.0.3:7480"]
    assert m.merge([rec]) == 0  # not newer
    moved = {**rec, "url": "http://10.0.0.9:7480", "heartbeat": rec["heartbeat"] + 1}
    assert m.merge([moved]) == 0 and m.refused[moved["url"]] == "bad signature"
    forged = Members(other, "http://10.0.0.4:7480", [], []).own()
    forged["key"] = c.public()
    assert m.merge([forged]) == 0 and m.refused[forged["url"]] == "bad signature"
    outside = Members(c, "http://192.0.2.1:7480", [], []).own()
    assert m.merge([outside]) == 0
    assert m.refused["http://192.0.2.1:7480"].startswith("address outside")
    assert m.merge([{"url": "x", "heartbeat": "1"}, "junk", None]) == 0
    assert not url_allowed("file:///etc/passwd", [])
    assert not url_allowed("http://host.example:7480", m.networks)  # a name: no
    assert url_allowed("http://host.example:7480", [])


def test_puller_with_trusted_keys_follows_only_signed_members(nodes, tmp_path):  # noqa: F811
    """A peer's list can name any address; a puller with trusted keys looks
    only at the members a trusted key signed for (loopback nodes)."""
    import json

    from sharelib import emergence, free_port
    far_port, near_port = free_port(), free_port()
    far_url, near_url = (f"http://127.0.0.1:{p}" for p in (far_port, near_port))
    keys = [node_key(tmp_path / f"sh-state{i}", f"shm-l{i}-1") for i in range(2)]
    nodes(None, {**FAST, "advertise": far_url, "trusted_keys": keys}, port=far_port)
    nodes(None, {**FAST, "advertise": near_url, "trusted_keys": keys,
                 "peers": [far_url, "http://192.0.2.1:9"]}, port=near_port)

    def listed(*extra):
        p = emergence(str(tmp_path / "sh-x"), "peers", "--peer", near_url, "--json",
                      "--config", "/dev/null", *extra)
        return {r["peer"] for r in json.loads(p.stdout)}
    assert "http://192.0.2.1:9" in listed()  # no keys: the peer's list as it is
    wait_for(lambda: far_url in listed("--trusted-key", keys[0]))
    assert listed("--trusted-key", keys[0]) == {near_url, far_url}
    assert listed("--trusted-key", keys[1]) == {near_url}  # far's key not trusted
