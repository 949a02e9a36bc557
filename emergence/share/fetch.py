"""`emergence pull`: an image from many peers at once, trusting none.

A blob that peers hold is fetched in pieces (Range requests), every peer
working on its own piece, other pullers of the same blob included (they
serve what they have verified; the seeds are asked only for what no puller
has: _Swarm); each piece is checked against a piece list that a node whose
key we trust signed (pieces.py).  A peer that sends a bad piece
is banned for the transfer; one that fails or stalls (no byte for
`stall` seconds) is dropped and its piece goes back to the queue; when the
queue is empty, idle peers duplicate the pieces still in flight (hedged
requests) and the first verified copy wins.

Without a trusted piece list (no trusted keys, or the blob comes from the
upstream registry) a blob is fetched whole from one source at a time,
resuming with Range from the bytes already on disk, and checked against its
digest at the end.  In both modes the whole blob is hashed against its
digest while image.store's BlobWriter copies it into the store, so nothing
unverified enters it.  Partial files live in the state directory, never in
the store; a pull killed midway resumes from them (pieces are re-hashed).
The manifest is stored and tagged last, after every blob it names.
"""

import asyncio
import hashlib
import os

from .. import counters
from ..errors import EmergenceError
from . import pieces as piecelist
from .client import MANIFEST_ACCEPT, Upstream, parse_ref
from .peers import announced_holders, discover, who_has
from .swarm import _Chained, _Checker, _err, _Prefix, _Swarm


class Missing(EmergenceError):
    """No peer (nor the upstream) has what was asked: a plain miss."""


class Interrupted(EmergenceError):
    """The pull failed midway (peers failed, stalled or lied); run again, it resumes."""


class Transfer:
    """One pull: its peers, bans, and counters (for --json and `peers`)."""

    def __init__(self):
        self.banned = {}    # peer -> why
        self.bytes_from = {}
        self.resumed = 0
        self.fetched = 0


