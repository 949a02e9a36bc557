"""A small registry client over aiohttp: references, anonymous bearer
tokens for upstream registries (Docker Hub, quay.io, ghcr.io), and push."""

import re

from ..errors import EmergenceError

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])


def parse_ref(ref):
    """'name[:tag|@digest]' -> (name, tag or digest).  A registry host, if
    given, is dropped: the peers decide where the bytes come from."""
    from .registry import DIGEST_RE, NAME_RE, TAG_RE
    name, at, digest = ref.partition("@")
    if at:
        reference = digest
        if not DIGEST_RE.match(digest):
            raise EmergenceError(f"{digest!r} is not a sha256 digest")
    else:
        name, sep, tag = ref.rpartition(":")
        if not sep or "/" in tag:
            name, tag = ref, "latest"
        reference = tag
        if not TAG_RE.match(tag):
            raise EmergenceError(f"{tag!r} is not a valid tag")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        name = rest
    if not NAME_RE.match(name):
        raise EmergenceError(f"{name!r} is not a valid repository name "
                             "(lower case letters, digits, . _ - and /)")
    return name, reference


class Upstream:
    """A registry reached over HTTPS (or HTTP), with an anonymous bearer
    token fetched when it answers 401 with a Bearer challenge."""

    def __init__(self, session, base, name):
        self.session = session
        self.base = base.rstrip("/")
        self.name = name
        self.token = None

    async def _token(self, challenge):
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise EmergenceError(f"{self.base} asks for credentials; pull from it with skopeo")
        params.setdefault("scope", f"repository:{self.name}:pull")
        async with self.session.get(realm, params=params) as r:
            if r.status != 200:
                raise EmergenceError(f"{realm} refused an anonymous token ({r.status})")
            body = await r.json(content_type=None)
        self.token = body.get("token") or body.get("access_token")

    async def request(self, method, path, headers=None):
        """An open response (the caller closes it)."""
        for _ in range(2):
            h = dict(headers or {})
            if self.token:
                h["Authorization"] = f"Bearer {self.token}"
            r = await self.session.request(method, self.base + path, headers=h)
            challenge = r.headers.get("WWW-Authenticate", "")
            if r.status == 401 and challenge.lower().startswith("bearer") and not self.token:
                r.release()
                await self._token(challenge)
                continue
            return r
        return r


async def push(session, store, image, dest, auth_header, progress=None):
    """Push IMAGE from STORE to DEST ('http[s]://host[:port]/name:tag')."""
    import os
    m = re.match(r"(https?://[^/]+)/(.+)\Z", dest)
    if not m:
        raise EmergenceError(f"{dest!r}: give the destination as http(s)://HOST[:PORT]/NAME:TAG")
    base, ref = m.groups()
    name, reference = parse_ref(ref)
    desc = store.resolve(image)
    manifest_bytes = store.read(desc["digest"])
    manifest = store.read_json(desc["digest"])
    blobs = [manifest["config"]] + manifest.get("layers", [])
    headers = {"Authorization": auth_header} if auth_header else {}
    sent = 0
    for blob in blobs:
        url = f"{base}/v2/{name}/blobs/{blob['digest']}"
        async with session.head(url) as r:
            if r.status == 200:
                continue
        path = store.blob_path(blob["digest"])
        with open(path, "rb") as f:
            async with session.post(f"{base}/v2/{name}/blobs/uploads/?digest={blob['digest']}",
                                    data=f, headers={**headers,
                                                     "Content-Type": "application/octet-stream",
                                                     "Content-Length": str(os.fstat(
                                                         f.fileno()).st_size)}) as r:
                if r.status == 401:
                    raise EmergenceError(f"{base} refused the push: give its token with "
                                         "--token-file (the node's node.token, in its state dir)")
                if r.status not in (201, 202):
                    raise EmergenceError(f"{base} refused blob {blob['digest']}: {r.status} "
                                         f"{(await r.text())[:200]}")
        sent += blob["size"]
        if progress:
            progress(blob["size"])
    async with session.put(f"{base}/v2/{name}/manifests/{reference}", data=manifest_bytes,
                           headers={**headers, "Content-Type": desc.get(
                               "mediaType", manifest.get("mediaType"))}) as r:
        if r.status == 401:
            raise EmergenceError(f"{base} refused the push: give its token with --token-file")
        if r.status != 201:
            raise EmergenceError(f"{base} refused the manifest: {r.status} "
                                 f"{(await r.text())[:200]}")
    return {"digest": desc["digest"], "destination": f"{base}/{name}:{reference}",
            "bytes": sent}
