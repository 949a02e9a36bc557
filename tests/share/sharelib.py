"""Nodes for the sharing tests: the share Service served by its own small
harness (python -m emergence.share.service) on 127.0.0.1 and a free port,
over a store that `emergence build` filled with real Nix."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, emergence_command

EXAMPLES = os.path.join(REPO, "nix", "examples")
NEEDS = pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0,
                           reason="needs root and nix-build")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emergence(store, *args, check=True, **kw):
    p = subprocess.run(emergence_command() + ["--store", store] + list(args),
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                       **kw)
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    if check and p.returncode != 0:
        raise AssertionError(f"emergence {' '.join(args)}: {p.returncode}\n{p.stderr}")
    return p


class Node:
    def __init__(self, store, state, config=None, port=None):
        self.store, self.state = str(store), str(state)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = {"store": self.store, **(config or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emergence.share.service", "--listen",
             f"127.0.0.1:{self.port}", "--state", self.state, "--config", json.dumps(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stdout.read().decode())
                time.sleep(0.05)
        else:
            raise AssertionError("node did not start")

    @property
    def token(self):
        with open(os.path.join(self.state, "node.token")) as f:
            return f.read().strip()

    @property
    def public_key(self):
        import requests
        return requests.get(self.url + "/share/v1/info").json()["public_key"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A store holding hello-c:latest, built once by `emergence build`."""
    if shutil.which("nix-build") is None or os.geteuid() != 0:
        pytest.skip("needs root and nix-build")
    store = str(tmp_path_factory.mktemp("sh-built") / "store")
    out = json.loads(emergence(store, "build", os.path.join(EXAMPLES, "hello-c.nix"),
                               "--json").stdout)
    return store, out["digest"]


@pytest.fixture
def nodes(tmp_path):
    """nodes(store=None, config=None) -> a running Node; all stopped at the end."""
    made = []

    def start(store=None, config=None, port=None, state=None):
        i = len(made)
        store = store or str(tmp_path / f"sh-store{i}")
        made.append(Node(store, state or tmp_path / f"sh-state{i}", config, port))
        return made[-1]
    yield start
    for n in made:
        n.stop()


class Faulty:
    """tests/share/faulty.py in front of NODE."""

    def __init__(self, node, mode):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, os.path.join(
            os.path.dirname(__file__), "faulty.py"), str(self.port), node.url, mode],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("proxy did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def random_image(store, name, size, seed=0):
    """An image of one random layer of SIZE bytes, put through the Store."""
    import random

    from emergence.image.store import CONFIG, LAYER, MANIFEST, Store, canonical
    s = Store(store)
    rnd = random.Random(seed)
    w = s.writer()
    left = size
    while left:
        n = min(left, 1 << 20)
        w.write(rnd.randbytes(n))
        left -= n
    layer, lsize = w.commit()
    cfg, csize = s.put(canonical({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [layer]}, "config": {}}))
    man = canonical({"schemaVersion": 2, "mediaType": MANIFEST,
                     "config": {"mediaType": CONFIG, "digest": cfg, "size": csize},
                     "layers": [{"mediaType": LAYER, "digest": layer, "size": lsize}]})
    digest, msize = s.put(man)
    s.set_ref(name, {"mediaType": MANIFEST, "digest": digest, "size": msize})
    return digest, layer
