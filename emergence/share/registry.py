"""The OCI distribution API over the store: pull (manifests, blobs with
Range, tags, catalog) for anyone allowed to read, push (monolithic and
chunked uploads) only with the node's token (routes classed read and write:
access.py checks them before a handler runs).

A repository is the name part of a store ref ('hello-c:latest' is repository
'hello-c', tag 'latest').  Blobs are content-addressed and shared by every
repository, as in the store.  An upload is hashed while it is written to a
temp file in the store's blob directory (image.store.BlobWriter); it becomes
a blob only if that hash is the digest the client named.
"""

import os
import re

from aiohttp import web

from ..access import echo
from ..image.store import REF, canonical  # noqa: F401  (canonical re-exported for tests)

NAME_RE = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*\Z")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", INDEX, DOCKER_MANIFEST,
                  DOCKER_LIST)
MAX_MANIFEST = 4 << 20
API_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


class RegistryError(web.HTTPException):
    """An error response in the spec's format, raised from a handler."""

    def __init__(self, status, body, headers):
        self.status_code = status
        super().__init__(text=body, content_type="application/json", headers=headers)


def error(status, code, message, detail=None, headers=None):
    """The spec's error body: {"errors": [{code, message, detail}]}, to raise."""
    import json
    body = {"errors": [{"code": code, "message": message, "detail": detail or {}}]}
    return RegistryError(status, json.dumps(body), {**API_HEADER, **(headers or {})})


