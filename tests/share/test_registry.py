"""The OCI distribution API of a node, point by point against the spec's
Pull and Content Discovery sections, then real clients (skopeo, podman)."""

import hashlib
import json
import shutil
import subprocess

import pytest
import requests
from sharelib import NEEDS, built, emergence, nodes  # noqa: F401

pytestmark = NEEDS


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def node(built, nodes):  # noqa: F811 (fixtures from sharelib)
    store, digest = built
    return nodes(store), digest


def errors(r):
    assert r.headers["Content-Type"].startswith("application/json")
    return [e["code"] for e in r.json()["errors"]]


def test_base_endpoint(node):
    n, _ = node
    r = requests.get(n.url + "/v2/")  # "implements this specification", and how to log in
    assert r.status_code == 401 and errors(r) == ["UNAUTHORIZED"]
    assert r.headers["WWW-Authenticate"].startswith("Basic ")
    r = requests.get(n.url + "/v2/", auth=("any", n.token))
    assert r.status_code == 200


def test_manifest_by_tag_and_digest(node):
    n, digest = node
    for ref in ("latest", digest):
        r = requests.get(f"{n.url}/v2/hello-c/manifests/{ref}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == digest == sha(r.content)
        assert r.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
        assert json.loads(r.content)["mediaType"] == r.headers["Content-Type"]
        h = requests.head(f"{n.url}/v2/hello-c/manifests/{ref}")
        assert h.status_code == 200 and h.content == b""
        assert h.headers["Docker-Content-Digest"] == digest
        assert int(h.headers["Content-Length"]) == len(r.content)


def test_manifest_and_name_errors(node):
    n, digest = node
    r = requests.get(f"{n.url}/v2/hello-c/manifests/nosuchtag")
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    r = requests.get(f"{n.url}/v2/hello-c/manifests/sha256:" + "0" * 64)
    assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
    r = requests.get(f"{n.url}/v2/nosuchrepo/manifests/latest")
    assert r.status_code == 404 and errors(r) == ["NAME_UNKNOWN"]
    r = requests.get(f"{n.url}/v2/nosuchrepo/tags/list")
    assert r.status_code == 404 and errors(r) == ["NAME_UNKNOWN"]
    r = requests.get(f"{n.url}/v2/bad..name/manifests/latest")
    assert r.status_code == 400 and errors(r) == ["NAME_INVALID"]
    assert requests.head(f"{n.url}/v2/hello-c/manifests/nosuchtag").status_code == 404


def test_blobs_with_range(node):
    n, digest = node
    manifest = requests.get(f"{n.url}/v2/hello-c/manifests/latest").json()
    layer = max(manifest["layers"], key=lambda d: d["size"])
    url = f"{n.url}/v2/hello-c/blobs/{layer['digest']}"
    r = requests.get(url)
    assert r.status_code == 200 and sha(r.content) == layer["digest"]
    assert r.headers["Docker-Content-Digest"] == layer["digest"]
    assert r.headers["Accept-Ranges"] == "bytes"
    h = requests.head(url)
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == layer["size"]
    assert h.headers["Docker-Content-Digest"] == layer["digest"] and h.content == b""
    r2 = requests.get(url, headers={"Range": "bytes=100-1099"})
    assert r2.status_code == 206 and r2.content == r.content[100:1100]
    assert r2.headers["Content-Range"] == f"bytes 100-1099/{layer['size']}"
    r3 = requests.get(url, headers={"Range": f"bytes={layer['size'] - 10}-"})
    assert r3.status_code == 206 and r3.content == r.content[-10:]
    r4 = requests.get(url, headers={"Range": f"bytes={layer['size'] + 5}-"})
    assert r4.status_code == 416
    r = requests.get(f"{n.url}/v2/hello-c/blobs/sha256:" + "1" * 64)
    assert r.status_code == 404 and errors(r) == ["BLOB_UNKNOWN"]
    assert requests.head(f"{n.url}/v2/hello-c/blobs/sha256:" + "1" * 64).status_code == 404


def test_never_serves_outside_the_store(node):
    n, _ = node
    for path in ("/v2/hello-c/blobs/sha256:../../../etc/passwd",
                 "/v2/hello-c/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd",
                 "/v2/hello-c/blobs/sha512:" + "0" * 128,
                 "/v2/../../etc/passwd", "/nix-cache/nar/..%2f..%2fetc%2fpasswd"):
        r = requests.get(n.url + path)
        assert r.status_code in (400, 404), path
        assert b"root:" not in r.content


def test_reads_limited_to_known_networks(built, nodes):  # noqa: F811
    store, _ = built
    n = nodes(store, {"readers": ["10.99.0.0/16"]})
    r = requests.get(f"{n.url}/v2/hello-c/manifests/latest")
    assert r.status_code == 403 and errors(r) == ["DENIED"]
    n2 = nodes(store, {"readers": ["127.0.0.0/8"]})
    assert requests.get(f"{n2.url}/v2/hello-c/manifests/latest").status_code == 200


def test_tags_list_pagination(node, built):  # noqa: F811
    n, digest = node
    store, _ = built
    for tag in ("b", "a", "C", "10"):
        emergence(store, "tag", "hello-c:latest", f"hello-c:{tag}")
    r = requests.get(f"{n.url}/v2/hello-c/tags/list")
    assert r.status_code == 200
    assert r.json() == {"name": "hello-c", "tags": ["10", "C", "a", "b", "latest"]}  # Go order
    r = requests.get(f"{n.url}/v2/hello-c/tags/list?n=2")
    assert r.json()["tags"] == ["10", "C"]
    assert r.headers["Link"] == '</v2/hello-c/tags/list?n=2&last=C>; rel="next"'
    r = requests.get(f"{n.url}/v2/hello-c/tags/list?n=2&last=C")
    assert r.json()["tags"] == ["a", "b"]
    r = requests.get(f"{n.url}/v2/hello-c/tags/list?last=b")
    assert r.json()["tags"] == ["latest"] and "Link" not in r.headers
    r = requests.get(f"{n.url}/v2/hello-c/tags/list?n=0")
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = requests.get(f"{n.url}/v2/_catalog")
    assert r.json() == {"repositories": ["hello-c"]}


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_skopeo_copies_from_a_node(node, tmp_path):
    n, digest = node
    dest = tmp_path / "sh-oci"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--preserve-digests",
                    f"docker://127.0.0.1:{n.port}/hello-c:latest", f"oci:{dest}:hello"],
                   check=True, capture_output=True, timeout=120)
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest  # same bytes, same digest


