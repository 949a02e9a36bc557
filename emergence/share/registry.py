"""The OCI distribution API over the store: pull (manifests, blobs with
Range), content discovery (tags, catalog, referrers) for anyone allowed to
read; push (uploads.py), manifests, and deletes of manifests, tags and
blobs only with the node's token (routes classed read and write: access.py
checks them before a handler runs).

A repository is the name part of the store's refs: 'hello-c:latest' is tag
'latest' of repository 'hello-c', and 'hello-c@sha256:...' a manifest the
repository holds untagged (pushed by digest: a signature, an SBOM, a
platform of an index; or pulled by digest).  A repository's manifests are
those refs and what the indexes among them list; blobs are content-
addressed and shared by every repository, as in the store.  Deleting a
manifest (by digest) drops every ref of the repository to it, deleting a
tag only that ref; the bytes go with `emergence gc`, which keeps all that a
ref still reaches (store.referenced).  Digests are sha256 or sha512.
"""

import os
import re

from aiohttp import web

from ..access import echo
from ..image.store import REF, canonical  # noqa: F401  (canonical re-exported for tests)

NAME_RE = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*\Z")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")  # what peers exchange (piece lists, pulls)
ANY_DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")  # the registry's
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", INDEX, DOCKER_MANIFEST,
                  DOCKER_LIST)
MAX_MANIFEST = 4 << 20  # [share] max_manifest's default: the spec asks for at least 4 MiB
MAX_NAME = 255
MAX_TAGS = 100  # tags in one PUT by digest (?tag=...)
API_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


class RegistryError(web.HTTPException):
    """An error response in the spec's format, raised from a handler."""

    def __init__(self, status, body, headers):
        self.status_code = status
        super().__init__(text=body, content_type="application/json", headers=headers)


def error(status, code, message, detail=None, headers=None, errors=None):
    """The spec's error body: {"errors": [{code, message, detail}]}, to raise
    (ERRORS: several such objects at once)."""
    import json
    body = {"errors": errors or [{"code": code, "message": message, "detail": detail or {}}]}
    return RegistryError(status, json.dumps(body), {**API_HEADER, **(headers or {})})


def parse_ref(ref):
    """A store ref as (repository, tag, digest): 'a/b:t' -> ('a/b', 't', None),
    'a/b@sha256:..' -> ('a/b', None, 'sha256:..'); no tag means 'latest'."""
    name, at, digest = ref.partition("@")
    if at:
        return name, None, digest
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest", None
    return name, tag, None