def split_ref(ref):
    """'a/b:tag' -> ('a/b', 'tag'); a ref without a tag is ':latest'."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


class Registry:
    """The /v2/ routes over one Store."""

    def __init__(self, store, state_dir, log=print):
        self.store = store
        self.uploads = {}  # upload id -> (name, BlobWriter)
        self.log = log
        self.state_dir = state_dir
        self.on_put = None  # called with the refs and digests of each pushed image

    def routes(self):
        """(access class, route) pairs: reads for anyone allowed to read, the
        rest of a push (uploads, their status, manifests) for the token's holder."""
        n = r"{name:[a-z0-9][a-z0-9._/-]*}"
        return [
            ("read", web.get("/v2/", self.base)),
            ("read", web.get("/v2/_catalog", self.catalog)),
            ("read", web.get(f"/v2/{n}/tags/list", self.tags)),
            ("read", web.get(f"/v2/{n}/manifests/{{ref}}", self.get_manifest)),
            ("write", web.put(f"/v2/{n}/manifests/{{ref}}", self.put_manifest)),
            ("read", web.get(f"/v2/{n}/blobs/{{digest:sha256:[^/]*}}", self.get_blob)),
            ("write", web.post(f"/v2/{n}/blobs/uploads/", self.start_upload)),
            ("write", web.patch(f"/v2/{n}/blobs/uploads/{{uid}}", self.patch_upload)),
            ("write", web.put(f"/v2/{n}/blobs/uploads/{{uid}}", self.finish_upload)),
            ("write", web.get(f"/v2/{n}/blobs/uploads/{{uid}}", self.upload_status)),
            ("write", web.delete(f"/v2/{n}/blobs/uploads/{{uid}}", self.cancel_upload)),
        ]

    # -- reading --
    def repositories(self):
        """{repository: {tag: manifest descriptor}} from the store's refs."""
        repos = {}
        for ref, desc in self.store.images():
            if not ref:
                continue
            name, tag = split_ref(ref)
            repos.setdefault(name, {})[tag] = desc
        return repos

    def _name(self, request):
        name = request.match_info["name"]
        if not NAME_RE.match(name):
            raise error(400, "NAME_INVALID", f"invalid repository name {echo(name)}")
        return name

    async def base(self, request):
        """200 for a client that holds the token; 401 with a Basic challenge for
        the rest: clients learn here how to authenticate (skopeo and podman send
        --creds only after a challenge), and read anonymously all the same."""
        from .. import access
        if not access.authenticated(request):
            raise error(401, "UNAUTHORIZED", "pushing " + access.NEEDS,
                        headers={"WWW-Authenticate": 'Basic realm="emergence"'})
        return web.json_response({}, headers=API_HEADER)

    async def catalog(self, request):
        names = sorted(self.repositories())
        return web.json_response(self._page(request, names, "repositories", "/v2/_catalog"),
                                 headers={**API_HEADER, **self._link})

    def _page(self, request, items, key, path):
        """n/last pagination (ASCIIbetical order); sets self._link for rel=next."""
        self._link = {}
        last = request.query.get("last")
        if last is not None:
            items = [i for i in items if i > last]
        if "n" in request.query:
            try:
                n = int(request.query["n"])
                if n < 0:
                    raise ValueError
            except ValueError:
                raise error(400, "UNSUPPORTED", "n must be a non-negative integer") from None
            if n < len(items) and n > 0:
                self._link = {"Link": f'<{path}?n={n}&last={items[n - 1]}>; rel="next"'}
            items = items[:n]
        return {key: items}

    async def tags(self, request):
        name = self._name(request)
        repo = self.repositories().get(name)
        if repo is None:
            raise error(404, "NAME_UNKNOWN", f"repository {echo(name)} not known to this node")
        body = {"name": name, **self._page(request, sorted(repo), "tags",
                                           f"/v2/{name}/tags/list")}
        return web.json_response(body, headers={**API_HEADER, **self._link})

    def _find_manifest(self, name, ref):
        """(media type, digest) of NAME's manifest REF, or an error response."""
        repo = self.repositories().get(name)
        if DIGEST_RE.match(ref):
            if not self.store.has(ref):
                raise error(404, "MANIFEST_UNKNOWN", f"manifest {ref} unknown", {"name": name})
            for desc in (repo or {}).values():
                if desc["digest"] == ref:
                    return desc.get("mediaType"), ref
            return None, ref  # any stored manifest by digest (a pushed one not yet tagged)
        if not TAG_RE.match(ref):
            raise error(400, "MANIFEST_INVALID", f"{echo(ref)} is neither a tag nor a digest")
        if repo is None:
            raise error(404, "NAME_UNKNOWN", f"repository {echo(name)} not known to this node")
        if ref not in repo:
            raise error(404, "MANIFEST_UNKNOWN", f"manifest {name}:{ref} unknown")
        return repo[ref].get("mediaType"), repo[ref]["digest"]

    async def get_manifest(self, request):
        name = self._name(request)
        media, digest = self._find_manifest(name, request.match_info["ref"])
        data = self.store.read(digest)  # verified: a corrupt blob is never served
        if media is None:
            import json
            try:
                media = json.loads(data).get("mediaType")
            except (ValueError, AttributeError, RecursionError):  # a blob, not a manifest
                media = None
            if media not in MANIFEST_TYPES:
                raise error(404, "MANIFEST_UNKNOWN", f"{digest} is not a manifest")
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "Content-Type": media,
                   "ETag": f'"{digest}"'}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, headers=headers)

    async def get_blob(self, request):
        self._name(request)
        digest = request.match_info["digest"]
        if not DIGEST_RE.match(digest):
            raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 digest")
        path = self.store.blob_path(digest)
        if not os.path.isfile(path):
            raise error(404, "BLOB_UNKNOWN", f"blob {digest} unknown", {"digest": digest})
        # FileResponse: sendfile(2), Range/If-Range, 206/416, HEAD without a body
        return web.FileResponse(path, headers={
            **API_HEADER, "Docker-Content-Digest": digest, "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream", "ETag": f'"{digest}"',
            "Cache-Control": "max-age=31536000"})

    # -- writing (authenticated) --
    def _location(self, name, uid):
        return f"/v2/{name}/blobs/uploads/{uid}"

    def _upload(self, request):
        uid = request.match_info["uid"]
        entry = self.uploads.get(uid)
        if entry is None or entry[0] != request.match_info["name"]:
            raise error(404, "BLOB_UPLOAD_UNKNOWN", f"upload {uid} unknown")
        return uid, entry[1]

    async def _write_body(self, request, writer):
        async for chunk in request.content.iter_chunked(1 << 20):
            writer.write(chunk)

    def _commit(self, writer, digest):
        """Commit WRITER as DIGEST if its bytes hash to DIGEST; else drop it."""
        got = "sha256:" + writer.hash.hexdigest()
        if got != digest:
            writer.abort()
            raise error(400, "DIGEST_INVALID", f"content hashes to {got}, not {digest}")
        writer.commit()
        self.store.sync_dir()

    async def start_upload(self, request):
        name = self._name(request)
        digest = request.query.get("digest")
        mount = request.query.get("mount")
        if mount and DIGEST_RE.match(mount) and self.store.has(mount):
            return web.Response(status=201, headers={
                **API_HEADER, "Location": f"/v2/{name}/blobs/{mount}",
                "Docker-Content-Digest": mount})
        import uuid
        writer = self.store.writer()
        if digest is not None:  # single POST: the body is the whole blob
            if not DIGEST_RE.match(digest):
                writer.abort()
                raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 digest")
            return await self._last_chunk(request, writer, name, digest)
        uid = uuid.uuid4().hex
        self.uploads[uid] = (name, writer)
        return web.Response(status=202, headers={
            **API_HEADER, "Location": self._location(name, uid), "Range": "0-0",
            "Docker-Upload-UUID": uid, "Content-Length": "0"})

    def _check_range(self, request, writer):
        cr = request.headers.get("Content-Range")
        if cr:
            m = re.fullmatch(r"(?:bytes[ =])?(\d+)-(\d+)", cr.strip())
            if not m or int(m.group(1)) != writer.size:
                raise error(416, "BLOB_UPLOAD_INVALID",
                            f"chunk {cr} out of order; {writer.size} bytes received",
                            headers={"Range": f"0-{max(writer.size - 1, 0)}"})

    async def patch_upload(self, request):
        uid, writer = self._upload(request)
        self._check_range(request, writer)
        try:
            await self._write_body(request, writer)
        except BaseException:
            self.uploads.pop(uid, None)
            writer.abort()
            raise
        return web.Response(status=202, headers={
            **API_HEADER, "Location": self._location(request.match_info["name"], uid),
            "Range": f"0-{max(writer.size - 1, 0)}", "Docker-Upload-UUID": uid})

    async def finish_upload(self, request):
        uid, writer = self._upload(request)
        digest = request.query.get("digest", "")
        if not DIGEST_RE.match(digest):
            raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 digest")
        self._check_range(request, writer)
        del self.uploads[uid]
        return await self._last_chunk(request, writer, request.match_info["name"], digest)

    async def _last_chunk(self, request, writer, name, digest):
        """Write the request's body, then commit the blob only if it is DIGEST."""
        try:
            await self._write_body(request, writer)
        except BaseException:
            writer.abort()
            raise
        self._commit(writer, digest)
        return web.Response(status=201, headers={
            **API_HEADER, "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest})

    async def upload_status(self, request):
        uid, writer = self._upload(request)
        return web.Response(status=204, headers={
            **API_HEADER, "Location": self._location(request.match_info["name"], uid),
            "Range": f"0-{max(writer.size - 1, 0)}", "Docker-Upload-UUID": uid})

    async def cancel_upload(self, request):
        uid, writer = self._upload(request)
        del self.uploads[uid]
        writer.abort()
        return web.Response(status=204, headers=API_HEADER)

    async def put_manifest(self, request):
        import hashlib
        name = self._name(request)
        ref = request.match_info["ref"]
        if request.content_length and request.content_length > MAX_MANIFEST:
            raise error(413, "SIZE_INVALID", "manifest larger than 4 MiB")
        data = await request.content.read(MAX_MANIFEST + 1)
        if len(data) > MAX_MANIFEST:
            raise error(413, "SIZE_INVALID", "manifest larger than 4 MiB")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if DIGEST_RE.match(ref) and ref != digest:
            raise error(400, "DIGEST_INVALID", f"manifest hashes to {digest}, not {ref}")
        if not DIGEST_RE.match(ref) and not TAG_RE.match(ref):
            raise error(400, "MANIFEST_INVALID", f"{echo(ref)} is neither a tag nor a digest")
        manifest = _parse_manifest(data)
        media = request.content_type or manifest.get("mediaType")
        if media not in MANIFEST_TYPES:
            raise error(400, "MANIFEST_INVALID", f"unsupported manifest type {echo(media)}")
        if manifest.get("mediaType") and manifest["mediaType"] != media:
            raise error(400, "MANIFEST_INVALID", "mediaType differs from Content-Type")
        wanted = _referenced(manifest)
        missing = [d for d in wanted if not DIGEST_RE.match(d) or not self.store.has(d)]
        if missing:
            raise error(400, "MANIFEST_BLOB_UNKNOWN", f"blob {echo(missing[0])} unknown",
                        {"digest": missing[0][:200]})
        self.store.put(data)
        desc = {"mediaType": media, "digest": digest, "size": len(data)}
        tags = [ref] if not DIGEST_RE.match(ref) else request.query.getall("tag", [])
        for tag in tags:
            self.store.set_ref(f"{name}:{tag}", desc)
        self.store.sync_dir()
        self.log(f"share: pushed {name}@{digest} tags {tags}")
        if self.on_put:
            self.on_put([f"{name}:{t}" for t in tags] + [digest] + wanted)
        headers = {**API_HEADER, "Location": f"/v2/{name}/manifests/{digest}",
                   "Docker-Content-Digest": digest}
        if tags and DIGEST_RE.match(ref):
            headers["OCI-Tag"] = ", ".join(tags)
        return web.Response(status=201, headers=headers)


def _parse_manifest(data):
    """DATA as a manifest object, or the spec's 400 MANIFEST_INVALID naming why."""
    import json
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise error(400, "MANIFEST_INVALID", "manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise error(400, "MANIFEST_INVALID", "manifest is not a JSON object")
    if not isinstance(manifest.get("mediaType", ""), str):
        raise error(400, "MANIFEST_INVALID", "mediaType is not a string")
    return manifest


def _referenced(manifest):
    """The digests MANIFEST names (config, layers, manifests), each checked to
    be a descriptor: a malformed one is 400 MANIFEST_INVALID, never a 500."""
    descs = []
    if "config" in manifest:
        descs.append(("config", manifest["config"]))
    for key in ("layers", "manifests"):
        items = manifest.get(key, [])
        if not isinstance(items, list):
            raise error(400, "MANIFEST_INVALID", f"{key} is not a list")
        descs.extend((f"{key}[{i}]", d) for i, d in enumerate(items))
    out = []
    for where, d in descs:
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
            raise error(400, "MANIFEST_INVALID", f"{where} is not a descriptor with a digest")
        out.append(d["digest"])
    return out
