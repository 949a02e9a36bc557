"""The OCI distribution spec's Push, Content Discovery and Content Management
sections against a node, point by point (status, headers, body, error code),
over real HTTP; then real clients: oras (Python) attaching an SBOM, skopeo
deleting.  Pull is tests/share/test_registry.py's."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import requests
from sharelib import NEEDS, built, emergence, nodes  # noqa: F401

pytestmark = NEEDS

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"


def digest_of(data, algo="sha256"):
    return f"{algo}:" + hashlib.new(algo, data).hexdigest()


def codes(r):
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    return [e["code"] for e in r.json()["errors"]]


class Client:
    """Raw HTTP per the spec, with the node token."""

    def __init__(self, node):
        self.node, self.url = node, node.url
        self.auth = {"Authorization": f"Bearer {node.token}"}

    def req(self, method, path, **kw):
        headers = {**self.auth, **kw.pop("headers", {})}
        url = path if path.startswith("http") else self.url + path
        return requests.request(method, url, headers=headers, timeout=60, **kw)

    def blob(self, name, data, algo="sha256"):
        d = digest_of(data, algo)
        r = self.req("POST", f"/v2/{name}/blobs/uploads/?digest={d}", data=data,
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return {"mediaType": LAYER, "digest": d, "size": len(data)}

    def manifest(self, name, ref, doc, media=OCI_MANIFEST, status=201):
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        r = self.req("PUT", f"/v2/{name}/manifests/{ref}", data=data,
                     headers={"Content-Type": media})
        assert r.status_code == status, r.text
        return r, {"mediaType": media, "digest": digest_of(data), "size": len(data)}

    def image(self, name, ref, seed=b"", **extra):
        """A small image (config, one layer) pushed to NAME:REF; its descriptor."""
        cfg = self.blob(name, json.dumps({"seed": seed.hex()}).encode())
        cfg["mediaType"] = extra.pop("config_media", OCI_CONFIG)
        layer = self.blob(name, b"layer " + seed)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
               "layers": [layer], **extra}
        return self.manifest(name, ref, doc)[1]


@pytest.fixture
def reg(nodes):  # noqa: F811
    return Client(nodes())


def blob_files(store, algo="sha256"):
    d = os.path.join(store, "blobs", algo)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


# -- pull: the mistakes a Range can hold -----------------------------------------------
def test_blob_range_mistakes_are_416_with_a_reason(reg):
    data = os.urandom(1000)
    d = reg.blob("app", data)["digest"]
    url = f"{reg.url}/v2/app/blobs/{d}"
    for rng, code in (("bytes=abc", "UNSUPPORTED"), ("bytes=0-1,5-6", "UNSUPPORTED"),
                      ("bytes=9-2", "UNSUPPORTED"), ("bytes=1000-", "SIZE_INVALID"),
                      ("bytes=5000-6000", "SIZE_INVALID")):
        r = requests.get(url, headers={"Range": rng})
        assert r.status_code == 416 and codes(r) == [code], rng
        assert r.headers["Content-Range"] == "bytes */1000"
    r = requests.get(url, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = requests.get(url, headers={"Range": "bytes=990-5000"})
    assert r.status_code == 206 and r.content == data[990:]


# -- push: monolithic --------------------------------------------------------------
def test_single_post(reg):
    data = os.urandom(5000)
    d = digest_of(data)
    r = reg.req("POST", f"/v2/app/blobs/uploads/?digest={d}", data=data,
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"] == f"/v2/app/blobs/{d}"
    got = requests.get(reg.url + r.headers["Location"])  # a pullable blob URL
    assert got.status_code == 200 and got.content == data
    # the digest must match: nothing unverified enters the store
    r = reg.req("POST", "/v2/app/blobs/uploads/?digest=" + digest_of(b"other"), data=data)
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]
    for bad in ("sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64, "nonsense"):
        r = reg.req("POST", f"/v2/app/blobs/uploads/?digest={bad}", data=b"x")
        assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"], bad
    assert blob_files(reg.node.store) == [d[7:]]
    # no body: a client that meant POST then PUT gets a session
    r = reg.req("POST", "/v2/app/blobs/uploads/?digest=" + digest_of(b"later"))
    assert r.status_code == 202 and "/v2/app/blobs/uploads/" in r.headers["Location"]
    r = reg.req("PUT", r.headers["Location"] + "?digest=" + digest_of(b"later"), data=b"later")
    assert r.status_code == 201


def test_post_then_put(reg):
    data = os.urandom(70_000)
    d = digest_of(data)
    r = reg.req("POST", "/v2/team/app/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    uid = r.headers["Docker-Upload-UUID"]
    assert loc == f"/v2/team/app/blobs/uploads/{uid}" and len(uid) >= 32
    # no digest, a bad one: 400, and the session stays
    assert codes(reg.req("PUT", loc, data=b"")) == ["DIGEST_INVALID"]
    assert codes(reg.req("PUT", loc + "?digest=sha256:12")) == ["DIGEST_INVALID"]
    # another repository's session, a made-up one: 404 BLOB_UPLOAD_UNKNOWN
    r = reg.req("PUT", f"/v2/other/blobs/uploads/{uid}?digest={d}", data=data)
    assert r.status_code == 404 and codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    r = reg.req("PUT", f"/v2/team/app/blobs/uploads/{'0' * 32}?digest={d}", data=data)
    assert r.status_code == 404 and codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    r = reg.req("PUT", f"{loc}?digest={d}", data=data,
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/team/app/blobs/{d}"
    assert r.headers["Docker-Content-Digest"] == d
    assert requests.get(reg.url + r.headers["Location"]).content == data
    assert reg.req("GET", loc).status_code == 404  # the session is closed


# -- push: chunked -----------------------------------------------------------------
def test_chunked_upload(reg):
    data = os.urandom(300_000)
    d = digest_of(data)
    r = reg.req("POST", "/v2/app/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202
    loc = r.headers["Location"]
    r = reg.req("PATCH", loc, data=data[:100_000], headers={
        "Content-Type": "application/octet-stream", "Content-Range": "0-99999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    loc = r.headers["Location"]  # each chunk goes where the last answer says
    # out of order: 416, with where the upload is
    for cr in ("5-14", "100001-100010", "0-9"):
        r = reg.req("PATCH", loc, data=b"x" * 10, headers={"Content-Range": cr})
        assert r.status_code == 416 and codes(r) == ["BLOB_UPLOAD_INVALID"], cr
        assert r.headers["Range"] == "0-99999" and r.headers["Location"] == loc
    r = reg.req("PATCH", loc, data=b"x" * 10, headers={"Content-Range": "bytes x-y"})
    assert r.status_code == 400 and codes(r) == ["BLOB_UPLOAD_INVALID"]
    r = reg.req("PATCH", loc, data=b"x" * 10, headers={"Content-Range": "100000-100019"})
    assert r.status_code == 400 and codes(r) == ["SIZE_INVALID"]
    # status: 204, Location, Range
    r = reg.req("GET", loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-99999"
    assert r.headers["Location"] == loc and r.content == b""
    r = reg.req("PATCH", loc, data=data[100_000:200_000],
                headers={"Content-Range": "100000-199999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-199999"
    # the last chunk in the closing PUT, with its range
    r = reg.req("PUT", f"{loc}?digest={d}", data=data[200_000:],
                headers={"Content-Range": "200000-299999"})
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/app/blobs/{d}"
    assert requests.get(reg.url + f"/v2/app/blobs/{d}").content == data
    # the last chunk by PATCH, then a PUT without a body
    other = os.urandom(1000)
    loc = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    assert reg.req("PATCH", loc, data=other, headers={"Content-Range": "0-999"}).ok
    r = reg.req("PUT", f"{loc}?digest={digest_of(other)}")
    assert r.status_code == 201 and requests.get(
        reg.url + f"/v2/app/blobs/{digest_of(other)}").content == other
    # a chunk streamed without Content-Range (docker's way) is appended too
    loc = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    assert reg.req("PATCH", loc, data=iter([b"ab", b"cd"])).headers["Range"] == "0-3"
    assert reg.req("PUT", f"{loc}?digest={digest_of(b'abcd')}").status_code == 201


def test_an_out_of_order_closing_put_keeps_the_session(reg):
    """The conformance suite's "chunked out-of-order and put chunk": a closing
    PUT whose chunk is out of order is 416, and the session goes on."""
    data = os.urandom(3000)
    d = digest_of(data)
    loc = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    assert reg.req("PATCH", loc, data=data[:1000], headers={"Content-Range": "0-999"}).ok
    r = reg.req("PUT", f"{loc}?digest={d}", data=data[2000:], headers={
        "Content-Range": "2000-2999"})
    assert r.status_code == 416 and r.headers["Location"] == loc
    r = reg.req("GET", f"{loc}?digest={d}")
    assert r.status_code == 204 and r.headers["Range"] == "0-999"
    assert reg.req("PATCH", loc, data=data[1000:2000],
                   headers={"Content-Range": "1000-1999"}).status_code == 202
    r = reg.req("PUT", f"{loc}?digest={d}", data=data[2000:],
                headers={"Content-Range": "2000-2999"})
    assert r.status_code == 201
    # the empty blob, by a single POST; a mount without from
    empty = digest_of(b"")
    assert reg.req("POST", f"/v2/app/blobs/uploads/?digest={empty}").status_code == 201
    assert requests.head(f"{reg.url}/v2/app/blobs/{empty}").headers["Content-Length"] == "0"
    r = reg.req("POST", f"/v2/other/blobs/uploads/?mount={d}")
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/other/blobs/{d}"


def test_a_chunk_cut_off_midway_leaves_the_upload_resumable(reg):
    data = os.urandom(200_000)
    loc = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    assert reg.req("PATCH", loc, data=data[:50_000], headers={"Content-Range": "0-49999"}).ok
    with socket.create_connection(("127.0.0.1", reg.node.port)) as s:
        s.sendall((f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: {reg.auth['Authorization']}"
                   "\r\nContent-Range: 50000-149999\r\nContent-Length: 100000\r\n\r\n").encode()
                  + data[50_000:90_000])
        time.sleep(0.5)
    for _ in range(100):  # the cut is seen once the server reads EOF
        r = reg.req("GET", loc)
        if r.headers["Range"] == "0-49999":
            break
        time.sleep(0.1)
    assert r.status_code == 204 and r.headers["Range"] == "0-49999"
    assert reg.req("PATCH", loc, data=data[50_000:], headers={
        "Content-Range": "50000-199999"}).headers["Range"] == "0-199999"
    assert reg.req("PUT", f"{loc}?digest={digest_of(data)}").status_code == 201


def test_cancel_an_upload(reg):
    loc = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    reg.req("PATCH", loc, data=b"x" * 1000)
    tmp = [n for n in os.listdir(os.path.join(reg.node.store, "blobs", "sha256"))
           if n.startswith(".upload-")]
    assert len(tmp) == 1
    r = reg.req("DELETE", loc, headers={"Content-Length": "0"})
    assert r.status_code == 204
    assert not os.path.exists(os.path.join(reg.node.store, "blobs", "sha256", tmp[0]))
    r = reg.req("GET", loc)
    assert r.status_code == 404 and codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    assert codes(reg.req("DELETE", loc)) == ["BLOB_UPLOAD_UNKNOWN"]


def test_upload_sessions_expire_and_their_files_go(nodes, tmp_path):  # noqa: F811
    store = tmp_path / "exp-store"
    (store / "blobs" / "sha256").mkdir(parents=True)
    orphan = store / "blobs" / "sha256" / ".upload-left-by-a-dead-node"
    orphan.write_bytes(b"x" * 100)
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    fresh = store / "blobs" / "sha256" / ".tmp-a-build-writing-now"
    fresh.write_bytes(b"y")
    reg = Client(nodes(str(store), {"upload_expiry": 2.0}))
    loc = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    assert reg.req("PATCH", loc, data=b"z" * 1000).status_code == 202
    assert not orphan.exists()  # removed at start
    keep = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    blobdir = store / "blobs" / "sha256"

    def uploads():
        return [n for n in os.listdir(blobdir) if n.startswith(".upload-")]
    assert len(uploads()) == 2
    deadline = time.monotonic() + 30
    while len(uploads()) == 2:  # (a GET of the status would keep it alive)
        assert reg.req("GET", keep).status_code == 204  # touched: stays
        assert time.monotonic() < deadline, "the upload never expired"
        time.sleep(0.3)
    r = reg.req("GET", loc)
    assert r.status_code == 404 and codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    assert reg.req("GET", keep).status_code == 204 and len(uploads()) == 1
    assert fresh.exists()  # not an upload's


# -- push: mount -------------------------------------------------------------------
def test_cross_repository_mount(reg):
    desc = reg.blob("src", b"shared layer")
    r = reg.req("POST", f"/v2/dst/blobs/uploads/?mount={desc['digest']}&from=src")
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/dst/blobs/{desc['digest']}"
    assert r.headers["Docker-Content-Digest"] == desc["digest"]
    assert requests.get(reg.url + r.headers["Location"]).content == b"shared layer"
    # not here: an upload session instead (202), which works as any other
    missing = digest_of(b"not here")
    r = reg.req("POST", f"/v2/dst/blobs/uploads/?mount={missing}&from=src")
    assert r.status_code == 202 and "/v2/dst/blobs/uploads/" in r.headers["Location"]
    r = reg.req("PUT", r.headers["Location"] + f"?digest={missing}", data=b"not here")
    assert r.status_code == 201
    r = reg.req("POST", "/v2/dst/blobs/uploads/?mount=sha256:bad&from=src")
    assert r.status_code == 202


# -- push: manifests ---------------------------------------------------------------
def test_push_manifest_by_tag_and_by_digest(reg):
    desc = reg.image("app", "v1", b"1")
    r = requests.get(f"{reg.url}/v2/app/manifests/v1")
    assert r.status_code == 200 and digest_of(r.content) == desc["digest"]
    assert r.headers["Content-Type"] == OCI_MANIFEST
    doc = json.loads(r.content)
    doc["annotations"] = {"pushed": "by digest"}
    data = json.dumps(doc, indent=1).encode()  # stored in the exact bytes given
    d = digest_of(data)
    r = reg.req("PUT", f"/v2/app/manifests/{d}?tag=2.0&tag=2&tag=stable", data=data,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/app/manifests/{d}"
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["OCI-Tag"] == "2.0, 2, stable"
    for ref in (d, "2.0", "2", "stable"):
        got = requests.get(f"{reg.url}/v2/app/manifests/{ref}")
        assert got.content == data and got.headers["Docker-Content-Digest"] == d
    # by digest without tags: the repository holds it untagged
    doc["annotations"] = {"untagged": "yes"}
    r, untagged = reg.manifest("app", digest_of(json.dumps(doc).encode()), doc)
    assert requests.get(f"{reg.url}/v2/app/manifests/{untagged['digest']}").status_code == 200
    assert "untagged" not in str(requests.get(f"{reg.url}/v2/app/tags/list").json())
    # ... and only that repository
    r = requests.get(f"{reg.url}/v2/else/manifests/{untagged['digest']}")
    assert r.status_code == 404 and codes(r) == ["NAME_UNKNOWN"]
    # a digest that is not the body's
    r = reg.req("PUT", f"/v2/app/manifests/{digest_of(b'x')}", data=data,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]
    # no Content-Type: the mediaType field says
    r = reg.req("PUT", "/v2/app/manifests/nocontenttype", data=data)
    assert r.status_code == 201


def test_manifest_mistakes_are_the_specs_errors_never_500(reg):
    good = reg.image("app", "v1")
    man = json.loads(requests.get(f"{reg.url}/v2/app/manifests/v1").content)
    config, layer = man["config"], man["layers"][0]

    def with_(**kw):
        return json.dumps({**man, **kw}).encode()
    cases = [
        (b"", "MANIFEST_INVALID"), (b"{not json", "MANIFEST_INVALID"),
        (b"[" * 100_000, "MANIFEST_INVALID"), (b"[]", "MANIFEST_INVALID"),
        (b'"x"', "MANIFEST_INVALID"), (b"\xff\xfe", "MANIFEST_INVALID"),
        (with_(schemaVersion=1), "MANIFEST_INVALID"),
        (with_(schemaVersion=True), "MANIFEST_INVALID"),
        (with_(mediaType=OCI_INDEX), "MANIFEST_INVALID"),
        (with_(mediaType=5), "MANIFEST_INVALID"),
        (with_(config="x"), "MANIFEST_INVALID"), (with_(config=None), "MANIFEST_INVALID"),
        (with_(config={**config, "digest": "sha256:12"}), "MANIFEST_INVALID"),
        (with_(config={**config, "digest": "sha256:../../etc"}), "MANIFEST_INVALID"),
        (with_(config={**config, "size": -1}), "MANIFEST_INVALID"),
        (with_(config={**config, "size": "12"}), "MANIFEST_INVALID"),
        (with_(config={**config, "size": config["size"] + 1}), "MANIFEST_INVALID"),
        (with_(config={k: v for k, v in config.items() if k != "mediaType"}),
         "MANIFEST_INVALID"),
        (with_(layers=5), "MANIFEST_INVALID"), (with_(layers=[1]), "MANIFEST_INVALID"),
        (with_(layers=[{**layer, "annotations": {"a": 1}}]), "MANIFEST_INVALID"),
        (with_(annotations=[]), "MANIFEST_INVALID"),
        (with_(subject="sha256:" + "0" * 64), "MANIFEST_INVALID"),
        (with_(subject={"mediaType": OCI_MANIFEST, "digest": "x", "size": 1}),
         "MANIFEST_INVALID"),
        (with_(artifactType=7), "MANIFEST_INVALID"),
        (with_(config={**config, "digest": "sha256:" + "2" * 64}), "MANIFEST_BLOB_UNKNOWN"),
    ]
    for body, code in cases:
        r = reg.req("PUT", "/v2/app/manifests/bad", data=body,
                    headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 400, (body[:80], r.status_code, r.text[:300])
        assert codes(r)[0] == code, (body[:80], r.text[:300])
    # every blob missing is named, one error each
    r = reg.req("PUT", "/v2/app/manifests/bad", data=with_(layers=[
        {**layer, "digest": digest_of(b"1")}, {**layer, "digest": digest_of(b"2")}]),
        headers={"Content-Type": OCI_MANIFEST})
    assert codes(r) == ["MANIFEST_BLOB_UNKNOWN"] * 2
    assert {e["detail"]["digest"] for e in r.json()["errors"]} == {digest_of(b"1"),
                                                                  digest_of(b"2")}
    for ctype in ("text/plain", "application/vnd.docker.distribution.manifest.v1+json"):
        r = reg.req("PUT", "/v2/app/manifests/bad",
                    data=json.dumps({k: v for k, v in man.items() if k != "mediaType"}),
                    headers={"Content-Type": ctype})
        assert r.status_code == 400 and codes(r) == ["MANIFEST_INVALID"], ctype
    for ref, code in (("a:b", "DIGEST_INVALID"), ("-x", "MANIFEST_INVALID"),
                      ("sha256:" + "0" * 63, "DIGEST_INVALID"), ("x" * 129, "MANIFEST_INVALID")):
        r = reg.req("PUT", f"/v2/app/manifests/{ref}", data=with_(),
                    headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 400 and codes(r) == [code], ref
    r = reg.req("PUT", f"/v2/app/manifests/{good['digest'][:-1]}0?tag=-bad", data=with_())
    assert r.status_code == 400
    r = reg.req("PUT", "/v2/Bad/manifests/x", data=with_(),
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and codes(r) == ["NAME_INVALID"]
    assert requests.get(f"{reg.url}/v2/app/manifests/bad").status_code == 404


def test_manifests_up_to_4mib_and_413_above(reg, nodes):  # noqa: F811
    base = reg.image("big", "base")
    man = json.loads(requests.get(f"{reg.url}/v2/big/manifests/base").content)

    def sized(n):
        doc = {**man, "annotations": {"pad": ""}}
        pad = n - len(json.dumps(doc).encode())
        doc["annotations"]["pad"] = "x" * pad
        data = json.dumps(doc).encode()
        assert len(data) == n
        return data
    data = sized(int(3.9 * (1 << 20)))
    r = reg.req("PUT", "/v2/big/manifests/large", data=data,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text[:300]
    got = requests.get(f"{reg.url}/v2/big/manifests/large")
    assert got.content == data and got.headers["Docker-Content-Digest"] == digest_of(data)
    assert base["digest"] != digest_of(data)
    huge = sized(5 << 20)
    r = reg.req("PUT", "/v2/big/manifests/huge", data=huge,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413 and codes(r) == ["SIZE_INVALID"]
    assert "max_manifest" in r.json()["errors"][0]["message"]
    # without a Content-Length (chunked): counted as it comes
    r = reg.req("PUT", "/v2/big/manifests/huge", data=iter([huge[i:i + 65536] for i in
                                                            range(0, len(huge), 65536)]),
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413 and codes(r) == ["SIZE_INVALID"]
    assert requests.get(f"{reg.url}/v2/big/manifests/huge").status_code == 404
    # the limit is [share] max_manifest
    small = Client(nodes(None, {"max_manifest": 1 << 20}))
    small.image("big", "base")
    r = small.req("PUT", "/v2/big/manifests/large", data=data,
                  headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413 and codes(r) == ["SIZE_INVALID"]


def test_sha512_blobs_and_manifests(reg):
    data = os.urandom(100_000)
    d512 = digest_of(data, "sha512")
    assert reg.blob("app", data, "sha512")["digest"] == d512
    assert blob_files(reg.node.store, "sha512") == [d512[7:]]
    r = requests.get(f"{reg.url}/v2/app/blobs/{d512}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == d512
    h = requests.head(f"{reg.url}/v2/app/blobs/{d512}")
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(data)
    r = requests.get(f"{reg.url}/v2/app/blobs/{d512}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    # chunked, with digest-algorithm
    other = os.urandom(3000)
    r = reg.req("POST", "/v2/app/blobs/uploads/?digest-algorithm=sha512")
    assert r.status_code == 202
    loc = r.headers["Location"]
    reg.req("PATCH", loc, data=other[:1000], headers={"Content-Range": "0-999"})
    r = reg.req("PUT", f"{loc}?digest={digest_of(other, 'sha512')}", data=other[1000:])
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest_of(other,
                                                                                    "sha512")
    # a session started as sha256 and closed with a sha512 digest is hashed again
    third = os.urandom(2000)
    loc = reg.req("POST", "/v2/app/blobs/uploads/").headers["Location"]
    r = reg.req("PUT", f"{loc}?digest={digest_of(third, 'sha512')}", data=third)
    assert r.status_code == 201
    r = reg.req("POST", "/v2/app/blobs/uploads/?digest-algorithm=md5")
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]
    # a manifest by sha512 digest, naming sha512 blobs
    cfg = reg.blob("app", b"{}", "sha512")
    doc = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {**cfg, "mediaType": OCI_CONFIG},
                      "layers": [{"mediaType": LAYER, "digest": d512, "size": len(data)}]}
                     ).encode()
    m512 = digest_of(doc, "sha512")
    r = reg.req("PUT", f"/v2/app/manifests/{m512}?tag=five-twelve", data=doc,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == m512
    for ref in (m512, "five-twelve"):
        r = requests.get(f"{reg.url}/v2/app/manifests/{ref}")
        assert r.content == doc and r.headers["Docker-Content-Digest"] == m512
    r = reg.req("PUT", f"/v2/app/manifests/{digest_of(b'x', 'sha512')}", data=doc,
                headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]
    # gc keeps them: the tag reaches them
    emergence(reg.node.store, "gc")
    assert requests.get(f"{reg.url}/v2/app/blobs/{d512}").status_code == 200
    assert emergence(reg.node.store, "verify").returncode == 0


# -- content discovery: tags -------------------------------------------------------
def test_tags_list_pagination(reg):
    desc = reg.image("app", "latest")
    data = requests.get(f"{reg.url}/v2/app/manifests/latest").content
    for tag in ("b", "a", "C", "10", "a.1", "Z_"):
        reg.req("PUT", f"/v2/app/manifests/{tag}", data=data,
                headers={"Content-Type": OCI_MANIFEST})
    everything = ["10", "C", "Z_", "a", "a.1", "b", "latest"]  # ASCIIbetical
    r = requests.get(f"{reg.url}/v2/app/tags/list")
    assert r.status_code == 200 and r.json() == {"name": "app", "tags": everything}
    assert r.headers["Content-Type"].startswith("application/json")
    seen, url = [], f"{reg.url}/v2/app/tags/list?n=3"
    while url:  # follow the Link header, as clients should
        r = requests.get(url)
        assert len(r.json()["tags"]) <= 3
        seen += r.json()["tags"]
        url = r.links.get("next", {}).get("url")
        url = url and reg.url + url
    assert seen == everything
    r = requests.get(f"{reg.url}/v2/app/tags/list?n=3")
    assert r.json()["tags"] == ["10", "C", "Z_"]
    assert r.headers["Link"] == '</v2/app/tags/list?n=3&last=Z_>; rel="next"'
    r = requests.get(f"{reg.url}/v2/app/tags/list?n=3&last=Z_")
    assert r.json()["tags"] == ["a", "a.1", "b"]
    r = requests.get(f"{reg.url}/v2/app/tags/list?last=b")
    assert r.json()["tags"] == ["latest"] and "Link" not in r.headers
    r = requests.get(f"{reg.url}/v2/app/tags/list?n=0")
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = requests.get(f"{reg.url}/v2/app/tags/list?n=100")
    assert r.json()["tags"] == everything and "Link" not in r.headers
    for bad in ("-1", "x"):
        r = requests.get(f"{reg.url}/v2/app/tags/list?n={bad}")
        assert r.status_code == 400 and codes(r) == ["UNSUPPORTED"]
    r = requests.get(f"{reg.url}/v2/nosuch/tags/list")
    assert r.status_code == 404 and codes(r) == ["NAME_UNKNOWN"]
    assert desc["digest"]


def test_oras_lists_tags_page_by_page(reg):
    oras = pytest.importorskip("oras.client")
    data = requests.get(f"{reg.url}/v2/app/manifests/{reg.image('app', 't0')['digest']}"
                        ).content
    for i in range(1, 7):
        reg.req("PUT", f"/v2/app/manifests/t{i}", data=data,
                headers={"Content-Type": OCI_MANIFEST})
    client = oras.OrasClient(hostname=f"127.0.0.1:{reg.node.port}", insecure=True)
    assert client.get_tags(f"127.0.0.1:{reg.node.port}/app", N=4) == ["t0", "t1", "t2", "t3"]
    assert client.get_tags(f"127.0.0.1:{reg.node.port}/app") == [f"t{i}" for i in range(7)]


# -- content discovery: referrers --------------------------------------------------
def referrer(reg, name, subject, kind, seed, ref=None, index=False, **extra):
    """An artifact pushed with SUBJECT (by digest unless REF); its descriptor."""
    if index:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], **extra,
               "subject": subject}
        data = json.dumps(doc).encode()
        r, desc = reg.manifest(name, ref or digest_of(data), doc, media=OCI_INDEX)
    else:
        empty = reg.blob(name, b"{}")
        layer = reg.blob(name, seed)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, **({"artifactType": kind}
                                                                  if kind else {}),
               "config": {**empty, "mediaType": "application/vnd.oci.empty.v1+json"},
               "layers": [layer], "subject": subject, **extra}
        data = json.dumps(doc).encode()
        r, desc = reg.manifest(name, ref or digest_of(data), doc)
    assert r.headers["OCI-Subject"] == subject["digest"]  # the registry took the subject
    return desc


def referrers(reg, name, digest, query=""):
    r = requests.get(f"{reg.url}/v2/{name}/referrers/{digest}{query}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == OCI_INDEX
    body = r.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    return r, body["manifests"]


def test_referrers(reg):
    subject = reg.image("app", "v1", b"s")
    # an artifact may come before its subject: accepted all the same
    early_subject = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"later"), "size": 5}
    early = referrer(reg, "app", early_subject, SIG, b"early")
    sbom = referrer(reg, "app", subject, SBOM, b"sbom",
                    annotations={"org.example.sbom.format": "json"})
    sig = referrer(reg, "app", subject, SIG, b"sig", ref="sig-tag")
    # no artifactType: the config's mediaType stands for it
    plain = referrer(reg, "app", subject, None, b"plain")
    idx = referrer(reg, "app", subject, None, b"", index=True,
                   annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"})
    r, found = referrers(reg, "app", subject["digest"])
    assert "OCI-Filters-Applied" not in r.headers
    by = {d["digest"]: d for d in found}
    assert set(by) == {sbom["digest"], sig["digest"], plain["digest"], idx["digest"]}
    assert by[sbom["digest"]] == {"mediaType": OCI_MANIFEST, "digest": sbom["digest"],
                                  "size": sbom["size"], "artifactType": SBOM,
                                  "annotations": {"org.example.sbom.format": "json"}}
    assert by[sig["digest"]]["artifactType"] == SIG
    assert by[plain["digest"]]["artifactType"] == "application/vnd.oci.empty.v1+json"
    assert by[idx["digest"]]["mediaType"] == OCI_INDEX and "artifactType" not in by[
        idx["digest"]]
    assert by[idx["digest"]]["annotations"] == {
        "org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    # the artifactType filter
    r, found = referrers(reg, "app", subject["digest"], f"?artifactType={SBOM}")
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in found] == [sbom["digest"]]
    r, found = referrers(reg, "app", subject["digest"], "?artifactType=application/none")
    assert found == [] and r.headers["OCI-Filters-Applied"] == "artifactType"
    # the early one, under its own subject; nothing refers: an empty index, not 404
    assert [d["digest"] for d in referrers(reg, "app", early_subject["digest"])[1]] == [
        early["digest"]]
    assert referrers(reg, "app", digest_of(b"nothing"))[1] == []
    assert referrers(reg, "nosuchrepo", subject["digest"])[1] == []
    assert referrers(reg, "app", digest_of(b"x", "sha512"))[1] == []
    # per repository
    assert referrers(reg, "other", subject["digest"])[1] == []
    for bad in ("sha256:12", "latest", "sha256:" + "0" * 64 + "0"):
        r = requests.get(f"{reg.url}/v2/app/referrers/{bad}")
        assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"], bad
    # the referrers tag, for clients without the API, holds the same index
    tag = "sha256-" + subject["digest"][7:]
    r = requests.get(f"{reg.url}/v2/app/manifests/{tag}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    assert sorted(d["digest"] for d in r.json()["manifests"]) == sorted(by)
    # a referrer deleted leaves both lists
    assert reg.req("DELETE", f"/v2/app/manifests/{sbom['digest']}").status_code == 202
    assert sbom["digest"] not in str(referrers(reg, "app", subject["digest"])[1])
    assert sbom["digest"] not in requests.get(f"{reg.url}/v2/app/manifests/{tag}").text
    for d in (sig, plain, idx):
        assert reg.req("DELETE", f"/v2/app/manifests/{d['digest']}").status_code == 202
    assert referrers(reg, "app", subject["digest"])[1] == []
    assert requests.get(f"{reg.url}/v2/app/manifests/{tag}").status_code == 404


def test_a_referrers_tag_pushed_by_an_old_client_counts(reg):
    """Manifests an index under the referrers tag lists are referrers (the
    spec's "Enabling the Referrers API"), until deleted by digest."""
    subject = reg.image("app", "v1", b"s")
    sig = referrer(reg, "app", subject, SIG, b"sig", ref="will-go")
    assert reg.req("DELETE", "/v2/app/manifests/will-go").status_code == 202
    tag = "sha256-" + subject["digest"][7:]
    old = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sig["digest"], "size": sig["size"],
         "artifactType": SIG}]}
    reg.manifest("app", tag, old, media=OCI_INDEX)
    assert [d["digest"] for d in referrers(reg, "app", subject["digest"])[1]] == [
        sig["digest"]]
    assert reg.req("DELETE", f"/v2/app/manifests/{sig['digest']}").status_code == 202
    assert referrers(reg, "app", subject["digest"])[1] == []


