"""A node as a Nix binary cache: real `nix copy` with signature checking
copies a closure into a separate store and `nix-store --verify` agrees; a
wrong key or a tampered narinfo is refused by Nix.  Keys are Nix's own."""

import json
import os
import shutil
import socket
import subprocess
import sys

import requests
from sharelib import NEEDS, built, free_port, nodes  # noqa: F401

from emergence.share import nar, signing

pytestmark = NEEDS
NIX = ["nix", "--extra-experimental-features", "nix-command"]


def closure_top(store, digest):
    with open(os.path.join(store, "blobs", "sha256", digest[7:])) as f:
        ann = json.load(f)["annotations"]
    return ann["io.github.emergence.nix.contents"].split()[0]  # .../hello-c


def nix_copy(url, key, path, dest):
    return subprocess.run(NIX + ["copy", "--from", url, "--to", f"local?root={dest}",
                                 "--option", "trusted-public-keys", key,
                                 "--option", "require-sigs", "true",
                                 "--option", "substituters", "", path],
                          capture_output=True, text=True, timeout=180)


def test_nar_matches_nix(built):  # noqa: F811
    store, digest = built
    top = closure_top(store, digest)
    for path in [top] + subprocess.run(["nix-store", "-qR", top], capture_output=True,
                                       text=True).stdout.split():
        h, size = nar.hash_and_size(path)
        recorded = subprocess.run(["nix-store", "-q", "--hash", path], capture_output=True,
                                  text=True).stdout.strip()
        assert recorded == "sha256:" + nar.nix32(h)
        dumped = subprocess.run(["nix-store", "--dump", path], capture_output=True).stdout
        assert len(dumped) == size and b"".join(nar.dump(path)) == dumped


def test_keys_in_nix_format(tmp_path):
    sec, pub = tmp_path / "sh-k.sec", tmp_path / "sh-k.pub"
    subprocess.run(["nix-store", "--generate-binary-cache-key", "sh-test-1", sec, pub],
                   check=True)
    key = signing.SecretKey(sec.read_text())
    assert key.public() == pub.read_text().strip()
    sig = key.sign("message")
    assert signing.verify([pub.read_text()], "message", sig)
    assert not signing.verify([pub.read_text()], "other", sig)
    assert signing.SecretKey(key.text()).public() == key.public()


def test_nix_copy_with_signatures(built, nodes, tmp_path):  # noqa: F811
    store, digest = built
    n = nodes(store)
    top = closure_top(store, digest)
    url = n.url + "/nix-cache"
    info = requests.get(url + "/nix-cache-info").text
    assert "StoreDir: /nix/store" in info
    narinfo = requests.get(f"{url}/{os.path.basename(top)[:32]}.narinfo").text
    fields = dict(line.split(": ", 1) for line in narinfo.splitlines())
    assert set(fields) >= {"StorePath", "URL", "Compression", "FileHash", "FileSize",
                           "NarHash", "NarSize", "References", "Sig"}
    nar_url = f"{url}/{fields['URL']}"
    whole = requests.get(nar_url).content
    assert len(whole) == int(fields["NarSize"])
    part = requests.get(nar_url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == whole[1000:2000]
    assert requests.get(f"{url}/{'0' * 32}.narinfo").status_code == 404

    dest = tmp_path / "sh-nixdest"
    p = nix_copy(url, n.public_key, top, dest)
    assert p.returncode == 0, p.stderr
    closure = subprocess.run(["nix-store", "-qR", top], capture_output=True,
                             text=True).stdout.split()
    for path in closure:
        assert os.path.exists(f"{dest}{path}")
    p = subprocess.run(["nix-store", "--store", f"local?root={dest}", "--verify",
                        "--check-contents"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "error" not in p.stderr.lower(), p.stderr

    # a key that did not sign: refused
    other = signing.SecretKey.generate("sh-other-1").public()
    p = nix_copy(url, other, top, tmp_path / "sh-nixwrong")
    assert p.returncode != 0 and "signature" in p.stderr
    assert not os.path.exists(f"{tmp_path}/sh-nixwrong{top}")


def test_tampered_narinfo_is_refused(built, nodes, tmp_path):  # noqa: F811
    """A static mirror of the node's cache whose top narinfo lost a reference:
    the signature no longer covers it."""
    store, digest = built
    n = nodes(store)
    top = closure_top(store, digest)
    url = n.url + "/nix-cache"
    mirror = tmp_path / "sh-mirror"
    (mirror / "nar").mkdir(parents=True)
    (mirror / "nix-cache-info").write_text(requests.get(url + "/nix-cache-info").text)
    for path in subprocess.run(["nix-store", "-qR", top], capture_output=True,
                               text=True).stdout.split():
        h = os.path.basename(path)[:32]
        text = requests.get(f"{url}/{h}.narinfo").text
        fields = dict(line.split(": ", 1) for line in text.splitlines())
        (mirror / fields["URL"]).write_bytes(requests.get(f"{url}/{fields['URL']}").content)
        if path == top:
            refs = fields["References"].split()
            assert refs
            text = text.replace(fields["References"], " ".join(refs[1:]))
        (mirror / f"{h}.narinfo").write_text(text)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1",
                               str(port), "-d", str(mirror)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                import time
                time.sleep(0.05)
        p = nix_copy(f"http://127.0.0.1:{port}", n.public_key, top, tmp_path / "sh-nixt")
        assert p.returncode != 0 and "signature" in p.stderr, p.stderr
        assert not os.path.exists(f"{tmp_path}/sh-nixt{top}")
    finally:
        server.kill()
        server.wait()
    shutil.rmtree(mirror)
