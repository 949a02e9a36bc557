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
import time

from .. import counters
from ..errors import EmergenceError
from . import pieces as piecelist
from .client import MANIFEST_ACCEPT, Upstream, parse_ref
from .peers import announced_holders, discover, who_has


class Transfer:
    """One pull: its peers, bans, and counters (for --json and `peers`)."""

    def __init__(self):
        self.banned = {}    # peer -> why
        self.bytes_from = {}
        self.resumed = 0
        self.fetched = 0


def _err(e):
    import aiohttp
    return isinstance(e, (OSError, asyncio.TimeoutError, aiohttp.ClientError, EOFError))


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
        raise EmergenceError(f"no peer{' nor the upstream' if self.upstream else ''} has "
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
        raise EmergenceError(f"could not get blob {digest} from any peer"
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


class _Swarm:
    """The pieces of one blob from many peers at once, BitTorrent-like.

    Whole holders (the seeds) are asked only for pieces no other puller has
    verified yet, so their shared upload sends about one copy in all; every
    other peer is watched (a long poll of its `.have` list) and asked for the
    rarest of the pieces it holds.  Two requests per peer are in flight; when
    every missing piece is in flight, idle peers duplicate the ones in flight
    longest (hedging) and the first verified copy wins.
    """

    SLOTS = 2          # requests in flight per peer
    HEDGE_AFTER = 1.0  # seconds a piece is in flight before an idle peer duplicates it
    CLAIM_FOR = 3.0    # seconds another puller's claim on a piece keeps us off the seeds
    POLL = 0.5         # at least this long between two have-list polls of one peer

    def __init__(self, puller, path, plist, fd, have_fd, done, whole, checker):
        import random
        self.whole, self.checker = whole, checker
        self.p, self.t, self.path, self.fd, self.have_fd = puller, puller.t, path, fd, have_fd
        self.psize, self.size, self.hashes = plist["pieceSize"], plist["size"], plist["pieces"]
        self.digest = plist["digest"]
        self.n = len(self.hashes)
        self.done = done
        self.need = set(range(self.n)) - done
        self.inflight = {}  # piece -> {peer: start time}
        self.held = {}      # peer still pulling -> the pieces it has verified (None = all)
        self.count = [0] * self.n  # how many of those peers hold each piece
        self.claimed = {}   # piece -> until when a puller said it is getting it from a seed
        self.waiting = []   # futures of the workers waiting for something to change
        self.rng = random.Random()
        self.conns = []
        self.direct = {}    # piece -> the _Request streaming it into the partial file
        self.sealed = set(done)  # pieces whose verified bytes are in the file: never rewritten
        import threading
        self.open = True  # the partial file may be written (until run() ends)
        self.writing = threading.Lock()

    def finished(self):
        return len(self.done) == self.n

    async def run(self, holders, others):
        """True once every piece is here and verified."""
        from concurrent.futures import ThreadPoolExecutor
        self.pool = ThreadPoolExecutor((len(holders) + len(others)) * self.SLOTS,
                                       thread_name_prefix="piece")
        tasks = [asyncio.ensure_future(self.worker(p, None)) for p in holders
                 for _ in range(self.SLOTS)]
        for p in others:
            self.held[p] = set()
            tasks.append(asyncio.ensure_future(self.watch(p)))
            tasks += [asyncio.ensure_future(self.worker(p, p)) for _ in range(self.SLOTS)]
        seeds = tasks[:len(holders) * self.SLOTS]
        last, before = time.monotonic(), len(self.done)
        try:
            while not self.finished():
                pending = [w for w in tasks if not w.done()]
                if not pending:
                    break
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED, timeout=1)
                for w in tasks:
                    if w.done() and not w.cancelled() and w.exception():
                        raise w.exception()
                if len(self.done) > before:
                    last, before = time.monotonic(), len(self.done)
                elif all(w.done() for w in seeds) and \
                        time.monotonic() - last > 4 * self.p.stall:
                    break  # no whole holder left, and the others make no progress
        finally:
            with self.writing:  # a piece thread still running writes nothing from now on
                self.open = False
            for w in tasks:
                w.cancel()
            for c in self.conns:  # wake the threads still reading
                c.closed = True
                c.interrupt()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.pool.shutdown(wait=False)
        return self.finished()

    def _write(self, req, data, lo):
        """Write DATA at LO of the partial file for REQ (from a piece thread); DATA
        None: REQ's streamed bytes checked out.  False, and nothing written, once
        run() has ended (the caller closes the file then, and its number may be
        reused) or once REQ's piece is sealed.  One request at a time streams a
        piece's bytes here unverified (the piece is nobody's to read until it is
        in `.have`; worker() makes only a piece's first request in flight a
        DIRECT one); a duplicate (hedged) request writes only a whole verified
        piece.  Either seals the piece: no byte lands in it after it checked out."""
        with self.writing:
            if not self.open or req.i in self.sealed:
                return False
            if data is None or not req.direct:
                self.sealed.add(req.i)
            if data is not None:
                os.pwrite(self.fd, data, lo)
            return True

    def _changed(self):
        """Wake every waiting worker (each waits on its own future: none can
        swallow another's wake-up)."""
        waiting, self.waiting = self.waiting, []
        for f in waiting:
            if not f.done():
                f.set_result(None)

    def _learn(self, peer, pieces):
        held = self.held[peer]
        for i in pieces:
            if 0 <= i < self.n and i not in held:
                held.add(i)
                self.count[i] += 1

    def _claim(self, claimed, unclaimed):
        """A hint only, and short-lived: a puller that dies keeps no piece from
        the seeds for long."""
        until = time.monotonic() + self.CLAIM_FOR
        for i in claimed:
            self.claimed[i] = until
        for i in unclaimed:
            self.claimed.pop(i, None)

    def _forget(self, peer, i):
        held = self.held.get(peer)
        if held is not None and i in held:
            held.discard(i)
            self.count[i] -= 1

    def _ban(self, peer, why):
        """No more from PEER in this transfer, nor counting on what it holds."""
        self.t.banned[peer] = why
        for i in list(self.held.get(peer) or ()):
            self._forget(peer, i)

    async def watch(self, peer):
        """Keep self.held[peer] up to date while PEER pulls the same blob."""
        import aiohttp
        url = f"{peer}/share/v1/partial/{self.digest}"
        end, failures = 0, 0
        while not self.finished() and peer not in self.t.banned and failures < 3:
            t0 = time.monotonic()
            try:
                async with self.p.session.get(url, params={"from": end, "wait": 2},
                                              timeout=aiohttp.ClientTimeout(
                                                  total=2 + self.p.stall)) as r:
                    got = await r.json() if r.status == 200 else None
                failures = 0
            except Exception as e:
                if not _err(e) and not isinstance(e, ValueError):
                    raise
                got, failures = None, failures + 1
            if got and got.get("complete"):
                self._learn(peer, range(self.n))
                self._changed()
                return
            if got and isinstance(got.get("have"), list) and isinstance(got.get("end"), int):
                if got.get("reset"):
                    for i in list(self.held[peer]):
                        self._forget(peer, i)
                self._claim(_ints(got.get("claimed")), _ints(got.get("unclaimed")))
                self._learn(peer, _ints(got["have"]))
                end = got["end"]
                self._changed()
            await asyncio.sleep(max(0.0, self.POLL - (time.monotonic() - t0)))
        if not self.finished():  # it went away: count on none of its pieces
            for i in list(self.held[peer]):
                self._forget(peer, i)

    def _choose(self, peer, spare):
        from .pieces import pick
        held = None if spare else self.held[peer]
        now = time.monotonic()
        claimed = {i for i, until in self.claimed.items() if until > now} if spare else ()
        i = pick(self.need, held, self.count, self.rng, spare, claimed)
        if i is not None:
            self.need.discard(i)
            self.inflight[i] = {peer: now}
            if spare:  # tell the other pullers not to ask a seed for it too
                os.write(self.have_fd, b"c%d\n" % i)
            return i
        if self.need:
            return None
        # endgame: duplicate the piece in flight longest that this peer holds
        # (a seed only what no puller holds)
        late = [j for j, by in self.inflight.items() if peer not in by
                and (j in held if held is not None else self.count[j] == 0)
                and now - min(by.values()) > self.HEDGE_AFTER]
        if not late:
            return None
        i = min(late, key=lambda j: min(self.inflight[j].values()))
        self.inflight[i][peer] = now
        return i

    async def worker(self, peer, partial):
        """Fetch pieces from PEER: a whole holder (PARTIAL None) by Range on the
        blob, a peer still pulling through its verified pieces."""
        spare = partial is None
        conn = _PieceConn(peer, self.p.stall)
        self.conns.append(conn)
        loop = asyncio.get_running_loop()
        while not self.finished() and peer not in self.t.banned:
            i = self._choose(peer, spare)
            if i is None:
                woken = asyncio.get_running_loop().create_future()
                self.waiting.append(woken)
                try:
                    await asyncio.wait_for(woken, 0.25)
                except asyncio.TimeoutError:
                    pass
                continue
            lo = i * self.psize
            n = min(self.psize, self.size - lo)
            target = self.path if spare else f"/share/v1/partial/{self.digest}/{i}"
            req = _Request(i, i not in self.direct)
            if req.direct:
                self.direct[i] = req
            good = None  # written and verified; False: bad bytes; None: none came
            try:
                good = await loop.run_in_executor(self.pool, conn.get, target, n, lo,
                                                  self.checker(i), req, self._write)
            except Exception as e:
                if not _err(e):
                    raise
                if spare or not isinstance(e, EOFError):
                    self._ban(peer, f"failed: {type(e).__name__} {e}"[:120])
                else:
                    self._forget(peer, i)  # it does not have it after all
            finally:
                if self.direct.get(i) is req:
                    del self.direct[i]
            by = self.inflight.get(i, {})
            by.pop(peer, None)
            if i in self.done:
                continue
            if good is False:
                self._ban(peer, f"sent a bad piece {i}")
                self.p.log(f"share: banned {peer}: piece {i} did not match")
                good = None
            if good is None:
                if spare:
                    os.write(self.have_fd, b"u%d\n" % i)
                if not by:
                    self.inflight.pop(i, None)
                    self.need.add(i)
                self._changed()
                continue
            os.write(self.have_fd, b"%d\n" % i)
            self.done.add(i)
            self.whole.advance(self.done)
            self.inflight.pop(i, None)
            self.t.bytes_from[peer] = self.t.bytes_from.get(peer, 0) + n
            self.t.fetched += n
            self.p.progress(n)
            self._changed()
        self._changed()


class _Checker:
    """Checkers of the pieces of PLIST: CHECKER(i) is a fresh one for piece i
    (update(bytes), then ok()).  With STATES, piece i resumes the blob's
    SHA-256 from STATES[i] and must end in STATES[i + 1] (the last one: in
    the blob's digest); without, its own SHA-256 must be the list's."""

    def __init__(self, plist, states):
        self.hashes, self.states = plist["pieces"], states
        self.psize, self.digest = plist["pieceSize"], plist["digest"]

    def __call__(self, i):
        if self.states is None:
            return _Hashed(self.hashes[i])
        from .midstate import Chain
        last = i + 1 == len(self.states)
        return _Hashed(self.digest[7:] if last else self.states[i + 1],
                       Chain(self.states[i], i * self.psize), not last)


class _Hashed:
    def __init__(self, want, h=None, midstate=False):
        self.want, self.midstate = want, midstate
        self.h = h or hashlib.sha256()

    def update(self, data):
        self.h.update(data)

    def ok(self):
        return (self.h.state() if self.midstate else self.h.hexdigest()) == self.want


class _Chained:
    """The whole blob's hash when its pieces were checked as links of it
    (_Checker with states): every piece checked is the blob hashed."""

    def __init__(self, digest):
        self.d = digest

    def advance(self, done):
        pass

    async def digest(self):
        return self.d

    def close(self):
        pass


class _Request:
    """One request for piece I: DIRECT if its bytes stream into the partial file
    as they come (no other request in flight streams that piece)."""

    __slots__ = ("i", "direct")

    def __init__(self, i, direct):
        self.i, self.direct = i, direct


CHUNK = 256 << 10  # bytes received, hashed and written at a time: they stay in the CPU's cache


class _Prefix:
    """The whole blob's SHA-256, taken while it is fetched: pieces arrive in any
    order, so the hash follows the verified prefix, each piece read back from
    the partial file (the page cache) in a thread of its own.  The blob is
    hashed by the time its last piece lands, not in one pass after it (which
    eight pulls ending together would queue for)."""

    def __init__(self, fd, psize, size):
        from concurrent.futures import ThreadPoolExecutor
        self.fd, self.psize, self.size = fd, psize, size
        self.pieces = -(-size // psize)
        self.hash = hashlib.sha256()
        self.next = 0        # the first piece not handed to the thread yet
        self.last = None     # the future of the last piece handed over
        self.failed = False
        self.buf = bytearray(min(psize, CHUNK))
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="blobhash")

    def advance(self, done):
        """Hand over the pieces in DONE that now extend the prefix."""
        while self.next < self.pieces and self.next in done:
            self.last = self.thread.submit(self._feed, self.next)
            self.next += 1

    def _feed(self, i):
        lo, end = i * self.psize, min((i + 1) * self.psize, self.size)
        while lo < end and not self.failed:  # in chunks that stay in the cache to be hashed
            view = memoryview(self.buf)[:min(len(self.buf), end - lo)]
            try:
                if os.preadv(self.fd, [view], lo) != len(view):
                    self.failed = True
            except OSError:
                self.failed = True
            if not self.failed:
                self.hash.update(view)
            lo += len(view)

    async def digest(self):
        """sha256:HEX of the blob (every piece handed over), None if a read failed."""
        if self.next < self.pieces:
            return None
        if self.last is not None:
            await asyncio.wrap_future(self.last)
        return None if self.failed else "sha256:" + self.hash.hexdigest()

    def close(self):
        """Before the partial file is closed: no read may follow."""
        self.thread.shutdown(wait=True, cancel_futures=True)


class _PieceConn:
    """One keep-alive HTTP connection to a peer, used from a worker thread.  A
    piece is read by blocking calls that loop in C (and hashed there, without
    the GIL) rather than packet by packet through the event loop: receiving
    costs several times less CPU, which is what many pulls at once run out of."""

    def __init__(self, peer, stall):
        from urllib.parse import urlsplit
        u = urlsplit(peer)
        self.https, self.host, self.port = u.scheme == "https", u.hostname, u.port
        self.prefix = u.path.rstrip("/")
        self.stall = stall
        self.c = None
        self.closed = False  # by the swarm at its end: no more requests
        self.buf = bytearray(CHUNK)  # a direct request's chunks
        self.whole = bytearray()     # a duplicate request's piece, grown when first needed

    def get(self, target, n, lo, check, req, write):
        """Fetch the N bytes at LO of TARGET by Range for REQ, handing them to
        WRITE(REQ, bytes, LO): True if CHECK (a _Hashed) finds them good, False if not,
        None if WRITE refused them (another request's copy won).  A DIRECT
        request streams them in chunks (received, hashed and written while in
        the CPU's cache; a 4 MB buffer per connection cost page faults, zeroing
        and a copy from memory); a duplicate receives the whole piece first and
        hands it over only if it checks out.  Off the event loop.  EOFError if
        the peer does not have them, OSError if it failed."""
        import http.client
        if self.closed:
            raise ConnectionError("the transfer is over")
        if self.c is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.c = cls(self.host, self.port, timeout=self.stall)  # no byte for `stall`: dead
        headers = {"Range": f"bytes={lo}-{lo + n - 1}"}
        try:
            self.c.request("GET", self.prefix + target, headers=headers)
            r = self.c.getresponse()
            if r.status != 206:
                r.read(1 << 16)
                self.close()
                raise EOFError(f"answered {r.status} to a piece request")
            if r.length != n:
                self.close()
                raise EOFError(f"sends {r.length} bytes for a {n}-byte piece")
            if req.direct:
                return self._stream(r, n, lo, check, req, write)
            if len(self.whole) < n:
                self.whole = bytearray(n)
            buf = memoryview(self.whole)[:n]
            if r.readinto(buf) != n:
                raise ConnectionError(f"sent less than the {n}-byte piece")
            check.update(buf)
            if not check.ok():
                return False
            return True if write(req, buf, lo) else None
        except http.client.HTTPException as e:
            self.close()
            raise ConnectionError(f"{type(e).__name__} {e}") from None
        except OSError:
            self.close()
            raise

    def _stream(self, r, n, lo, check, req, write):
        end = lo + n
        while lo < end:
            view = memoryview(self.buf)[:min(len(self.buf), end - lo)]
            got = r.readinto(view)
            if not got:
                raise ConnectionError(f"sent less than the {n}-byte piece")
            view = view[:got]
            check.update(view)
            if not write(req, view, lo):
                self.close()  # the rest of the response is not wanted
                return None
            lo += got
        if not check.ok():
            return False
        return True if write(req, None, lo) else None

    def interrupt(self):
        """From another thread: make the blocking call of the thread using this
        connection return now (that thread closes it: http.client's objects are
        not for two threads at once; closing them from here failed the pull with
        an AttributeError now and then)."""
        c = self.c
        sock = getattr(c, "sock", None)
        if sock is not None:
            import socket
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        """In the thread using this connection."""
        c, self.c = self.c, None
        if c is not None:
            import socket
            if c.sock is not None:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            c.close()


def _ints(xs):
    return [x for x in xs if isinstance(x, int)] if isinstance(xs, list) else []


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