def test_oras_attaches_an_sbom_that_the_referrers_list_shows(reg, tmp_path, monkeypatch):
    oras = pytest.importorskip("oras.client")
    from oras.oci import Subject
    subject = reg.image("app", "v1", b"s")
    host = f"127.0.0.1:{reg.node.port}"
    client = oras.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth("any", reg.node.token)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sbom.json").write_text('{"packages": []}')
    (tmp_path / "config.json").write_text("{}")
    r = client.push(f"{host}/app:v1-sbom", files=["sbom.json"], subject=Subject(
        OCI_MANIFEST, subject["digest"], subject["size"]),
        manifest_config=f"config.json:{SBOM}", manifest_annotations={"made-by": "oras"})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == subject["digest"]
    _, found = referrers(reg, "app", subject["digest"], f"?artifactType={SBOM}")
    assert len(found) == 1 and found[0]["digest"] == r.headers["Docker-Content-Digest"]
    assert found[0]["annotations"] == {"made-by": "oras"}
    assert referrers(reg, "app", subject["digest"], f"?artifactType={SIG}")[1] == []
    # and oras pulls the SBOM back
    out = tmp_path / "out"
    out.mkdir()
    files = client.pull(f"{host}/app:v1-sbom", outdir=str(out))
    assert open(files[0]).read() == '{"packages": []}'


