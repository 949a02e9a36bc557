"""Toolchains in stage images, offline: nix/lib.nix ships with the package and
is found as <emergence/lib.nix>; `hostPython` puts the host's interpreter (and
`hostTool` any host program) with the libraries they load into an image, no
nixpkgs; the standard library's pycs are unchecked-hash, so nothing is stale."""

import os
import shutil

import pytest
from cihelp import ci_fixture

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0
                                 or not os.path.exists("/usr/bin/python3.11"),
                                 reason="needs root, nix-build and the host's python3.11")]


@pytest.fixture
def ci(tmp_path):
    yield from ci_fixture(tmp_path)


IMAGE = """
# No path to lib.nix: `emergence build` puts the installed one on the search path.
let
  lib = import <emergence/lib.nix> { };
  tools = lib.runScript "plci-py-tools" ''
    $busybox mkdir -p $out/bin
    $busybox cp ${lib.busybox}/busybox $out/bin/busybox
    for a in sh cat echo; do $busybox ln -s busybox $out/bin/$a; done
  '';
in
lib.buildImage {
  name = "plci-python";
  contents = [ tools (lib.hostPython { })
               (lib.hostTool { name = "plci-sha"; paths = [ "/usr/bin/sha256sum" ]; }) ];
  config = { Env = [ "PATH=/bin:/usr/bin" ]; };
}
"""

SCRIPT = """
import json, os, sqlite3, sys
print("python", sys.version_info[:2], "prefix", sys.prefix)
pyc = json.__spec__.cached
with open(pyc, "rb") as f:
    flags = int.from_bytes(f.read(8)[4:8], "little")
print("json pyc flags", flags)   # 1: hash-based, not checked against the source
con = sqlite3.connect(":memory:")
print("sqlite", con.execute("select 6 * 7").fetchone()[0])
os.makedirs("/out", exist_ok=True)
with open("/out/answer.json", "w") as f:
    json.dump({"answer": 42}, f)
"""


def test_a_stage_runs_a_python_script_in_an_image_built_offline(ci):
    (ci.tmp / "elsewhere").mkdir()   # no nix/ next to it: lib.nix comes from the package
    (ci.tmp / "elsewhere" / "py.nix").write_text(IMAGE)
    ci.write("hello.py", SCRIPT)
    ci.write("py.toml", f'[stages.py]\nimage = "{ci.tmp}/elsewhere/py.nix"\n'
             'command = "python3 /src/hello.py && sha256sum /out/answer.json"\n'
             'inputs = ["hello.py"]\noutputs = ["answer.json"]\ntimeout = 600\n')
    _, doc, _ = ci.run(file="py.toml", env=dict(os.environ, NIX_PATH=""))
    log = (ci.tmp / "logs1" / "py.log").read_text()
    assert doc["by"]["py"]["state"] == "passed", log
    assert "python (3, 11) prefix /usr" in log
    assert "json pyc flags 1" in log
    assert "sqlite 42" in log                       # an extension module and its library
    assert "/out/answer.json" in log                # a host tool, the same way
    # the second run is a hit: the image (host files by content) did not change
    _, again, _ = ci.run(file="py.toml")
    assert again["by"]["py"]["cache_hit"]
