"""Node keys that tell nodes apart: two nodes with one hostname get Nix key
names that differ (Nix's trusted-public-keys go by name); a key on disk keeps
its name (an old `emergence-HOST-1` too, with a hint in the log), and is
renamed only when `[share] key_name` says so; a malformed trusted key is
refused with one line naming the flag or key and the NAME:BASE64 form."""

import os
import re
import subprocess

import pytest
from conftest import emergence_command
from sharelib import nodes  # noqa: F401 - fixture

from emergence.errors import EmergenceError
from emergence.share import signing

HOST = os.uname().nodename


def test_two_nodes_with_one_hostname_have_different_key_names(nodes):  # noqa: F811
    a, b = nodes(), nodes()
    ka, kb = a.public_key, b.public_key
    for k in (ka, kb):
        assert re.fullmatch(rf"emergence-{re.escape(HOST)}-[0-9a-f]{{8}}:[A-Za-z0-9+/=]{{44}}",
                            k), k
    assert ka.partition(":")[0] != kb.partition(":")[0]
    # the name follows the key on disk: a restart keeps it
    a.stop()
    a2 = nodes(store=a.store, state=a.state)
    assert a2.public_key == ka


def test_an_existing_key_keeps_its_name_and_key_name_renames_it(tmp_path):
    old = signing.SecretKey.generate(f"emergence-{HOST}-1")
    (tmp_path / "cache-key.sec").write_text(old.text())
    logged = []
    key = signing.load_or_make_key(str(tmp_path), None, logged.append)
    assert key.public() == old.public()  # peers that trust it still do
    assert any("key_name" in m and old.name in m for m in logged), logged
    # set explicitly: the same key bytes, the new name, said in the log
    logged.clear()
    key = signing.load_or_make_key(str(tmp_path), "site-a-node7", logged.append)
    assert key.public() == "site-a-node7:" + old.public().partition(":")[2]
    assert any(key.public() in m for m in logged), logged
    again = signing.load_or_make_key(str(tmp_path), "site-a-node7", logged.append)
    assert again.public() == key.public()
    assert oct(os.stat(tmp_path / "cache-key.sec").st_mode & 0o777) == "0o600"
    # a fresh key with a name set takes it as it is
    (tmp_path / "new").mkdir()
    assert signing.load_or_make_key(str(tmp_path / "new"), "given").name == "given"


@pytest.mark.parametrize("bad", ["nocolon", "name:not-base64!", "name:" + "QUJD" * 3,
                                 ":" + "A" * 44])
def test_a_bad_trusted_key_names_the_flag_and_the_form(bad, tmp_path):
    (tmp_path / "node.toml").write_text("")
    p = subprocess.run(emergence_command() + ["--store", str(tmp_path / "s"), "pull",
                                              "x:y", "--peer", "http://127.0.0.1:9",
                                              "--trusted-key", bad,
                                              "--config", str(tmp_path / "node.toml")],
                       capture_output=True, text=True, timeout=60)
    if os.geteuid() != 0:
        pytest.skip("the verbs run as root")
    assert p.returncode != 0
    line = p.stderr.strip()
    assert "\n" not in line and "--trusted-key" in line and "NAME:BASE64" in line, line
    assert "internal error" not in line
    # the same from node.toml: the section and key, and the form
    with pytest.raises(EmergenceError, match=r"\[share\] trusted_keys.*NAME:BASE64"):
        signing.public_keys([bad], "[share] trusted_keys:")


def test_a_bad_trusted_key_in_node_toml_stops_share_with_one_line(tmp_path):
    from emergence.share.service import Service
    with pytest.raises(EmergenceError, match=r"\[share\] trusted_keys.*NAME:BASE64"):
        Service({"store": str(tmp_path / "s"), "trusted_keys": ["nocolon"]},
                str(tmp_path / "st"), lambda m: None)
    good = signing.SecretKey.generate("peer").public()
    svc = Service({"store": str(tmp_path / "s"), "trusted_keys": [good]},
                  str(tmp_path / "st"), lambda m: None)
    assert svc.config["trusted_keys"] == [good]