def test_oras_pushes_in_chunks_and_pulls_back(reg, tmp_path, monkeypatch):
    oras = pytest.importorskip("oras.client")
    host = f"127.0.0.1:{reg.node.port}"
    client = oras.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth("any", reg.node.token)
    monkeypatch.chdir(tmp_path)
    data = os.urandom(300_000)
    (tmp_path / "data.bin").write_bytes(data)
    r = client.push(f"{host}/files:v1", files=["data.bin"], do_chunked=True,
                    chunk_size=64 * 1024)  # POST, 5 PATCHes with Content-Range, PUT
    assert r.status_code == 201
    assert requests.get(f"{reg.url}/v2/files/blobs/{digest_of(data)}").content == data
    out = tmp_path / "out"
    out.mkdir()
    files = client.pull(f"{host}/files:v1", outdir=str(out))
    assert open(files[0], "rb").read() == data


# -- content management ------------------------------------------------------------
def test_delete_tags_and_manifests(reg):
    a = reg.image("app", "a", b"a")
    data = requests.get(f"{reg.url}/v2/app/manifests/a").content
    for tag in ("a2", "a3"):
        reg.req("PUT", f"/v2/app/manifests/{tag}", data=data,
                headers={"Content-Type": OCI_MANIFEST})
    # by tag: that tag only
    r = reg.req("DELETE", "/v2/app/manifests/a2")
    assert r.status_code == 202 and r.content == b""
    r = requests.get(f"{reg.url}/v2/app/manifests/a2")
    assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]
    assert requests.get(f"{reg.url}/v2/app/manifests/a").status_code == 200
    assert requests.get(f"{reg.url}/v2/app/tags/list").json()["tags"] == ["a", "a3"]
    # by digest: every tag pointing at it
    b = reg.image("app", "b", b"b")
    assert reg.req("DELETE", f"/v2/app/manifests/{a['digest']}").status_code == 202
    for ref in ("a", "a3", a["digest"]):
        r = requests.get(f"{reg.url}/v2/app/manifests/{ref}")
        assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"], ref
        assert requests.head(f"{reg.url}/v2/app/manifests/{ref}").status_code == 404
    assert requests.get(f"{reg.url}/v2/app/manifests/b").status_code == 200
    # what is not there
    r = reg.req("DELETE", f"/v2/app/manifests/{a['digest']}")
    assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]
    r = reg.req("DELETE", "/v2/app/manifests/nosuch")
    assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]
    r = reg.req("DELETE", f"/v2/nosuch/manifests/{b['digest']}")
    assert r.status_code == 404 and codes(r) == ["NAME_UNKNOWN"]
    for bad, code in (("sha256:12", "DIGEST_INVALID"), ("-x", "MANIFEST_INVALID")):
        r = reg.req("DELETE", f"/v2/app/manifests/{bad}")
        assert r.status_code == 400 and codes(r) == [code]
    # a platform an index lists goes with the index, not alone
    idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [b]}
    reg.req("DELETE", "/v2/app/manifests/b")
    _, idesc = reg.manifest("app", "multi", idx, media=OCI_INDEX)
    assert requests.get(f"{reg.url}/v2/app/manifests/{b['digest']}").status_code == 200
    r = reg.req("DELETE", f"/v2/app/manifests/{b['digest']}")
    assert r.status_code == 405 and codes(r) == ["UNSUPPORTED"] and "multi" in r.text
    assert reg.req("DELETE", f"/v2/app/manifests/{idesc['digest']}").status_code == 202
    assert requests.get(f"{reg.url}/v2/app/manifests/{b['digest']}").status_code == 404