class Registry:
    """The /v2/ routes over one Store."""

    def __init__(self, store, state_dir, log=print, max_manifest=MAX_MANIFEST,
                 upload_expiry=3600.0):
        from ..errors import EmergenceError
        from .manifests import Infos
        from .uploads import Uploads
        if isinstance(max_manifest, bool) or not isinstance(max_manifest, int) \
                or max_manifest < 1024:
            raise EmergenceError(f"[share] max_manifest must be a number of bytes, at least "
                                 f"1024 (the spec asks for 4194304); got {max_manifest!r}")
        if isinstance(upload_expiry, bool) or not isinstance(upload_expiry, (int, float)) \
                or upload_expiry <= 0:
            raise EmergenceError(f"[share] upload_expiry must be a positive number of "
                                 f"seconds; got {upload_expiry!r}")
        self.store = store
        self.log = log
        self.state_dir = state_dir
        self.max_manifest = max_manifest
        self.infos = Infos(store)
        self.uploads = Uploads(self, upload_expiry)
        self.on_put = None  # called with the refs and digests of each pushed image

    def routes(self):
        """(access class, route) pairs: reads for anyone allowed to read, the
        rest (uploads and their status, manifests, deletes) for the token's
        holder."""
        n = r"{name:[^/].*?}"  # checked by _name: NAME_INVALID, not a bare 404
        up = f"/v2/{n}/blobs/uploads/{{uid}}"
        return [
            ("read", web.get("/v2/", self.base)),
            ("read", web.get("/v2/_catalog", self.catalog)),
            ("read", web.get(f"/v2/{n}/tags/list", self.tags)),
            ("read", web.get(f"/v2/{n}/referrers/{{digest}}", self.referrers)),
            ("read", web.get(f"/v2/{n}/manifests/{{ref}}", self.get_manifest)),
            ("write", web.put(f"/v2/{n}/manifests/{{ref}}", self.put_manifest)),
            ("write", web.delete(f"/v2/{n}/manifests/{{ref}}", self.delete_manifest)),
            ("read", web.get(f"/v2/{n}/blobs/{{digest}}", self.get_blob)),
            ("write", web.delete(f"/v2/{n}/blobs/{{digest}}", self.delete_blob)),
            ("write", web.post(f"/v2/{n}/blobs/uploads/", self.uploads.post)),
            ("write", web.patch(up, self.uploads.patch)),
            ("write", web.put(up, self.uploads.put)),
            ("write", web.get(up, self.uploads.status)),
            ("write", web.delete(up, self.uploads.cancel)),
        ]

    def start(self):
        """Start expiring upload sessions (and remove a stopped node's files)."""
        self.uploads.start()

    def close(self):
        self.uploads.close()

    # -- repositories --
    def repositories(self):
        """{repository: [(ref, manifest descriptor)]} from the store's refs."""
        repos = {}
        for ref, desc in self.store.images():
            if ref and isinstance(desc.get("digest"), str):
                repos.setdefault(parse_ref(ref)[0], []).append((ref, desc))
        return repos

    def records(self, name):
        """[(ref, descriptor)] of repository NAME ([] for one not known)."""
        return self.repositories().get(name, [])

    def _name(self, request):
        name = request.match_info["name"]
        if len(name) > MAX_NAME or not NAME_RE.match(name):
            raise error(400, "NAME_INVALID", f"invalid repository name {echo(name)}")
        return name

    def _known(self, name):
        records = self.records(name)
        if not records:
            raise error(404, "NAME_UNKNOWN", f"repository {echo(name)} not known to this node",
                        {"name": name})
        return records

    # -- reading --
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
        body, link = _page(request, names, "/v2/_catalog")
        return web.json_response({"repositories": body}, headers={**API_HEADER, **link})

    async def tags(self, request):
        name = self._name(request)
        tags = sorted({tag for ref, _ in self._known(name)
                       for tag in [parse_ref(ref)[1]] if tag is not None})
        body, link = _page(request, tags, f"/v2/{name}/tags/list")
        return web.json_response({"name": name, "tags": body}, headers={**API_HEADER, **link})

    async def referrers(self, request):
        from . import referrers
        return await referrers.get(self, request)

    def _find_manifest(self, name, ref):
        """(media type, digest) of NAME's manifest REF, or an error response."""
        if ANY_DIGEST_RE.match(ref):
            records = self._known(name)
            direct = [d for _, d in records if d["digest"] == ref]
            members = {ref: direct[0].get("mediaType")} if direct else \
                self.infos.members(records)  # a platform an index lists, say
            if ref not in members or not self.store.has(ref):
                raise error(404, "MANIFEST_UNKNOWN", f"manifest {ref} unknown in "
                            f"{echo(name)}", {"name": name, "digest": ref})
            return members[ref], ref
        if not TAG_RE.match(ref):
            raise error(400, "MANIFEST_INVALID" if ":" not in ref else "DIGEST_INVALID",
                        f"{echo(ref)} is neither a tag nor a sha256 or sha512 digest")
        desc = dict(self._known(name)).get(f"{name}:{ref}")
        if desc is None:
            raise error(404, "MANIFEST_UNKNOWN", f"manifest {name}:{ref} unknown",
                        {"name": name, "tag": ref})
        return desc.get("mediaType"), desc["digest"]

    async def get_manifest(self, request):
        from ..errors import EmergenceError
        name = self._name(request)
        media, digest = self._find_manifest(name, request.match_info["ref"])
        try:
            data = self.store.read(digest)  # verified: a corrupt blob is never served
        except EmergenceError:
            raise error(404, "MANIFEST_UNKNOWN", f"manifest {digest} is missing or corrupt on "
                        "this node", {"digest": digest}) from None
        if media not in MANIFEST_TYPES:
            info = self.infos.get(digest, media)
            media = info.media if info is not None else None
            if media not in MANIFEST_TYPES:
                raise error(404, "MANIFEST_UNKNOWN", f"{digest} is not a manifest")
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "Content-Type": media,
                   "ETag": f'"{digest}"'}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, headers=headers)

    def _digest(self, request):
        self._name(request)
        digest = request.match_info["digest"]
        if not ANY_DIGEST_RE.match(digest):
            raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 or sha512 "
                        "digest", {"digest": digest[:200]})
        return digest

    async def get_blob(self, request):
        digest = self._digest(request)
        path = self.store.blob_path(digest)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise error(404, "BLOB_UNKNOWN", f"blob {digest} unknown", {"digest": digest}) \
                from None
        if "Range" in request.headers:  # FileResponse's 416s have no body: say why here
            whole = {"Content-Range": f"bytes */{size}"}
            try:
                rng = request.http_range
            except ValueError:
                raise error(416, "UNSUPPORTED", "one range at a time, as bytes=START-END, "
                            "bytes=START- or bytes=-LENGTH", headers=whole) from None
            if rng.start is not None and rng.start >= size and (rng.start > 0 or size == 0):
                raise error(416, "SIZE_INVALID", f"the range starts at {rng.start}; the blob "
                            f"has {size} bytes", {"size": size}, headers=whole)
        # FileResponse: sendfile(2), Range/If-Range, 206/416, HEAD without a body
        return web.FileResponse(path, headers={
            **API_HEADER, "Docker-Content-Digest": digest, "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream", "ETag": f'"{digest}"',
            "Cache-Control": "max-age=31536000"})

    # -- writing (authenticated) --
    async def _read_manifest(self, request):
        """The whole body, however many reads it takes; 413 past max_manifest
        (said before reading when Content-Length says so)."""
        limit = self.max_manifest
        too_big = error(413, "SIZE_INVALID", f"the manifest is larger than this node's "
                        f"limit of {limit} bytes ([share] max_manifest)",
                        {"limit": limit})
        if (request.content_length or 0) > limit:
            too_big.force_close()  # its body is not read
            raise too_big
        parts, size = [], 0
        while True:
            part = await request.content.read(limit + 1 - size)
            if not part:
                return b"".join(parts)
            parts.append(part)
            size += len(part)
            if size > limit:
                too_big.force_close()
                raise too_big

    async def put_manifest(self, request):
        import hashlib

        from . import manifests, referrers
        name = self._name(request)
        ref = request.match_info["ref"]
        if ANY_DIGEST_RE.match(ref):
            tags = request.query.getall("tag", [])
            if len(tags) > MAX_TAGS:
                raise error(414, "UNSUPPORTED", f"at most {MAX_TAGS} tags in one push")
        elif TAG_RE.match(ref):
            tags = [ref]
        else:
            raise error(400, "MANIFEST_INVALID" if ":" not in ref else "DIGEST_INVALID",
                        f"{echo(ref)} is neither a tag nor a sha256 or sha512 digest")
        bad = [t for t in tags if not TAG_RE.match(t)]
        if bad:
            raise error(400, "MANIFEST_INVALID", f"{echo(bad[0])} is not a tag")
        data = await self._read_manifest(request)
        algorithm = ref.partition(":")[0] if ANY_DIGEST_RE.match(ref) else "sha256"
        digest = f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
        if ANY_DIGEST_RE.match(ref) and ref != digest:
            raise error(400, "DIGEST_INVALID", f"the manifest hashes to {digest}, not {ref}",
                        {"digest": ref})
        sent = request.headers.get("Content-Type") and request.content_type
        manifest, media, wanted = manifests.check(
            data, None if sent in (None, "application/octet-stream") else sent, self.store)
        before = dict(self.records(name))
        self.store.put(data, algorithm)
        desc = {"mediaType": media, "digest": digest, "size": len(data)}
        refs = [f"{name}:{t}" for t in tags] or [f"{name}@{digest}"]
        self.store.set_refs([(r, desc) for r in refs])
        subjects = {manifests.Info(data, media).subject} - {None}
        for r in refs:  # a tag moved off a manifest with a subject: its list may change
            old = before.get(r)
            info = old and old["digest"] != digest and self.infos.get(old["digest"])
            if info and info.subject:
                subjects.add(info.subject)
        referrers.refresh(self, name, sorted(subjects))
        self.store.sync_dir()
        self.log(f"share: pushed {name}@{digest} tags {tags}")
        if self.on_put:
            self.on_put([f"{name}:{t}" for t in tags] + [digest] + wanted)
        headers = {**API_HEADER, "Location": f"/v2/{name}/manifests/{digest}",
                   "Docker-Content-Digest": digest, "Content-Length": "0"}
        if tags and ANY_DIGEST_RE.match(ref):
            headers["OCI-Tag"] = ", ".join(tags)
        subject = manifest.get("subject")
        if subject:
            headers["OCI-Subject"] = subject["digest"]
        return web.Response(status=201, headers=headers)

    async def delete_manifest(self, request):
        """DELETE by tag drops that tag; by digest, every ref of the repository
        to the manifest (and it leaves the referrers list of its subject)."""
        from . import referrers
        name = self._name(request)
        ref = request.match_info["ref"]
        records = self._known(name)
        if ANY_DIGEST_RE.match(ref):
            digest = ref
            refs = [r for r, d in records if d["digest"] == digest]
            info = self.infos.get(digest)
            subject = info.subject if info is not None else None
            listed = subject is not None and digest in {
                d["digest"] for d in referrers.listing(self.infos, records, subject)}
            if not refs and not listed:
                if digest in self.infos.members(records):
                    holder = next(r for r, d in records if digest in self.infos.members(
                        [(r, d)]))
                    raise error(405, "UNSUPPORTED", f"manifest {digest} is listed by "
                                f"{holder}; delete that first", {"digest": digest},
                                headers={"Allow": "GET, HEAD, PUT"})
                raise error(404, "MANIFEST_UNKNOWN", f"manifest {digest} unknown in "
                            f"{echo(name)}", {"digest": digest})
            self.store.remove_refs(refs)
            if subject is not None:
                referrers.refresh(self, name, [subject], exclude={digest})
            self.log(f"share: deleted {name}@{digest} ({len(refs)} refs)")
        elif TAG_RE.match(ref):
            desc = dict(records).get(f"{name}:{ref}")
            if desc is None:
                raise error(404, "MANIFEST_UNKNOWN", f"manifest {name}:{ref} unknown",
                            {"name": name, "tag": ref})
            self.store.remove_refs([f"{name}:{ref}"])
            info = self.infos.get(desc["digest"])
            if info is not None and info.subject:
                referrers.refresh(self, name, [info.subject])
            self.log(f"share: deleted tag {name}:{ref}")
        else:
            raise error(400, "MANIFEST_INVALID" if ":" not in ref else "DIGEST_INVALID",
                        f"{echo(ref)} is neither a tag nor a sha256 or sha512 digest")
        return web.Response(status=202, headers={**API_HEADER, "Content-Length": "0"})

    async def delete_blob(self, request):
        """202 and the blob gone, unless a manifest of any repository still
        names it (405: delete that manifest first; gc keeps it as well)."""
        digest = self._digest(request)
        if not self.store.has(digest):
            raise error(404, "BLOB_UNKNOWN", f"blob {digest} unknown", {"digest": digest})
        with self.store.locked():
            users = self._users(digest)
            if users:  # 405: the spec's answer when a delete is not allowed
                raise error(405, "UNSUPPORTED", f"blob {digest} is in use by {users[0]}; "
                            "delete that manifest first", {"digest": digest,
                                                           "used_by": users[:10]},
                            headers={"Allow": "GET, HEAD"})
            try:
                os.unlink(self.store.blob_path(digest))
            except FileNotFoundError:
                raise error(404, "BLOB_UNKNOWN", f"blob {digest} unknown",
                            {"digest": digest}) from None
        self.log(f"share: deleted blob {digest}")
        return web.Response(status=202, headers={**API_HEADER, "Content-Length": "0"})

    def _users(self, digest):
        """The refs of any repository whose manifests (or the manifests their
        indexes list) are DIGEST or name it as config or layer."""
        users = []
        for ref, desc in self.store.images():
            for m, media in self.infos.members([(ref, desc)]).items():
                info = self.infos.get(m, media)
                if m == digest or (info is not None and digest in info.blobs):
                    users.append(ref)
                    break
        return users


def _page(request, items, path):
    """(ITEMS after `last`, at most `n` of them; a Link header to the next page)."""
    last = request.query.get("last")
    if last is not None:
        items = [i for i in items if i > last]
    if "n" not in request.query:
        return items, {}
    try:
        n = int(request.query["n"])
        if n < 0:
            raise ValueError
    except ValueError:
        raise error(400, "UNSUPPORTED", "n must be a non-negative integer") from None
    link = {}
    if 0 < n < len(items):
        from urllib.parse import quote
        link = {"Link": f'<{path}?n={n}&last={quote(items[n - 1])}>; rel="next"'}
    return items[:n], link
