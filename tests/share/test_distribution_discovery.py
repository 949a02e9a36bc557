"""The OCI distribution spec's Content Discovery (tags, referrers) and Content
Management (deletes, GC) sections against a node, point by point, over real
HTTP; then real clients: oras (Python) attaching an SBOM, skopeo deleting."""

import json
import os
import shutil
import subprocess

import pytest
import requests
from distlib import (
    OCI_INDEX,
    OCI_MANIFEST,
    SBOM,
    SIG,
    Client,
    blob_files,
    codes,
    digest_of,
    referrer,
)
from sharelib import NEEDS, built, emergence, nodes  # noqa: F401

pytestmark = NEEDS


@pytest.fixture
def reg(nodes):  # noqa: F811
    return Client(nodes())


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
