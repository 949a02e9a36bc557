"""`emergence pull` from several nodes at once: a corrupt peer is banned, a
dying one replaced, the digest is right; a kill -9 midway leaves nothing
partial in the store and the next pull resumes; the upstream serves what
no peer has."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from sharelib import NEEDS, Faulty, emergence, nodes, random_image  # noqa: F401

pytestmark = [NEEDS, pytest.mark.slow]
SIZE = 24 << 20
PIECE = 1 << 20


def store_is_clean(store):
    """Every blob is named by its hash; no temp files."""
    d = os.path.join(store, "blobs", "sha256")
    for name in os.listdir(d):
        assert not name.startswith("."), name
        with open(os.path.join(d, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == name


def refs(store):
    with open(os.path.join(store, "index.json")) as f:
        return [m["annotations"]["org.opencontainers.image.ref.name"]
                for m in json.load(f)["manifests"]]


@pytest.fixture
def seed(tmp_path):
    store = str(tmp_path / "sh-seed")
    digest, layer = random_image(store, "big:1", SIZE)
    return store, digest, layer


def pull_args(peers, keys, state):
    args = ["pull", "big:1", "--json", "--state", str(state), "--config", "/dev/null"]
    for p in peers:
        args += ["--peer", p]
    for k in keys:
        args += ["--trusted-key", k]
    return args


def test_four_peers_one_corrupt_one_dying(seed, nodes, tmp_path):  # noqa: F811
    store, digest, layer = seed
    ns = [nodes(store, {"piece_size": PIECE}) for _ in range(4)]
    bad = Faulty(ns[1], "corrupt")
    dying = Faulty(ns[2], f"die={3 * PIECE}")
    try:
        peers = [ns[0].url, bad.url, dying.url, ns[3].url]
        dest = str(tmp_path / "sh-dest")
        out = json.loads(emergence(dest, *pull_args(peers, [n.public_key for n in ns],
                                                    tmp_path / "sh-pstate")).stdout)
        assert out["digest"] == digest
        assert set(out["banned"]) == {bad.url, dying.url}
        assert "bad piece" in out["banned"][bad.url]
        assert dying.proc.wait(5) == 9  # it did die midway
        assert out["from"][ns[0].url] > 0 and out["from"][ns[3].url] > 0
        assert out["from"].get(dying.url, 0) > 0  # it served pieces before it died
        assert bad.url not in out["from"]
        store_is_clean(dest)
        assert refs(dest) == ["big:1"]
        with open(os.path.join(dest, "blobs", "sha256", layer[7:]), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == layer
        assert os.listdir(tmp_path / "sh-pstate" / "partial") == []
    finally:
        bad.stop()
        dying.stop()


def test_kill_midway_leaves_nothing_partial_and_resumes(seed, nodes, tmp_path):  # noqa: F811
    store, digest, layer = seed
    n = nodes(store, {"piece_size": PIECE})
    slow = Faulty(n, f"slow={4 << 20}")
    dest, state = str(tmp_path / "sh-dest"), tmp_path / "sh-pstate"
    from conftest import emergence_command
    try:
        p = subprocess.Popen(emergence_command() + ["--store", dest] + pull_args(
            [slow.url], [n.public_key], state), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        part = state / "partial" / layer[7:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if part.exists() and part.read_bytes().count(0) < SIZE // 2:
                break
            time.sleep(0.1)
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        slow.stop()
    assert part.exists()  # the partial download waits in the state dir...
    store_is_clean(dest)  # ...and the store holds only verified, whole blobs
    assert layer[7:] not in os.listdir(os.path.join(dest, "blobs", "sha256"))
    assert refs(dest) == []
    out = json.loads(emergence(dest, *pull_args([n.url], [n.public_key], state)).stdout)
    assert out["digest"] == digest
    assert out["resumed"] >= SIZE // 2 and out["bytes"] <= SIZE - out["resumed"] + PIECE
    store_is_clean(dest)
    assert refs(dest) == ["big:1"]


def test_upstream_when_no_peer_has_it(seed, nodes, tmp_path):  # noqa: F811
    store, digest, _ = seed
    upstream = nodes(store)
    empty = nodes()
    dest = str(tmp_path / "sh-dest")
    out = json.loads(emergence(dest, *pull_args([empty.url], [], tmp_path / "sh-s"),
                               "--upstream", upstream.url).stdout)
    assert out["digest"] == digest and out["from"]["upstream"] >= SIZE
    store_is_clean(dest)
    p = emergence(str(tmp_path / "sh-d2"), *pull_args([empty.url], [], tmp_path / "sh-s"),
                  check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "no peer" in p.stderr


def test_peers_verb_and_membership(seed, nodes, tmp_path):  # noqa: F811
    store, _, _ = seed
    far = nodes(store)
    near = nodes(None, {"peers": [far.url]})
    p = emergence(str(tmp_path / "sh-x"), "peers", "--peer", near.url, "--json",
                  "--config", "/dev/null")
    rows = {r["peer"]: r for r in json.loads(p.stdout)}
    assert set(rows) == {near.url, far.url}  # far learned from near's list
    assert rows[far.url]["repositories"] == ["big"] and rows[far.url]["up"]


def test_stalled_peer_is_replaced(seed, nodes, tmp_path):  # noqa: F811
    """A peer that goes silent (alive, connection open) does not hold the pull:
    its pieces are hedged to the other peer long before the stall timeout."""
    store, digest, _ = seed
    ns = [nodes(store, {"piece_size": PIECE}) for _ in range(2)]
    stalled = Faulty(ns[1], f"stall={2 * PIECE}")
    try:
        t = time.monotonic()
        out = json.loads(emergence(str(tmp_path / "sh-dest"), *pull_args(
            [stalled.url, ns[0].url], [n.public_key for n in ns], tmp_path / "sh-s"),
            "--stall", "120").stdout)
        assert out["digest"] == digest
        assert out["from"].get(stalled.url, 0) <= 2 * PIECE
        assert out["from"][ns[0].url] >= SIZE - 2 * PIECE
        assert stalled.proc.poll() is None  # alive, merely silent
        assert time.monotonic() - t < 60  # not waiting out the 120 s stall timeout
    finally:
        stalled.stop()


def test_push_verb_needs_the_token(seed, nodes, tmp_path):  # noqa: F811
    store, digest, _ = seed
    n = nodes()
    p = emergence(store, "push", "big:1", f"{n.url}/copied:2", check=False)
    assert p.returncode == 1 and "token" in p.stderr and p.stderr.count("\n") == 1
    tok = tmp_path / "sh-token"
    tok.write_text(n.token)
    out = json.loads(emergence(store, "push", "big:1", f"{n.url}/copied:2", "--token-file",
                               str(tok), "--json").stdout)
    assert out["digest"] == digest
    assert refs(n.store) == ["copied:2"]
    store_is_clean(n.store)


def test_pieces_of_a_pull_in_progress_are_served(seed, nodes, tmp_path):  # noqa: F811
    """A node whose own pull of the blob is half done serves the pieces it has
    verified; another puller takes them from it as well as from the seed."""
    store, digest, layer = seed
    s = nodes(store, {"piece_size": PIECE})
    half = nodes(None)  # its state dir will hold a half-done pull
    slow = Faulty(s, f"slow={4 << 20}")
    from conftest import emergence_command
    try:
        p = subprocess.Popen(emergence_command() + ["--store", half.store] + pull_args(
            [slow.url], [s.public_key], half.state), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        part = os.path.join(half.state, "partial", layer[7:])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(part + ".have") and len(  # verified pieces (not claims)
                    [x for x in open(part + ".have").read().split() if x.isdigit()]) >= 8:
                break
            time.sleep(0.1)
        p.kill()
        p.wait()
        out = json.loads(emergence(str(tmp_path / "sh-d"), *pull_args(
            [slow.url, half.url], [s.public_key], tmp_path / "sh-s")).stdout)
    finally:
        slow.stop()
    assert out["digest"] == digest
    assert out["from"][half.url] >= 4 * PIECE
    assert half.url not in out["banned"]


def test_pull_image_for_other_parts(seed, nodes, tmp_path):  # noqa: F811
    from emergence.image.store import Store
    from emergence.share import pull_image
    store, digest, _ = seed
    n = nodes(store, {"piece_size": PIECE})
    dest = Store(str(tmp_path / "sh-dest"))
    out = pull_image(dest, "big:1", [n.url], trusted_keys=[n.public_key],
                     state_dir=str(tmp_path / "sh-s"))
    assert out["digest"] == digest == dest.resolve("big:1")["digest"]
    store_is_clean(dest.root)


def test_announce_on_put_ask_on_miss(seed, nodes, tmp_path):  # noqa: F811
    """A node tells its peers what was pushed to it; a puller that asks only
    one of those peers learns from it where the image is."""
    import subprocess
    import sys

    from sharelib import free_port
    store, digest, _ = seed
    port, b_port = free_port(), free_port()
    a_state = tmp_path / "sh-a-state"
    a_state.mkdir()
    key = subprocess.run([sys.executable, "-c", "import sys; from emergence.share.signing "
                          "import load_or_make_key as k; print(k(sys.argv[1], 'a-1').public())",
                          str(a_state)], capture_output=True, text=True, check=True).stdout
    # b takes announcements signed by a's node key (its made-ahead cache-key.sec),
    # and no members from loopback: what it learns of a comes from the announcement
    b = nodes(None, {"trusted_keys": [key.strip()], "member_networks": ["192.0.2.0/24"]},
              port=b_port)
    a = nodes(None, {"peers": [b.url], "advertise": f"http://127.0.0.1:{port}",
                     "piece_size": PIECE}, port=port, state=a_state)
    tok = tmp_path / "sh-token"
    tok.write_text(a.token)
    emergence(store, "push", "big:1", f"{a.url}/big:1", "--token-file", str(tok))
    for _ in range(50):
        import requests
        if requests.get(f"{b.url}/share/v1/who-has", params={"key": "big:1"}).json()["nodes"]:
            break
        time.sleep(0.1)
    assert requests.get(f"{b.url}/share/v1/peers").json()["peers"] == []  # not by membership
    out = json.loads(emergence(str(tmp_path / "sh-d"), *pull_args([b.url], [a.public_key],
                                                               tmp_path / "sh-s")).stdout)
    assert out["digest"] == digest and out["from"][a.url] >= SIZE


def test_the_node_config_is_checked_as_the_node_checks_it(tmp_path):
    """pull/peers read [share] of node.toml without a node: a typo or a wrong
    type is one line naming it, not a silent default."""
    from conftest import emergence_command
    for text, said in (("[share]\npeerz = []\n", "[share] has no key 'peerz'"),
                       ("[share]\npeers = 'http://x'\n", "[share] peers: expected a list"),
                       ("[share\n", "not valid TOML")):
        cfg = tmp_path / "node.toml"
        cfg.write_text(text)
        p = subprocess.run(emergence_command() + ["peers", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and said in p.stderr and p.stderr.count("\n") == 1, p.stderr
    p = subprocess.run(emergence_command() + ["peers", "--config", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "no such file" in p.stderr, p.stderr


def test_the_blob_hash_follows_the_verified_prefix(tmp_path):
    """Pieces land in any order; the whole-blob hash taken as they land is the
    file's own, and is there as soon as the last piece lands."""
    import asyncio
    import random

    from emergence.share.swarm import _Prefix
    psize, size = 1000, 5500
    data = random.Random(7).randbytes(size)
    path = tmp_path / "part"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        order = list(range(6))
        random.Random(3).shuffle(order)
        whole, done = _Prefix(fd, psize, size), set()
        try:
            for i in order[:-1]:
                done.add(i)
                whole.advance(done)
            assert asyncio.run(whole.digest()) is None  # a piece still missing
            done.add(order[-1])
            whole.advance(done)
            assert asyncio.run(whole.digest()) == "sha256:" + hashlib.sha256(data).hexdigest()
        finally:
            whole.close()
        short = _Prefix(fd, psize, size + 10)  # the file ends before the blob would
        try:
            short.advance(set(range(6)))
            assert asyncio.run(short.digest()) is None
        finally:
            short.close()
    finally:
        os.close(fd)


def test_two_pulls_of_one_image_into_one_store_at_once(seed, nodes, tmp_path):  # noqa: F811
    """Two stages on one worker pull the same image at the same moment: one
    partial file per blob must not be written by both (it failed one of them)."""
    from concurrent.futures import ThreadPoolExecutor

    from emergence.image.store import Store
    from emergence.share import pull_image
    store, digest, _ = seed
    n = nodes(store, {"piece_size": PIECE})
    dest = Store(str(tmp_path / "sh-dest"))
    state = str(tmp_path / "sh-s")

    def pull(_):
        return pull_image(dest, "big:1", [n.url], trusted_keys=[n.public_key], state_dir=state)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(pull, range(4)))
    assert all(o["digest"] == digest for o in outs)
    assert sum(o["bytes"] for o in outs) < 2 * SIZE   # fetched once, not four times
    store_is_clean(dest.root)
    assert os.listdir(os.path.join(state, "partial")) == []
