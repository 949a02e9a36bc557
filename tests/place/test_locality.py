"""Where the bytes are: workers publish what their image stores hold; the
leader prices a host that lacks an image's layers by the seconds to fetch
them (at the bandwidth measured to the holders), so with equal load the
task goes where the layers already are, and --explain shows the term."""

import hashlib
import json
import threading
import time

import pytest

from emergence.image.store import MANIFEST, Store
from emergence.place import locality, score, tasks
from emergence.place.commander import Commander, rank_task
from emergence.place.worker import Worker


def _image(root, name, layers):
    """A real OCI layout at ROOT with image NAME made of LAYERS (bytes each)."""
    store = Store(str(root))
    descs = []
    for data in layers:
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                      "digest": store.put(data)[0], "size": len(data)})
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": store.put(config)[0], "size": len(config)},
                           "layers": descs}).encode()
    store.set_ref(name, {"mediaType": MANIFEST, "digest": store.put(manifest)[0],
                         "size": len(manifest)})
    return [d["digest"] for d in descs]


def test_holdings_and_fetch_seconds(tmp_path):
    big, small = b"x" * 3_000_000, b"y" * 1000
    digests = _image(tmp_path / "a", "app:1", [big, small])
    h = locality.holdings(str(tmp_path / "a"))
    short = [d.split(":")[1][:16] for d in digests]
    assert h == {"layers": {short[0]: 3_000_000, short[1]: 1000},
                 "images": {"app:1": short}}
    pub = locality.Publisher(str(tmp_path / "a"))
    assert pub.changed() == h and pub.changed() is None  # unchanged: nothing to write
    all_h = {"a": h, "b": {"layers": {short[1]: 1000}, "images": {}}}
    host_b = {"name": "b", "bandwidth": {"a": 1e6}}
    assert locality.fetch_seconds(host_b, locality.image_layers("app:1", all_h), all_h) == \
        (3.0, 3_000_000)
    assert locality.fetch_seconds({"name": "a"}, {short[0]: 3_000_000}, all_h) == (0.0, 0.0)
    assert hashlib.sha256(big).hexdigest().startswith(short[0])


def test_the_task_goes_where_its_layers_are(cluster, tmp_path):
    _image(tmp_path / "s1", "app:1", [b"z" * 2_000_000])
    (tmp_path / "s2").mkdir()
    Store(str(tmp_path / "s2"))  # an empty store
    log = []
    cmd = Commander(cluster, "lc-c", {"lease_ttl": 2}, log.append)
    # by name, lc-a would win every tie; it lacks the layers
    wa = Worker(cluster, "lc-a", {"lease_ttl": 2, "cpu": 2, "store": str(tmp_path / "s2")},
                log.append)
    wb = Worker(cluster, "lc-b", {"lease_ttl": 2, "cpu": 2, "store": str(tmp_path / "s1")},
                log.append)
    for n in (cmd, wa, wb):
        threading.Thread(target=n.run, daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(cluster.items("holdings")) < 2:
            time.sleep(0.1)
        assert set(cluster.items("holdings")) == {"lc-a", "lc-b"}
        spec = {"kind": "image", "image": "app:1", "id": "lc-t", "demand": {"cpu": 0.1}}
        # 16 ms of fetching against a 60 s run is a small term: weigh it so the
        # two workers' (noisy) measurements of this one machine cannot outweigh it
        cluster.put(1000.0, "config", "s_locality")
        snap = cluster.snapshot()
        ranked = rank_task(spec, snap, {"s_locality": 1000.0})
        assert [r["name"] for r in ranked] == ["lc-b", "lc-a"], ranked
        a = ranked[1]
        assert a["fetch_bytes"] == 2_000_000 and a["fetch"] > 0
        text = "\n".join(score.explain(ranked))
        assert "fetch=0.02s (2.0 MB missing)" in text and "lc-b" in text.splitlines()[0]
        # the term is what moves lc-a's D: the share of the run spent fetching
        flat = {r["name"]: r for r in rank_task(spec, snap, {"s_locality": 0.0})}
        share = a["fetch"] / (a["fetch"] + 60.0)
        assert a["D"] - flat["lc-a"]["D"] == pytest.approx(1000.0 * share)
        assert ranked[0]["D"] == pytest.approx(flat["lc-b"]["D"])
        tasks.submit(cluster, dict(spec, kind="sleep", seconds=0, image="app:1"))
        while time.monotonic() < deadline and cluster.get("results", "lc-t") is None:
            time.sleep(0.05)
        assert cluster.get("results", "lc-t")["host"] == "lc-b"
    finally:
        for n in (cmd, wa, wb):
            n.stop()
        cmd.resign()
