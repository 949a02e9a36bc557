"""Attacks on the stage cache shared through the peer-to-peer store, and its
legitimate use: three simulated nodes (the share service over three stores, on
loopback).  A result is used only with a statement signed by a trusted node,
blobs that hash to their digests and a config naming the key asked for; a
tampered result, one signed by an unknown key, or a trusted node's tag that
points at another stage's result is refused and the stage rebuilt."""

import json
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pipeline"))
from cihelp import ShareNode, ci_fixture, six_stages  # noqa: E402
from conftest import emergence_command  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0,
                                 reason="needs root and nix-build")]

SIX = six_stages()


def Node(tmp, i):
    """Share node I: its store and state under TMP."""
    return ShareNode(str(tmp / f"n{i}-store"), str(tmp / f"n{i}-state"))


@pytest.fixture
def ci(tmp_path):
    yield from ci_fixture(tmp_path)


@pytest.fixture
def three(tmp_path):
    nodes = []
    try:
        for i in range(3):
            nodes.append(Node(tmp_path, i))
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def run(ci, node, tag, *share):
    rep = ci.tmp / f"{tag}.json"
    p = subprocess.run(emergence_command() + [
        "--root", ci.root, "--store", node.store, "pipeline", "run", str(ci.dir / "six.toml"),
        "--id-prefix", "plci-", "--json", str(rep), "--logs", str(ci.tmp / f"logs-{tag}"),
        "--share", "--config", "/dev/null", *share], capture_output=True, text=True,
        timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    return {s["name"]: s for s in json.loads(rep.read_text())["stages"]}


def test_six_stages_built_on_one_node_are_hits_on_another(ci, three):
    a, b, c = three
    ci.write("six.toml", SIX)
    first = run(ci, a, "a")
    assert len(first) == 6 and not any(s["cache_hit"] for s in first.values())
    # node b trusts a: every stage is a hit, fetched from a, the same outputs
    second = run(ci, b, "b", "--peer", a.url, "--peer", c.url, "--trusted-key", a.key)
    assert all(s["cache_hit"] for s in second.values()), second
    assert all(a.url in s["message"] for s in second.values())
    assert {n: s["output_digests"] for n, s in second.items()} == \
        {n: s["output_digests"] for n, s in first.items()}
    assert "tested" in (ci.tmp / "logs-b" / "test.log").read_text()  # the log came too
    # a key nobody trusts: c's own results are not taken (c ran nothing yet: run it
    # there first), so a node trusting only b refuses c's statements and rebuilds
    run(ci, c, "c0")
    unknown = run(ci, c, "c1")  # local hits on c
    assert all(s["cache_hit"] for s in unknown.values())
    d, e = Node(ci.tmp, 3), Node(ci.tmp, 4)
    try:
        fresh = run(ci, d, "d", "--peer", c.url, "--trusted-key", b.key)
        assert not any(s["cache_hit"] for s in fresh.values())
        assert {s["state"] for s in fresh.values()} == {"passed"}
        # the same peer, its key trusted: hits (so the refusal above was the key's)
        trusted = run(ci, e, "e", "--peer", c.url, "--trusted-key", c.key)
        assert all(s["cache_hit"] for s in trusted.values())
    finally:
        d.stop()
        e.stop()


def test_a_tampered_result_is_refused_and_rebuilt(ci, three):
    a, b, _ = three
    ci.write("six.toml", SIX)
    first = run(ci, a, "a")
    entry = json.loads(open(os.path.join(
        a.store, "pipeline", "cache", first["package"]["key"][7:] + ".json")).read())
    blob = os.path.join(a.store, "blobs", "sha256", entry["outputs"][7:])
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(600)
        f.write(b"X")
    got = run(ci, b, "b", "--peer", a.url, "--trusted-key", a.key)
    assert not got["package"]["cache_hit"] and got["package"]["state"] == "passed"
    assert "the peers' result was refused" in got["package"]["message"], got["package"]
    assert all(s["cache_hit"] for n, s in got.items() if n != "package"), \
        [(n, s["state"], s["cache_hit"], s.get("message")) for n, s in got.items()]
    assert got["package"]["output_digests"] == first["package"]["output_digests"]
    # gc keeps the published results; gc --pipeline drops them and their tags
    def refs(store):
        p = subprocess.run(emergence_command() + ["--store", store, "images", "--json"],
                           capture_output=True, text=True, check=True)
        return [i for i in p.stdout.split('"') if i.startswith("emergence-ci-result:")]
    subprocess.run(emergence_command() + ["--store", a.store, "gc"], check=True,
                   capture_output=True)
    assert len(refs(a.store)) == 6
    subprocess.run(emergence_command() + ["--store", a.store, "gc", "--pipeline"], check=True,
                   capture_output=True)
    assert refs(a.store) == []
    assert os.listdir(os.path.join(a.store, "pipeline", "cache")) == []


def test_a_trusted_tag_for_another_key_is_refused(ci, three):
    """A trusted node's signed tag says KEY(package) is the result of another
    stage (docs): signed, every digest right, but its config names another key:
    refused, package is rebuilt with its own outputs."""
    a, b, _ = three
    ci.write("six.toml", SIX)
    first = run(ci, a, "a")
    store = os.path.join(a.store)
    idx_path = os.path.join(store, "index.json")
    idx = json.loads(open(idx_path).read())
    ref = "org.opencontainers.image.ref.name"
    by_ref = {m["annotations"][ref]: m for m in idx["manifests"]}
    docs = by_ref["emergence-ci-result:" + first["docs"]["key"][7:]]
    pkg = "emergence-ci-result:" + first["package"]["key"][7:]
    by_ref[pkg] = {**docs, "annotations": {ref: pkg}}
    idx["manifests"] = list(by_ref.values())
    with open(idx_path, "w") as f:
        json.dump(idx, f)
    got = run(ci, b, "b", "--peer", a.url, "--trusted-key", a.key)
    assert not got["package"]["cache_hit"] and got["package"]["state"] == "passed"
    assert got["package"]["output_digests"] == first["package"]["output_digests"]
    assert got["docs"]["cache_hit"]