class Puller:
    def __init__(self, store, state_dir, peers=(), upstream="", trusted_keys=(),
                 stall=5.0, progress=None, log=lambda m: None):
        self.store = store
        self.partial_dir = os.path.join(state_dir, "partial")
        os.makedirs(self.partial_dir, mode=0o700, exist_ok=True)
        self.static_peers = list(peers)
        self.upstream_url = upstream
        self.trusted = list(trusted_keys)
        self.stall = stall
        self.progress = progress or (lambda n, total=None: None)
        self.log = log
        self.t = Transfer()

    async def pull(self, ref):
        import gc

        import aiohttp
        gc.freeze()  # what the imports made lives on: full collections skip it
        name, reference = parse_ref(ref)
        conn = aiohttp.TCPConnector(limit=0, limit_per_host=8)
        async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as s:
            self.session = s
            self.peers = await discover(s, self.static_peers, trusted_keys=self.trusted) \
                if self.static_peers else []
            self.upstream = Upstream(s, self.upstream_url, name) if self.upstream_url else None
            data, media, digest = await self._manifest(name, reference)
            import json
            manifest = json.loads(data)
            if "manifests" in manifest:
                raise EmergenceError(f"{ref} is an index (multi-platform); pull one "
                                     "platform's manifest by digest")
            blobs = [manifest["config"]] + manifest.get("layers", [])
            total = sum(b["size"] for b in blobs if not self.store.has(b["digest"]))
            self.progress(0, total)
            for b in blobs:
                if not self.store.has(b["digest"]):
                    await self._blob_once(name, b["digest"], b["size"])
            self.store.put(data)
            tag = reference if not reference.startswith("sha256:") else None
            self.store.set_ref(f"{name}:{tag}" if tag else f"{name}@{digest}",
                               {"mediaType": media, "digest": digest, "size": len(data)})
        counters.share_pulled(self.t.bytes_from)
        return {"ref": f"{name}:{reference}" if tag else f"{name}@{digest}", "digest": digest,
                "bytes": self.t.fetched, "resumed": self.t.resumed,
                "from": self.t.bytes_from, "banned": self.t.banned}

    # -- manifest --
    async def _manifest(self, name, reference):
        path = f"/v2/{name}/manifests/{reference}"
        sources = [p for p, _ in await who_has(self.session, self.peers, path)]
        if not sources and self.peers:  # busy peers: ask once more, more patiently
            await asyncio.sleep(0.5)
            sources = [p for p, _ in await who_has(self.session, self.peers, path, 10.0)]
        if not sources and self.peers:  # ask on miss: whom did the peers hear announce it?
            more = await announced_holders(self.session, self.peers, f"{name}:{reference}"
                                           if not reference.startswith("sha256:")
                                           else reference)
            self.peers += [p for p in more if p not in self.peers]
            sources = [p for p, _ in await who_has(self.session, more, path)]
        expect = None
        if self.trusted and sources and not reference.startswith("sha256:"):
            from .tags import agreed  # a tag means what a trusted key signed
            sources, expect = await agreed(self.session, sources, name, reference,
                                           self.trusted, self.t.banned, not self.upstream)
        for peer in sources:
            try:
                async with self.session.get(peer + path,
                                            headers={"Accept": MANIFEST_ACCEPT}) as r:
                    if r.status == 200:
                        got = self._check_manifest(await r.read(), r, expect or reference,
                                                   peer)
                        if got:
                            return got
            except Exception as e:
                if not _err(e):
                    raise
        if self.upstream:
            r = await self.upstream.request("GET", path, {"Accept": MANIFEST_ACCEPT})
            async with r:
                if r.status == 200:
                    got = self._check_manifest(await r.read(), r, reference, "upstream")
                    if got:
                        return got
        if self.t.banned:
            raise EmergenceError(f"no peer gave a manifest for {name}:{reference} that checks "
                                 "out (" + "; ".join(f"{p}: {w}" for p, w in
                                                     self.t.banned.items()) + ")")
        raise Missing(f"no peer{' nor the upstream' if self.upstream else ''} has "
                             f"{name}:{reference} (peers: {', '.join(self.peers) or 'none'}; "
                             "set [share] peers or upstream)")

    def _check_manifest(self, data, r, reference, source):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        said = r.headers.get("Docker-Content-Digest")
        if (reference.startswith("sha256:") and digest != reference) or (said and said != digest):
            self.t.banned[source] = f"sent manifest {digest}, not {reference}" \
                if reference.startswith("sha256:") else "manifest does not match its digest"
            return None
        media = r.headers.get("Content-Type", "").split(";")[0]
        return data, media, digest

    # -- blobs --
    async def _blob_once(self, name, digest, size):
        """One pull of a blob at a time per state dir: two pulls of one image (two
        stages on one worker) would otherwise write one partial file at once.  The
        second waits, then finds the blob in the store."""
        loop = asyncio.get_running_loop()
        lock = os.path.join(self.partial_dir, digest[7:] + ".lock")
        fd = await loop.run_in_executor(None, _hold, lock)
        try:
            if not self.store.has(digest):
                await self._blob(name, digest, size)
        finally:
            try:
                os.unlink(lock)   # while held: a waiter finds the path gone and retries
            except FileNotFoundError:
                pass
            os.close(fd)

    async def _blob(self, name, digest, size):
        path = f"/v2/{name}/blobs/{digest}"
        holders = [p for p, _ in await who_has(self.session, self.peers, path)
                   if p not in self.t.banned]
        part = os.path.join(self.partial_dir, digest[7:])
        if self.trusted and self.peers:
            # peers still pulling this blob serve the pieces they have verified
            others = [p for p in self.peers if p not in holders and p not in self.t.banned]
            plist = await self._piece_list(holders + others, digest)
            if plist and plist["size"] == size:
                states = piecelist.states(plist, self.trusted)
                if await self._pieces(path, holders, others, plist, part, states):
                    return
        for peer in holders:  # whole, one source at a time
            if peer not in self.t.banned and await self._whole(peer + path, None, digest,
                                                               size, part, peer):
                return
        if self.upstream and await self._whole(path, self.upstream, digest, size, part,
                                               "upstream"):
            return
        raise Interrupted(f"could not get blob {digest} from any peer"
                             f"{' or the upstream' if self.upstream else ''}; banned: "
                             f"{self.t.banned or 'none'}; run the pull again to resume")

    async def _piece_list(self, holders, digest):
        for peer in holders:
            try:
                async with self.session.get(f"{peer}/share/v1/pieces/{digest}") as r:
                    if r.status != 200:
                        continue
                    plist = await r.json()
            except Exception as e:
                if not _err(e) and not isinstance(e, ValueError):
                    raise
                continue
            if piecelist.check(plist, digest, self.trusted):
                return plist
            self.log(f"share: {peer}'s piece list for {digest} is not signed by a trusted key")
        return None

    async def _pieces(self, path, holders, others, plist, part, states):
        """Fetch the pieces of PLIST into PART and commit it.  With STATES (a
        version-2 list) each piece is checked by resuming the blob's SHA-256,
        and all of them checked means the blob hashes to its digest; without,
        by its own SHA-256, and the blob hashed again as it fills (_Prefix)."""
        psize, size = plist["pieceSize"], plist["size"]
        checker = _Checker(plist, states)
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            resuming = os.fstat(fd).st_size > 0
            os.ftruncate(fd, size)
            done = await asyncio.get_running_loop().run_in_executor(
                None, _verified_pieces, fd, psize, size, checker) if resuming else set()
            _write_atomic(part + ".pieces", plist)
            have_fd = os.open(part + ".have", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(have_fd, b"".join(b"%d\n" % i for i in sorted(done)))
                resumed = sum(min(psize, size - i * psize) for i in done)
                self.t.resumed += resumed
                self.progress(resumed)
                whole = _Chained(plist["digest"]) if states else _Prefix(fd, psize, size)
                try:
                    whole.advance(done)
                    swarm = _Swarm(self, path, plist, fd, have_fd, done, whole, checker)
                    complete = await swarm.run(holders, others)
                    hashed = await whole.digest() if complete else None
                finally:
                    whole.close()
            finally:
                os.close(have_fd)
            # no fsync: a resume re-hashes every piece, and the store copy is synced
        finally:
            os.close(fd)
        if not complete:
            return False  # every holder failed; the partial file stays for a resume
        for extra in (part + ".have", part + ".pieces"):
            try:
                os.unlink(extra)
            except FileNotFoundError:
                pass
        return await self._commit(part, plist["digest"], hashed)

    async def _whole(self, path_or_url, upstream, digest, size, part, source):
        """Fetch DIGEST whole from one source, resuming from PART; True if committed."""
        import aiohttp
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if have > size:
            os.unlink(part)
            have = 0
        self.t.resumed += have
        self.progress(have)
        try:
            headers = {"Range": f"bytes={have}-"} if have else {}
            if upstream:
                r = await upstream.request("GET", path_or_url, headers)
            else:
                r = await self.session.get(path_or_url, headers=headers,
                                           timeout=aiohttp.ClientTimeout(
                                               total=None, sock_read=self.stall))
            async with r:
                if r.status == 200 and have:
                    have = 0  # the source ignored Range: start over
                elif r.status not in (200, 206):
                    return False
                with open(part, "r+b" if have else "wb") as f:
                    f.seek(have)
                    async for chunk in r.content.iter_chunked(1 << 20):
                        f.write(chunk)
                        self.t.fetched += len(chunk)
                        self.t.bytes_from[source] = self.t.bytes_from.get(source, 0) + \
                            len(chunk)
                        self.progress(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
        except Exception as e:
            if not _err(e):
                raise
            self.t.banned[source] = f"failed: {type(e).__name__}"
            return False
        if await self._commit(part, digest):
            return True
        self.t.banned[source] = "sent a blob that does not match its digest"
        return False

    async def _commit(self, part, digest, hashed=None):
        """If PART hashes to DIGEST (HASHED: its hash, taken while it was fetched),
        move it into the store (`Store.adopt`: a rename, or a copy that hashes
        again across filesystems).  The partial file goes either way."""
        def commit():
            try:
                ok = (hashed or _file_digest(part)) == digest and self.store.adopt(part, digest)
            except FileNotFoundError:  # another pull of this blob moved it in first
                return self.store.has(digest)
            try:
                if ok:
                    self.store.sync_dir()
                return ok
            finally:
                try:
                    os.unlink(part)
                except FileNotFoundError:
                    pass
        return await asyncio.get_running_loop().run_in_executor(None, commit)


def _write_atomic(path, obj):
    import json
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _hold(path):
    """An exclusive flock on PATH, made if missing; retried if the holder before us
    removed the file it locked (so nobody locks an unlinked file)."""
    import fcntl
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _file_digest(path):
    """sha256:HEX of the file at PATH, hashed from its pages (mapped, not copied)."""
    import mmap
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
                h.update(m)
    return "sha256:" + h.hexdigest()


def _verified_pieces(fd, psize, size, checker):
    """The pieces of a partial file that already check out (a resume)."""
    done = set()
    for i in range(-(-size // psize)):
        data = os.pread(fd, min(psize, size - i * psize), i * psize)
        if data.count(0) != len(data):
            check = checker(i)
            check.update(data)
            if check.ok():
                done.add(i)
    return done
