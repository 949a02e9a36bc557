"""Push needs the node's token, and nothing enters the store before its
digest is checked: skopeo with and without credentials, and the chunked and
monolithic upload flows by hand."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest
import requests
from sharelib import NEEDS, built, nodes  # noqa: F401

pytestmark = NEEDS


def blobs(store):
    d = os.path.join(store, "blobs", "sha256")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_skopeo_push_needs_credentials(built, nodes, tmp_path):  # noqa: F811
    store, digest = built
    n = nodes()
    cmd = ["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
           f"oci:{store}:hello-c:latest", f"docker://127.0.0.1:{n.port}/team/hello:v1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "unauthorized" in p.stderr.lower()
    assert blobs(n.store) == [] or all(b.startswith(".") for b in blobs(n.store))
    p = subprocess.run(cmd[:2] + ["--dest-creds", f"anyone:{n.token}"] + cmd[2:],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = requests.get(f"{n.url}/v2/team/hello/manifests/v1")
    assert r.headers["Docker-Content-Digest"] == digest
    assert requests.get(f"{n.url}/v2/_catalog").json() == {"repositories": ["team/hello"]}
    with open(os.path.join(n.store, "index.json")) as f:
        refs = [m["annotations"]["org.opencontainers.image.ref.name"]
                for m in json.load(f)["manifests"]]
    assert refs == ["team/hello:v1"]
    p = subprocess.run(cmd[:2] + ["--dest-creds", "anyone:wrong"] + cmd[2:],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0


def test_chunked_and_monolithic_uploads_verify_the_digest(nodes):  # noqa: F811
    n = nodes()
    auth = {"Authorization": f"Bearer {n.token}"}
    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    base = f"{n.url}/v2/x/blobs/uploads/"
    assert requests.post(base).status_code == 401
    r = requests.post(base, headers=auth)
    assert r.status_code == 202
    loc = n.url + r.headers["Location"]
    r = requests.patch(loc, data=data[:100_000], headers={**auth, "Content-Range": "0-99999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    r = requests.patch(loc, data=data[:10], headers={**auth, "Content-Range": "5-14"})
    assert r.status_code == 416  # out of order
    assert requests.get(loc, headers=auth).headers["Range"] == "0-99999"
    r = requests.put(loc + "?digest=sha256:" + "0" * 64, data=data[100_000:], headers=auth)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert blobs(n.store) == []  # nothing unverified entered the store
    r = requests.post(base, headers=auth)
    loc = n.url + r.headers["Location"]
    requests.patch(loc, data=data[:100_000], headers=auth)
    r = requests.put(loc + "?digest=" + digest, data=data[100_000:], headers=auth)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest
    assert blobs(n.store) == [digest[7:]]
    # single POST (monolithic)
    other = b"x" * 1000
    od = "sha256:" + hashlib.sha256(other).hexdigest()
    r = requests.post(base + "?digest=" + od, data=other, headers=auth)
    assert r.status_code == 201
    assert requests.get(f"{n.url}/v2/x/blobs/{od}").content == other
    # a manifest naming a blob the node lacks is refused
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + "2" * 64, "size": 2}, "layers": []}
    r = requests.put(f"{n.url}/v2/x/manifests/t", data=json.dumps(m), headers={
        **auth, "Content-Type": m["mediaType"]})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert requests.put(f"{n.url}/v2/x/manifests/t", data=b"{}").status_code == 401
