"""Blob uploads of the registry, as the spec's push has them: monolithic
(POST ?digest=, or POST then PUT), chunked (PATCH with Content-Range, in
order or 416), status (GET), cancel (DELETE), cross-repository mount (POST
?mount=&from=: 201 when the blob is here, else a session as for a POST).

A session's bytes are hashed as they arrive into a temp file (`.upload-*`)
in the store's blob directory, with the algorithm POST named
(`digest-algorithm`, sha256 by default; hashed again at the end if PUT
names another); they become a blob only if they hash to the digest PUT
names.  A chunk that fails midway is cut off again, so the client can GET
the status and resume.  A session untouched for `upload_expiry` seconds is
dropped and its file removed, as are the files of sessions a stopped node
left behind.
"""

import os
import re
import time

from aiohttp import web

from .registry import ANY_DIGEST_RE, API_HEADER, echo, error

ALGORITHMS = ("sha256", "sha512")
PREFIX = ".upload-"


class Session:
    __slots__ = ("name", "writer", "touched", "busy")

    def __init__(self, name, writer):
        self.name, self.writer, self.touched, self.busy = name, writer, time.monotonic(), False


class Uploads:
    """The open upload sessions of one registry."""

    def __init__(self, registry, expiry):
        self.registry = registry
        self.store = registry.store
        self.expiry = float(expiry)
        self.sessions = {}
        self.task = None

    def __len__(self):
        return len(self.sessions)

    # -- expiry --
    def start(self):
        import asyncio
        self.sweep()
        self.task = asyncio.ensure_future(self._sweeper())

    async def _sweeper(self):
        import asyncio
        while True:
            await asyncio.sleep(max(min(60.0, self.expiry / 4), 0.05))
            self.sweep()

    def sweep(self):
        """Drop the sessions idle for `expiry` seconds, and `.upload-*` files no
        session holds that nobody wrote to for as long (a stopped node's)."""
        now = time.monotonic()
        for uid, s in list(self.sessions.items()):
            if not s.busy and now - s.touched > self.expiry:
                del self.sessions[uid]
                s.writer.abort()
                self.registry.log(f"share: upload {uid} to {s.name} expired "
                                  f"({s.writer.size} bytes dropped)")
        live = {s.writer.tmp for s in self.sessions.values()}
        old = time.time() - self.expiry
        try:
            names = [n for n in os.listdir(self.store.blob_dir) if n.startswith(PREFIX)]
        except OSError:
            return
        for n in names:
            path = os.path.join(self.store.blob_dir, n)
            try:
                if path not in live and os.lstat(path).st_mtime < old:
                    os.unlink(path)
            except OSError:
                pass

    def close(self):
        if self.task is not None:
            self.task.cancel()
        for s in self.sessions.values():
            s.writer.abort()
        self.sessions.clear()

    # -- the routes --
    def _headers(self, uid, s):
        return {**API_HEADER, "Location": f"/v2/{s.name}/blobs/uploads/{uid}",
                "Range": f"0-{max(s.writer.size - 1, 0)}", "Docker-Upload-UUID": uid}

    def _session(self, request, busy_ok=False):
        uid = request.match_info["uid"]
        s = self.sessions.get(uid)
        if s is None or s.name != request.match_info["name"]:
            raise error(404, "BLOB_UPLOAD_UNKNOWN", f"upload {echo(uid)} unknown (or expired)")
        if s.busy and not busy_ok:
            raise error(416, "BLOB_UPLOAD_INVALID", "a chunk of this upload is still arriving",
                        headers=self._headers(uid, s))
        s.touched = time.monotonic()
        return uid, s

    def _open(self, name, algorithm):
        import uuid
        uid = uuid.uuid4().hex
        s = self.sessions[uid] = Session(name, self.store.writer(algorithm, PREFIX))
        return web.Response(status=202, headers={**self._headers(uid, s),
                                                 "Content-Length": "0"})

    async def post(self, request):
        """202 and a session; 201 for a mount of a blob here or a single POST."""
        name = self.registry._name(request)
        mount = request.query.get("mount")
        if mount is not None and ANY_DIGEST_RE.match(mount) and self.store.has(mount):
            return web.Response(status=201, headers={
                **API_HEADER, "Location": f"/v2/{name}/blobs/{mount}",
                "Docker-Content-Digest": mount, "Content-Length": "0"})
        algorithm = request.query.get("digest-algorithm", "sha256")
        if algorithm not in ALGORITHMS:
            raise error(400, "DIGEST_INVALID", f"digest-algorithm {echo(algorithm)} is not "
                        "supported (take sha256 or sha512)")
        digest = request.query.get("digest")
        if digest is None or mount is not None:
            return self._open(name, algorithm)  # a mount of what is not here: upload it
        algorithm = _algorithm(digest)
        if not request.body_exists and digest != _empty(algorithm):
            return self._open(name, algorithm)  # a client that meant POST then PUT
        writer = self.store.writer(algorithm, PREFIX)
        try:
            await self._write(request, writer)
        except BaseException:
            writer.abort()
            raise
        return await self._commit(writer, name, digest)

    async def patch(self, request):
        uid, s = self._session(request)
        length = self._range(request, uid, s)
        await self._chunk(request, uid, s, length)
        return web.Response(status=202, headers={**self._headers(uid, s),
                                                 "Content-Length": "0"})

    async def put(self, request):
        uid, s = self._session(request)
        digest = request.query.get("digest")
        if digest is None:
            raise error(400, "DIGEST_INVALID", "closing an upload needs ?digest= (of the "
                        "whole blob)")
        algorithm = _algorithm(digest)
        length = self._range(request, uid, s)
        await self._chunk(request, uid, s, length)
        del self.sessions[uid]
        if algorithm != s.writer.algorithm:
            import asyncio
            await asyncio.get_running_loop().run_in_executor(None, s.writer.rehash,
                                                             algorithm)
        return await self._commit(s.writer, s.name, digest)

    async def status(self, request):
        uid, s = self._session(request, busy_ok=True)
        return web.Response(status=204, headers=self._headers(uid, s))

    async def cancel(self, request):
        uid, s = self._session(request)
        del self.sessions[uid]
        s.writer.abort()
        return web.Response(status=204, headers=API_HEADER)

    # -- the bytes --
    def _range(self, request, uid, s):
        """The chunk's length per its Content-Range (None without one); 416 for
        a chunk that does not start where the upload is, 400 for a length that
        is not the range's."""
        cr = request.headers.get("Content-Range")
        if cr is None:
            return None
        m = re.fullmatch(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/[0-9*]+)?", cr.strip())
        if not m:
            raise error(400, "BLOB_UPLOAD_INVALID",
                        f"Content-Range {echo(cr)} is not START-END", headers=self._headers(uid, s))
        start, end = int(m.group(1)), int(m.group(2))
        if start != s.writer.size or end < start:
            raise error(416, "BLOB_UPLOAD_INVALID",
                        f"chunk {start}-{end} is out of order: {s.writer.size} bytes received, "
                        f"the next chunk starts at {s.writer.size}", headers=self._headers(uid, s))
        length = end - start + 1
        if request.content_length is not None and request.content_length != length:
            raise error(400, "SIZE_INVALID", f"Content-Length {request.content_length} is not "
                        f"the length of Content-Range {start}-{end} ({length})")
        return length

    async def _chunk(self, request, uid, s, length):
        """Append the request's body to S; on any failure the session is as before."""
        mark = s.writer.mark()
        s.busy = True
        try:
            await self._write(request, s.writer)
            if length is not None and s.writer.size - mark[0] != length:
                raise error(400, "SIZE_INVALID", f"the chunk has {s.writer.size - mark[0]} "
                            f"bytes, its Content-Range {length}")
        except BaseException:
            s.writer.rewind(mark)
            raise
        finally:
            s.busy = False
            s.touched = time.monotonic()

    async def _write(self, request, writer):
        async for chunk in request.content.iter_chunked(1 << 20):
            writer.write(chunk)

    async def _commit(self, writer, name, digest):
        """Make WRITER the blob DIGEST if its bytes hash to it (synced off the
        event loop); else drop it: 400 DIGEST_INVALID."""
        import asyncio
        got = writer.digest()
        if got != digest:
            writer.abort()
            raise error(400, "DIGEST_INVALID", f"the content hashes to {got}, not {digest}",
                        {"digest": digest})

        def commit():
            writer.commit()
            self.store.sync_dir()
        try:
            await asyncio.get_running_loop().run_in_executor(None, commit)
        except BaseException:
            writer.abort()
            raise
        return web.Response(status=201, headers={
            **API_HEADER, "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest, "Content-Length": "0"})


def _algorithm(digest):
    """DIGEST's algorithm, or 400 DIGEST_INVALID."""
    if not ANY_DIGEST_RE.match(digest):
        raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 or sha512 digest")
    return digest.partition(":")[0]


def _empty(algorithm):
    import hashlib
    return f"{algorithm}:{hashlib.new(algorithm).hexdigest()}"
