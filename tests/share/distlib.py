"""What the OCI distribution spec tests share: media types, a raw HTTP client
with the node token."""

import hashlib
import json
import os

import requests

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


def blob_files(store, algo="sha256"):
    d = os.path.join(store, "blobs", algo)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


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
