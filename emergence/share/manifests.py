"""What a pushed manifest must be, and what the registry reads out of a
stored one.  A push is checked whole before anything is stored: JSON, its
type (Content-Type or mediaType, which must agree), each descriptor (a
mediaType, a sha256 or sha512 digest, a size), and the blobs and manifests
it names must be in the store with those sizes; any mistake is a 400 with
the spec's code naming the field, never a 500.  `Info` is the little the
registry needs of a stored manifest (subject, artifactType, annotations,
the manifests an index lists), parsed once per digest: a digest's bytes
never change."""

from .registry import ANY_DIGEST_RE, MANIFEST_TYPES, error

IMAGE_TYPES = ("application/vnd.oci.image.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MAX_MISSING = 10  # MANIFEST_BLOB_UNKNOWN errors listed in one answer


def _invalid(message):
    return error(400, "MANIFEST_INVALID", message)


def _descriptor(where, d):
    """D as a checked descriptor, or 400 MANIFEST_INVALID naming WHERE."""
    if not isinstance(d, dict):
        raise _invalid(f"{where} is not a descriptor (an object)")
    if not isinstance(d.get("mediaType"), str):
        raise _invalid(f"{where}.mediaType is not a string")
    if not isinstance(d.get("digest"), str) or not ANY_DIGEST_RE.match(d["digest"]):
        raise _invalid(f"{where}.digest is not a sha256 or sha512 digest")
    size = d.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _invalid(f"{where}.size is not a non-negative integer")
    if "annotations" in d:
        _annotations(f"{where}.annotations", d["annotations"])
    return d


def _annotations(where, value):
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(f"{where} is not an object of strings")


def check(data, content_type, store):
    """(manifest, its media type, [digests it names]) of DATA pushed with
    CONTENT_TYPE (None when the client sent none), or the spec's error."""
    import json
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise _invalid("the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise _invalid("the manifest is not a JSON object")
    field = manifest.get("mediaType")
    if field is not None and not isinstance(field, str):
        raise _invalid("mediaType is not a string")
    media = content_type or field
    if media is None:
        raise _invalid("no Content-Type header and no mediaType field: say which "
                       "manifest type this is")
    if media not in MANIFEST_TYPES:
        raise _invalid(f"unsupported manifest type {media[:100]!r} (take: "
                       + ", ".join(MANIFEST_TYPES) + ")")
    if field is not None and field != media:
        raise _invalid(f"mediaType {field[:100]!r} differs from Content-Type {media!r}")
    version = manifest.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise _invalid("schemaVersion must be 2")
    named = []  # (where, descriptor) that must be in the store
    if media in IMAGE_TYPES:
        named.append(("config", _descriptor("config", manifest.get("config"))))
        layers = manifest.get("layers", [])
        if not isinstance(layers, list):
            raise _invalid("layers is not a list")
        for i, d in enumerate(layers):
            d = _descriptor(f"layers[{i}]", d)
            if not d.get("urls"):  # a foreign layer lives elsewhere
                named.append((f"layers[{i}]", d))
    else:
        items = manifest.get("manifests")
        if not isinstance(items, list):
            raise _invalid("manifests is not a list")
        named += [(f"manifests[{i}]", _descriptor(f"manifests[{i}]", d))
                  for i, d in enumerate(items)]
    if "subject" in manifest:
        _descriptor("subject", manifest["subject"])  # need not be here (yet)
    if "artifactType" in manifest and not isinstance(manifest["artifactType"], str):
        raise _invalid("artifactType is not a string")
    if "annotations" in manifest:
        _annotations("annotations", manifest["annotations"])
    _present(named, store)
    return manifest, media, [d["digest"] for _, d in named]


def _present(named, store):
    """Every descriptor of NAMED is in STORE with its size: else the spec's
    MANIFEST_BLOB_UNKNOWN (one error per blob missing) or MANIFEST_INVALID."""
    import os
    missing = []
    for where, d in named:
        try:
            size = os.stat(store.blob_path(d["digest"])).st_size
        except FileNotFoundError:
            missing.append({"code": "MANIFEST_BLOB_UNKNOWN",
                            "message": f"{where}: blob {d['digest']} unknown to this node",
                            "detail": {"digest": d["digest"]}})
            continue
        if size != d["size"]:
            raise _invalid(f"{where}.size is {d['size']}, but blob {d['digest']} has "
                           f"{size} bytes")
    if missing:
        raise error(400, "MANIFEST_BLOB_UNKNOWN", "", errors=missing[:MAX_MISSING])


class Info:
    """What the registry reads out of a stored manifest."""

    __slots__ = ("media", "size", "subject", "artifact", "annotations", "children", "blobs")

    def __init__(self, data, media):
        import json
        self.media, self.size = media, len(data)
        self.subject = self.artifact = self.annotations = None
        self.children = []  # (digest, mediaType) of the manifests an index lists
        self.blobs = set()  # the config's and layers' digests
        try:
            m = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(m, dict):
            return
        if not isinstance(self.media, str) and isinstance(m.get("mediaType"), str):
            self.media = m["mediaType"]
        subject = m.get("subject")
        if isinstance(subject, dict) and isinstance(subject.get("digest"), str) \
                and ANY_DIGEST_RE.match(subject["digest"]):
            self.subject = subject["digest"]
        config = m.get("config")
        if isinstance(m.get("artifactType"), str) and m["artifactType"]:
            self.artifact = m["artifactType"]
        elif isinstance(config, dict) and isinstance(config.get("mediaType"), str):
            self.artifact = config["mediaType"]  # the spec's rule for an image manifest
        layers = m.get("layers")
        for d in [config] + (layers if isinstance(layers, list) else []):
            if isinstance(d, dict) and isinstance(d.get("digest"), str):
                self.blobs.add(d["digest"])
        if isinstance(m.get("annotations"), dict):
            self.annotations = {k: v for k, v in m["annotations"].items()
                                if isinstance(v, str)}
        items = m.get("manifests")
        for d in items if isinstance(items, list) else ():
            if isinstance(d, dict) and isinstance(d.get("digest"), str) \
                    and ANY_DIGEST_RE.match(d["digest"]):
                self.children.append((d["digest"], d.get("mediaType")))

    def descriptor(self, digest):
        """This manifest's descriptor in a referrers list."""
        d = {"mediaType": self.media, "digest": digest, "size": self.size}
        if self.artifact:
            d["artifactType"] = self.artifact
        if self.annotations:
            d["annotations"] = self.annotations
        return d


class Infos:
    """Info per digest, read from the store once (manifests never change)."""

    MAX = 100_000

    def __init__(self, store):
        self.store = store
        self.known = {}

    def get(self, digest, media=None):
        """DIGEST's Info (MEDIA: the type it was pushed or listed with), or None
        if the store lacks it or holds a corrupt copy."""
        from ..errors import EmergenceError
        info = self.known.get(digest)
        if info is None:
            try:
                data = self.store.read(digest)  # verified
            except (EmergenceError, OSError):
                return None
            if len(self.known) >= self.MAX:
                self.known.clear()
            info = self.known[digest] = Info(data, media)
        elif info.media is None and media is not None:
            info.media = media  # first read without it (no mediaType field)
        return info

    def members(self, records):
        """{digest: mediaType} of RECORDS (a repository's index.json entries)
        and of every manifest the indexes among them list, in that order."""
        out = {}
        todo = [(d.get("digest"), d.get("mediaType")) for _, d in records]
        while todo:
            digest, media = todo.pop(0)
            if not isinstance(digest, str) or digest in out:
                continue
            out[digest] = media
            info = self.get(digest, media)
            if info is not None:
                todo += info.children
        return out