@pytest.mark.skipif(not shutil.which("podman"), reason="needs podman")
def test_podman_pulls_from_a_node(node, tmp_path):
    n, digest = node
    import tempfile
    run = tempfile.mkdtemp(prefix="sh-pr", dir="/tmp")  # podman: runroot <= 50 characters
    root = ["--root", str(tmp_path / "sh-podman"), "--runroot", run, "--storage-driver", "vfs"]
    p = subprocess.run(["podman", *root, "pull", "--tls-verify=false",
                        f"127.0.0.1:{n.port}/hello-c:latest"],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["podman", *root, "image", "inspect", "--format", "{{.Digest}}",
                        f"127.0.0.1:{n.port}/hello-c:latest"], capture_output=True, text=True)
    assert p.stdout.strip() == digest
    subprocess.run(["podman", *root, "rmi", "-a", "-f"], capture_output=True)
    shutil.rmtree(run, ignore_errors=True)


def test_oras_python_client_pulls(node, tmp_path):
    oras = pytest.importorskip("oras.client")
    n, digest = node
    client = oras.OrasClient(hostname=f"127.0.0.1:{n.port}", insecure=True)
    manifest = client.get_manifest(f"127.0.0.1:{n.port}/hello-c:latest")
    layer = manifest["layers"][0]
    out = tmp_path / "sh-oras"
    out.mkdir()
    path = client.download_blob(f"127.0.0.1:{n.port}/hello-c", layer["digest"],
                                str(out / "layer.tar"))
    with open(path, "rb") as f:
        assert sha(f.read()) == layer["digest"]


@pytest.mark.skipif(not shutil.which("containerd") or not shutil.which("ctr"),
                    reason="needs containerd and ctr")
def test_ctr_pulls_from_a_node(node):
    """A private containerd (own root, state and socket), then `ctr pull --plain-http`."""
    import tempfile
    import time
    n, digest = node
    d = tempfile.mkdtemp(prefix="sh-ctrd", dir="/tmp")  # socket paths must stay short
    with open(f"{d}/config.toml", "w") as f:
        f.write('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    daemon = subprocess.Popen(["containerd", "--config", f"{d}/config.toml", "--root",
                               f"{d}/root", "--state", f"{d}/state", "--address", f"{d}/sock"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctr = ["ctr", "--address", f"{d}/sock", "-n", "sh-test"]
    try:
        for _ in range(100):
            if subprocess.run(ctr + ["version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        ref = f"127.0.0.1:{n.port}/hello-c:latest"
        p = subprocess.run(ctr + ["images", "pull", "--plain-http", ref], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        p = subprocess.run(ctr + ["images", "ls"], capture_output=True, text=True)
        assert digest in p.stdout
        subprocess.run(ctr + ["images", "rm", ref], capture_output=True)
    finally:
        daemon.terminate()
        daemon.wait(10)
        subprocess.run(["umount", "-R", f"{d}/root"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
