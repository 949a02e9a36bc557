"""Range on the Nix cache's NARs (RFC 9110 14): one range is a 206; several
are answered with the whole NAR (200, which the RFC allows: Nix never asks for
several); a malformed or unsatisfiable one is a 416 with `bytes */SIZE`, never
a 500; and a client the route's access class refuses gets that refusal, not a
word about its Range."""

import os
import shutil
import subprocess

import pytest
import requests
from aiohttp import web
from sharelib import nodes  # noqa: F401 - fixture

from emergence.share.nixcache import byte_range

SIZE = 100


@pytest.mark.parametrize("header,want", [
    (None, None), ("", None), ("items=0-1", None), ("bytes=0-9", (0, 10)),
    ("bytes=5-", (5, 100)), ("bytes=-5", (95, 100)), ("bytes=-500", (0, 100)),
    ("bytes=90-200", (90, 100)), ("bytes= 3 - 4 ", (3, 5)), ("BYTES=1-1", (1, 2)),
    ("bytes=0-1,4-5", None), ("bytes=0-1, 200-300", None), ("bytes=0-0,0-0,0-0", None),
    ("bytes=abc", 416), ("bytes=5-2", 416), ("bytes=-", 416), ("bytes=", 416),
    ("bytes=100-", 416), ("bytes=-0", 416), ("bytes=1-2-3", 416), ("bytes=\u00b2-3", 416),
    ("bytes=" + "9" * 5000 + "-", 416), ("bytes=0-1,abc", 416), ("bytes=200-,300-", 416),
])
def test_byte_range(header, want):
    if want == 416:
        with pytest.raises(web.HTTPRequestRangeNotSatisfiable) as e:
            byte_range(header, SIZE)
        assert e.value.headers["Content-Range"] == f"bytes */{SIZE}"
    else:
        assert byte_range(header, SIZE) == want


def _valid_store_path():
    if shutil.which("nix-store") is None or not os.path.isdir("/nix/store"):
        return None
    for name in sorted(os.listdir("/nix/store")):
        path = "/nix/store/" + name
        if name.endswith((".drv", ".lock")) or os.path.islink(path):
            continue
        p = subprocess.run(["nix-store", "--query", "--hash", path], capture_output=True,
                           text=True)
        if p.returncode == 0:
            return path
    return None


def _nar_url(node, path):
    info = requests.get(f"{node.url}/nix-cache/{os.path.basename(path)[:32]}.narinfo",
                        timeout=60)
    assert info.status_code == 200, info.text
    return node.url + "/nix-cache/" + next(
        line[5:] for line in info.text.splitlines() if line.startswith("URL: "))


def test_ranges_over_http_and_the_class_check_first(nodes, tmp_path):  # noqa: F811
    if os.geteuid() != 0:
        pytest.skip("needs root")
    path = _valid_store_path()
    if path is None:
        pytest.skip("needs a valid file in /nix/store")
    node = nodes()
    nar = _nar_url(node, path)
    whole = requests.get(nar, timeout=60)
    assert whole.status_code == 200
    size = len(whole.content)
    r = requests.get(nar, headers={"Range": "bytes=0-9"}, timeout=60)
    assert r.status_code == 206 and r.content == whole.content[:10]
    assert r.headers["Content-Range"] == f"bytes 0-9/{size}"
    r = requests.get(nar, headers={"Range": "bytes=-7"}, timeout=60)
    assert r.status_code == 206 and r.content == whole.content[-7:]
    r = requests.get(nar, headers={"Range": "bytes=0-1,4-5"}, timeout=60)
    assert r.status_code == 200 and r.content == whole.content
    for bad in ("bytes=abc", "bytes=5-2", f"bytes={size}-", "bytes=\u00b2-3".encode()):
        r = requests.get(nar, headers={"Range": bad}, timeout=60)
        assert r.status_code == 416, (bad, r.status_code, r.text[:200])
        assert r.headers["Content-Range"] == f"bytes */{size}"
    # a node whose readers exclude this client: 403 for every Range, good or bad
    shut = nodes(config={"readers": ["192.0.2.0/24"]})
    for rng in ("bytes=abc", "bytes=0-1,4-5", "bytes=0-9"):
        r = requests.get(shut.url + nar[len(node.url):], headers={"Range": rng}, timeout=60)
        assert r.status_code == 403, (rng, r.status_code)