def test_delete_blobs(reg):
    desc = reg.image("app", "v1", b"blobs")
    man = requests.get(f"{reg.url}/v2/app/manifests/v1").json()
    layer = man["layers"][0]["digest"]
    r = reg.req("DELETE", f"/v2/app/blobs/{layer}")  # still named by app:v1
    assert r.status_code == 405 and codes(r) == ["UNSUPPORTED"] and "app:v1" in r.text
    assert requests.get(f"{reg.url}/v2/app/blobs/{layer}").status_code == 200
    assert reg.req("DELETE", f"/v2/app/manifests/{desc['digest']}").status_code == 202
    r = reg.req("DELETE", f"/v2/app/blobs/{layer}")
    assert r.status_code == 202
    r = requests.get(f"{reg.url}/v2/app/blobs/{layer}")
    assert r.status_code == 404 and codes(r) == ["BLOB_UNKNOWN"]
    r = reg.req("DELETE", f"/v2/app/blobs/{layer}")
    assert r.status_code == 404 and codes(r) == ["BLOB_UNKNOWN"]
    d512 = reg.blob("app", b"five-twelve", "sha512")["digest"]
    assert reg.req("DELETE", f"/v2/app/blobs/{d512}").status_code == 202
    assert blob_files(reg.node.store, "sha512") == []
    for bad in ("sha256:12", "sha256:../../../etc/passwd", "md5:" + "0" * 32):
        r = reg.req("DELETE", f"/v2/app/blobs/{bad}")
        assert r.status_code in (400, 404), bad
        if r.status_code == 400:
            assert codes(r) == ["DIGEST_INVALID"]
    assert os.path.exists("/etc/passwd")


