"""The registry's content management and push, attacked from loopback:
DELETE of manifests, tags and blobs, pushing a referrer, and reusing an
upload session all need the node token (401, and nothing changes without
it); with the token they work.  Deletes never reach outside the store, a
blob an image still uses is not deleted even with the token, and no
malformed push answers a 500.  The share service is served by its own
harness (python -m emergence.share.service), over real HTTP."""

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node token is root's")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Node:
    def __init__(self, base):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.store, self.state = str(base / "store"), str(base / "state")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emergence.share.service", "--listen",
             f"127.0.0.1:{self.port}", "--state", self.state,
             "--config", json.dumps({"store": self.store})],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the share service did not start")

    @property
    def token(self):
        with open(os.path.join(self.state, "node.token")) as f:
            return f.read().strip()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    yield n
    n.stop()


def push_image(n, name, tag, seed):
    auth = {"Authorization": f"Bearer {n.token}"}
    descs = []
    for data in (json.dumps({"seed": seed}).encode(), f"layer {seed}".encode()):
        r = requests.post(f"{n.url}/v2/{name}/blobs/uploads/?digest={sha(data)}", data=data,
                          headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        descs.append({"mediaType": "application/octet-stream", "digest": sha(data),
                      "size": len(data)})
    doc = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descs[0],
                      "layers": descs[1:]}).encode()
    r = requests.put(f"{n.url}/v2/{name}/manifests/{tag}", data=doc, timeout=30,
                     headers={**auth, "Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return sha(doc), descs[1]["digest"]


def wrong_credentials(n):
    return ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
            {"Authorization": "Basic " + base64.b64encode(b"any:wrong").decode()},
            {"Authorization": "Bearer " + n.token[:-1]},
            {"Authorization": "Basic " + base64.b64encode(b"any:").decode()})


def test_deletes_need_the_token(node):
    n = node
    digest, layer = push_image(n, "app", "v1", "a")
    for path in ("/v2/app/manifests/v1", f"/v2/app/manifests/{digest}",
                 f"/v2/app/blobs/{layer}"):
        for headers in wrong_credentials(n):
            r = requests.delete(n.url + path, headers=headers, timeout=30)
            assert r.status_code == 401, (path, headers, r.status_code, r.text)
            assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
            assert r.headers["WWW-Authenticate"].startswith("Basic")
    # nothing changed
    assert requests.get(f"{n.url}/v2/app/manifests/v1", timeout=30).status_code == 200
    assert requests.get(f"{n.url}/v2/app/blobs/{layer}", timeout=30).status_code == 200
    # the legitimate use: Bearer, or Basic with any user name
    r = requests.delete(f"{n.url}/v2/app/manifests/v1", auth=("any", n.token), timeout=30)
    assert r.status_code == 202
    assert requests.get(f"{n.url}/v2/app/manifests/v1", timeout=30).status_code == 404
    push_image(n, "app", "v1", "a")
    r = requests.delete(f"{n.url}/v2/app/manifests/{digest}", timeout=30,
                        headers={"Authorization": f"Bearer {n.token}"})
    assert r.status_code == 202
    r = requests.delete(f"{n.url}/v2/app/blobs/{layer}", timeout=30,
                        headers={"Authorization": f"Bearer {n.token}"})
    assert r.status_code == 202
    assert requests.get(f"{n.url}/v2/app/blobs/{layer}", timeout=30).status_code == 404


def test_a_blob_an_image_uses_is_not_deleted_even_with_the_token(node):
    n = node
    _, layer = push_image(n, "one", "v1", "shared")
    push_image(n, "two", "v1", "shared")  # the same layer, another repository
    auth = {"Authorization": f"Bearer {n.token}"}
    r = requests.delete(f"{n.url}/v2/one/manifests/v1", headers=auth, timeout=30)
    assert r.status_code == 202
    r = requests.delete(f"{n.url}/v2/one/blobs/{layer}", headers=auth, timeout=30)
    assert r.status_code == 405 and "two:v1" in r.text  # two:v1 still needs it
    assert requests.get(f"{n.url}/v2/two/blobs/{layer}", timeout=30).status_code == 200
    requests.delete(f"{n.url}/v2/two/manifests/v1", headers=auth, timeout=30)
    r = requests.delete(f"{n.url}/v2/one/blobs/{layer}", headers=auth, timeout=30)
    assert r.status_code == 202


def test_deletes_never_reach_outside_the_store(node, tmp_path):
    n = node
    push_image(n, "app", "v1", "a")
    canary = tmp_path / "canary"
    canary.write_text("still here")
    auth = {"Authorization": f"Bearer {n.token}"}
    rel = os.path.relpath(canary, os.path.join(n.store, "blobs", "sha256"))
    for path in (f"/v2/app/blobs/sha256:{rel}", "/v2/app/blobs/sha256:..%2F..%2F..%2Fcanary",
                 "/v2/app/blobs/sha512:" + "..%2F" * 10 + "etc%2Fpasswd",
                 "/v2/app/blobs/sha256:" + "0" * 64 + "%2F..",
                 "/v2/..%2F..%2Fstate/manifests/v1", "/v2/app/manifests/..%2F..%2Findex.json",
                 "/v2/app/blobs/uploads/..%2F..%2F..%2Findex.json"):
        r = requests.delete(n.url + path, headers=auth, timeout=30)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
    assert canary.read_text() == "still here" and os.path.exists("/etc/passwd")
    assert os.path.exists(os.path.join(n.store, "index.json"))
    assert requests.get(f"{n.url}/v2/app/manifests/v1", timeout=30).status_code == 200


def test_a_referrer_push_needs_the_token(node):
    n = node
    digest, _ = push_image(n, "app", "v1", "a")
    subject = {"mediaType": OCI_MANIFEST, "digest": digest, "size": 1}
    m = requests.get(f"{n.url}/v2/app/manifests/v1", timeout=30).json()
    doc = json.dumps({**m, "subject": subject, "artifactType": "application/x-sig"}).encode()
    for headers in wrong_credentials(n):
        r = requests.put(f"{n.url}/v2/app/manifests/{sha(doc)}", data=doc, timeout=30,
                         headers={**headers, "Content-Type": OCI_MANIFEST})
        assert r.status_code == 401
    r = requests.get(f"{n.url}/v2/app/referrers/{digest}", timeout=30)
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = requests.put(f"{n.url}/v2/app/manifests/{sha(doc)}", data=doc, timeout=30,
                     headers={"Authorization": f"Bearer {n.token}",
                              "Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == digest
    r = requests.get(f"{n.url}/v2/app/referrers/{digest}", timeout=30)
    assert [d["digest"] for d in r.json()["manifests"]] == [sha(doc)]


def test_an_upload_session_needs_the_token_and_stays_in_its_repository(node):
    n = node
    auth = {"Authorization": f"Bearer {n.token}"}
    loc = requests.post(f"{n.url}/v2/mine/blobs/uploads/", headers=auth,
                        timeout=30).headers["Location"]
    uid = loc.rsplit("/", 1)[1]
    for headers in wrong_credentials(n):
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            r = requests.request(method, n.url + loc + f"?digest={sha(b'x')}", data=b"x",
                                 headers=headers, timeout=30)
            assert r.status_code == 401, (method, headers)
    r = requests.patch(f"{n.url}/v2/theirs/blobs/uploads/{uid}", data=b"evil", headers=auth,
                       timeout=30)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    r = requests.get(n.url + loc, headers=auth, timeout=30)
    assert r.status_code == 204 and r.headers["Range"] == "0-0"
    r = requests.put(n.url + loc + f"?digest={sha(b'mine')}", data=b"mine", headers=auth,
                     timeout=30)
    assert r.status_code == 201


def test_hostile_manifests_are_400_or_413_never_500(node):
    n = node
    auth = {"Authorization": f"Bearer {n.token}", "Content-Type": OCI_MANIFEST}
    bodies = [b"[" * 200_000, b'{"a":' * 50_000, b"\x00" * 1000, b"{}" * 10,
              json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
                  "mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 10 ** 30},
                  "layers": []}).encode(),
              json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [
                  {"mediaType": "x", "digest": sha(str(i).encode()), "size": 1}
                  for i in range(20_000)], "config": {
                  "mediaType": "x", "digest": sha(b""), "size": 0}}).encode(),
              b" " * (5 << 20)]
    for body in bodies:
        r = requests.put(f"{n.url}/v2/app/manifests/t", data=body, headers=auth, timeout=60)
        assert r.status_code in (400, 413), (body[:40], r.status_code, r.text[:200])
        assert r.json()["errors"][0]["code"] in ("MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
                                                 "SIZE_INVALID")
        assert len(r.content) < 8000
    assert requests.get(f"{n.url}/v2/_catalog", timeout=30).status_code == 200
