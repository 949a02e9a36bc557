"""The pipeline tests' driver: a copy of examples/ci in a temp dir, its own
store and state root, the CLI run as a user would.  Container ids start with plci-."""

import json
import os
import shutil
import subprocess

from conftest import REPO, emergence_command

from emergence.lifetime import dies_with_us


class Ci:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.tree = tmp_path / "repo"
        shutil.copytree(os.path.join(REPO, "examples", "ci"), self.tree / "examples" / "ci")
        (self.tree / "nix").mkdir()
        shutil.copy(os.path.join(REPO, "nix", "lib.nix"), self.tree / "nix" / "lib.nix")
        self.dir = self.tree / "examples" / "ci"
        self.store = str(tmp_path / "store")
        self.root = str(tmp_path / "state")
        self.runs = 0

    def cli(self, *args, env=None, check=None):
        p = subprocess.run(emergence_command() + ["--root", self.root, "--store", self.store]
                           + list(args), capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL, env=env)
        assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
        if check is not None:
            assert p.returncode == check, p.stdout + p.stderr
        return p

    def run(self, *extra, file="pipeline.toml", code=0, env=None):
        """Run the pipeline; (process, JSON report, junit path)."""
        self.runs += 1
        rep, junit = self.tmp / f"r{self.runs}.json", self.tmp / f"j{self.runs}.xml"
        p = self.cli("pipeline", "run", str(self.dir / file), "--id-prefix", "plci-",
                     "--json", str(rep), "--junit", str(junit),
                     "--logs", str(self.tmp / f"logs{self.runs}"), *extra, env=env, check=code)
        with open(rep) as f:
            doc = json.load(f)
        doc["by"] = {s["name"]: s for s in doc["stages"]}
        return p, doc, str(junit)

    def write(self, name, text):
        (self.dir / name).write_text(text)

    def containers(self, prefix="plci-"):
        p = self.cli("list", "--format", "json", check=0)
        return [c["id"] for c in json.loads(p.stdout or "[]") if c["id"].startswith(prefix)]


def ci_fixture(tmp_path):
    """What each test file's `ci` fixture yields: no plci- container is left."""
    c = Ci(tmp_path)
    yield c
    assert c.containers() == []


def six_stages(pause=""):
    """The six-stage pipeline the shared-cache and cluster tests run: gen, lint,
    docs (each followed by PAUSE, e.g. "; sleep 1" so they overlap and spread),
    build, test, package."""
    return f"""
[stages.gen]
image = "image.nix"
command = "mkdir -p /out/g && echo generated > /out/g/v{pause}"
outputs = ["g"]

[stages.build]
image = "image.nix"
command = "cat /in/gen/g/v > /out/b; echo built >> /out/b"
inputs = ["@gen", "src/*.sh"]
outputs = ["b"]

[stages.lint]
image = "image.nix"
command = "for f in /src/src/*.sh; do sh -n $f; done; echo lint ok{pause}"
inputs = ["src/*.sh"]

[stages.docs]
image = "image.nix"
command = "cp /src/docs/README.txt /out/d{pause}"
inputs = ["docs"]
outputs = ["d"]

[stages.test]
image = "image.nix"
command = "grep built /in/build/b && echo tested"
inputs = ["@build"]
needs = ["lint"]

[stages.package]
image = "image.nix"
command = "cat /in/build/b /in/docs/d > /out/p; sha256sum /out/p"
inputs = ["@build", "@docs"]
needs = ["test"]
outputs = ["p"]
"""


class ShareNode:
    """The share service over STORE on 127.0.0.1 (its node key made at start)."""

    def __init__(self, store, state):
        import socket
        import sys
        import time
        self.store = store
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emergence.share.service", "--listen",
             f"127.0.0.1:{self.port}", "--state", state, "--config",
             json.dumps({"store": store})],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            preexec_fn=dies_with_us())  # a killed test run leaves no service behind
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                assert self.proc.poll() is None, "the share service died"
                time.sleep(0.05)
        import requests
        self.key = requests.get(self.url + "/share/v1/info").json()["public_key"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