def test_gc_keeps_what_tags_manifests_and_referrers_name(reg):
    store = reg.node.store
    tagged = reg.image("app", "v1", b"t")
    sig = referrer(reg, "app", tagged, SIG, b"signature bytes")
    platform = reg.image("app", "p1", b"p")  # an index's platform, pushed by digest
    reg.req("DELETE", "/v2/app/manifests/p1")
    data = requests.get(f"{reg.url}/v2/app/manifests/{tagged['digest']}").content
    reg.req("PUT", f"/v2/app/manifests/{tagged['digest']}", data=data,
            headers={"Content-Type": OCI_MANIFEST})
    pdata = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": json.loads(
        data)["config"], "layers": [reg.blob("app", b"layer p")]}).encode()
    reg.req("PUT", f"/v2/app/manifests/{digest_of(pdata)}", data=pdata,
            headers={"Content-Type": OCI_MANIFEST})
    reg.manifest("app", "multi", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(pdata), "size": len(pdata)}]},
        media=OCI_INDEX)
    loose = reg.blob("app", b"nobody names me")
    emergence(store, "gc")
    files = blob_files(store)
    assert loose["digest"][7:] not in files
    for name, ref in (("tagged", tagged["digest"]), ("signature", sig["digest"]),
                      ("platform", digest_of(pdata))):
        r = requests.get(f"{reg.url}/v2/app/manifests/{ref}")
        assert r.status_code == 200, name
        for d in [r.json()["config"]] + r.json()["layers"]:
            assert d["digest"][7:] in files, (name, d)
    assert requests.get(f"{reg.url}/v2/app/blobs/{digest_of(b'signature bytes')}").ok
    # once the signature is deleted, gc takes its layer
    reg.req("DELETE", f"/v2/app/manifests/{sig['digest']}")
    emergence(store, "gc")
    assert digest_of(b"signature bytes")[7:] not in blob_files(store)
    assert platform["digest"]


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_skopeo_delete_deletes(built, nodes):  # noqa: F811
    store, digest = built
    n = nodes()
    ref = f"docker://127.0.0.1:{n.port}/team/hello:v1"
    p = subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
                        "--dest-creds", f"any:{n.token}", f"oci:{store}:hello-c:latest", ref],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["skopeo", "delete", "--tls-verify=false", ref], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0  # no credentials: refused
    assert requests.get(f"{n.url}/v2/team/hello/manifests/v1").status_code == 200
    p = subprocess.run(["skopeo", "delete", "--tls-verify=false", "--creds", f"any:{n.token}",
                        ref], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = requests.get(f"{n.url}/v2/team/hello/manifests/v1")
    assert r.status_code == 404
    r = requests.get(f"{n.url}/v2/team/hello/manifests/{digest}")
    assert r.status_code == 404
    emergence(n.store, "gc")
    assert blob_files(n.store) == []


def test_node_toml_sets_the_limits(tmp_path):
    """[share] max_manifest and upload_expiry from node.toml, through a real
    `emergence node start`; a bad value is one line naming the key (in
    `node status`: the node runs, its share part failed)."""
    from conftest import emergence_command
    from sharelib import free_port
    port = free_port()
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\nplanner = false\nlisten = "127.0.0.1:{port}"\n'
                   f'state_dir = "{tmp_path / "st"}"\nrun_dir = "{tmp_path / "run"}"\n'
                   f'services = ["share"]\n[share]\nstore = "{tmp_path / "store"}"\n'
                   'max_manifest = 2048\nupload_expiry = 3600\n')

    def node(verb, config=cfg):
        return subprocess.run(emergence_command() + ["node", verb, "--config", str(config)],
                              capture_output=True, text=True, timeout=90)
    p = node("start")
    assert p.returncode == 0, p.stderr
    try:
        with open(tmp_path / "st" / "node.token") as f:
            n = type("N", (), {"url": f"http://127.0.0.1:{port}", "port": port,
                               "token": f.read().strip(), "store": str(tmp_path / "store")})
        reg = Client(n)
        reg.image("app", "v1")
        man = json.loads(requests.get(f"{n.url}/v2/app/manifests/v1").content)
        man["annotations"] = {"pad": "x" * 3000}
        r = reg.req("PUT", "/v2/app/manifests/v2", data=json.dumps(man),
                    headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 413 and "2048" in r.text
    finally:
        node("stop")
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("max_manifest = 2048", "max_manifest = 12"))
    assert node("start", bad).returncode == 0  # the node runs; its share part says why not
    try:
        status = node("status", bad).stdout
        assert "share: failed" in status and "max_manifest must be" in status, status
        assert "Traceback" not in status
    finally:
        node("stop", bad)
