"""The OCI distribution spec's Push section (and the Range mistakes of Pull)
against a node, point by point (status, headers, body, error code), over real
HTTP.  Pull is tests/share/test_registry.py's; Content Discovery and Content
Management are test_distribution_discovery.py's."""

import json
import os
import socket
import time

import pytest
import requests
from distlib import (
    LAYER,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Client,
    blob_files,
    codes,
    digest_of,
)
from sharelib import NEEDS, built, emergence, nodes  # noqa: F401

pytestmark = NEEDS


@pytest.fixture
def reg(nodes):  # noqa: F811
    return Client(nodes())


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
