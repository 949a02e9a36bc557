"""A swarm pull: four nodes, each in its own network namespace with its upload
shaped by `tc` (so the seed is the narrow pipe and the pulls overlap in
time), pull one blob from a seed and from each other at once.  Behaviour,
not timing: the pullers serve each other a large share of the pieces, so
the seed sends well under one copy per puller, and every result is right."""

import hashlib
import json
import os
import subprocess

import pytest
from conftest import emergence_command
from netnslib import in_ns, mesh  # noqa: F401
from sharelib import NEEDS, random_image

pytestmark = [NEEDS, pytest.mark.slow]
SIZE = 16 << 20
PIECE = 256 << 10
PULLERS = 4
RATE = "40mbit"  # each node's upload: 16 MB from the seed alone to 4 pullers takes 13 s


def test_pullers_serve_each_other_and_spare_the_seed(mesh, tmp_path):  # noqa: F811
    spots = mesh(PULLERS + 1)
    for ns, _ in spots:
        assert in_ns(ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", RATE,
                     "burst", "64kb", "latency", "50ms").returncode == 0
    digest, layer = random_image(str(tmp_path / "shm-store0"), "big:1", SIZE)
    nodes = [mesh.start(ns, addr, i, {"piece_size": PIECE}) for i, (ns, addr)
             in enumerate(spots)]
    key = nodes[0].get("/share/v1/info")["public_key"]
    pulls = []
    for n in nodes[1:]:
        args = ["--store", n.store, "pull", "big:1", "--json", "--state", n.state,
                "--config", "/dev/null", "--trusted-key", key]
        for peer in nodes:
            if peer is not n:
                args += ["--peer", peer.url]
        pulls.append(subprocess.Popen(["ip", "netns", "exec", n.ns] + emergence_command()
                                      + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True))
    outs = []
    for p in pulls:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "Traceback" not in err, err
        outs.append(json.loads(out))
    from_seed = sum(o["from"].get(nodes[0].url, 0) for o in outs)
    from_peers = sum(b for o in outs for peer, b in o["from"].items() if peer != nodes[0].url)
    for o, n in zip(outs, nodes[1:]):
        assert o["digest"] == digest and not o["banned"], o
        with open(os.path.join(n.store, "blobs", "sha256", layer[7:]), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == layer
        assert os.listdir(os.path.join(n.state, "partial")) == []
    # 4 copies went out in all; the seed sent fewer than 1.5 of them, the pullers the rest
    assert from_seed + from_peers >= PULLERS * SIZE
    assert from_seed < 1.5 * SIZE, (from_seed / SIZE, [o["from"] for o in outs])
    assert from_peers > 2 * SIZE
