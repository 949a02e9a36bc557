"""`emergence pull`: an image from many peers at once, trusting none.

A blob that peers hold is fetched in pieces (Range requests), every peer
working on its own piece; each piece is checked against a piece list that a
node whose key we trust signed (pieces.py).  A peer that sends a bad piece
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
        import aiohttp
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
                    await self._blob(name, b["digest"], b["size"])
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
                if await self._pieces(path, holders, others, plist, part):
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

    async def _have(self, peer, digest):
        """The pieces PEER has verified of a blob it is still pulling."""
        import aiohttp
        try:
            async with self.session.get(f"{peer}/share/v1/partial/{digest}",
                                        timeout=aiohttp.ClientTimeout(total=self.stall)) as r:
                if r.status == 200:
                    return set((await r.json()).get("have", []))
        except Exception as e:
            if not _err(e) and not isinstance(e, ValueError):
                raise
        return set()

    async def _pieces(self, path, holders, others, plist, part):
        import random
        psize, size, hashes = plist["pieceSize"], plist["size"], plist["pieces"]
        digest = plist["digest"]
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        have_path = part + ".have"
        try:
            os.ftruncate(fd, size)
            done = await asyncio.get_running_loop().run_in_executor(
                None, _verified_pieces, fd, psize, size, hashes)
            _write_atomic(part + ".pieces", plist)
            have_fd = os.open(have_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            for i in sorted(done):
                os.write(have_fd, b"%d\n" % i)
            self.t.resumed += sum(min(psize, size - i * psize) for i in done)
            self.progress(sum(min(psize, size - i * psize) for i in done))
            todo = [i for i in range(len(hashes)) if i not in done]
            random.shuffle(todo)  # pullers starting together ask the seed for different pieces
            inflight = {}  # piece -> start time
            hedging = {}
            wake = asyncio.Event()

            peer_have = {}  # peer still pulling -> the pieces it said it has

            async def worker(peer, whole):
                have = set()
                patience = 0
                while len(done) < len(hashes) and peer not in self.t.banned:
                    if not whole:
                        i = next((j for j in todo if j in have and j not in inflight), None)
                        if i is None:
                            have = peer_have[peer] = await self._have(peer, digest)
                            i = next((j for j in todo if j in have and j not in inflight),
                                     None)
                            if i is None:
                                await asyncio.sleep(0.2)
                                continue
                        todo.remove(i)
                        inflight[i] = time.monotonic()
                    else:
                        # rarest first: what no other puller has yet; what they have
                        # they can serve, sparing the whole holder's upload
                        held = set().union(*peer_have.values()) if peer_have else set()
                        free = [j for j in todo if j not in inflight]
                        i = next((j for j in free if j not in held), None)
                        if i is None and free and patience < 10:
                            patience += 1
                            await asyncio.sleep(0.2)
                            continue
                        if i is None and free:
                            i = free[0]
                        if i is None:  # endgame: hedge the oldest piece in flight
                            i = min((j for j in inflight if j not in done),
                                    key=lambda j: inflight[j], default=None)
                            if i is None or peer in hedging.get(i, ()):
                                wake.clear()
                                await wake.wait()
                                continue
                        else:
                            patience = 0
                            todo.remove(i)
                            inflight[i] = time.monotonic()
                    hedging.setdefault(i, set()).add(peer)
                    lo = i * psize
                    n = min(psize, size - lo)
                    try:
                        if whole:
                            data = await self._range(peer + path, lo, n)
                        else:
                            data = await self._range(
                                f"{peer}/share/v1/partial/{digest}/{i}", 0, n, ranged=False)
                    except Exception as e:
                        if not _err(e):
                            raise
                        if whole or not isinstance(e, EOFError):
                            self.t.banned[peer] = f"failed: {type(e).__name__} {e}"[:120]
                        data = None
                        have.discard(i)
                    hedging[i].discard(peer)
                    if i in done:
                        continue
                    if data is not None and hashlib.sha256(data).hexdigest() != hashes[i]:
                        self.t.banned[peer] = f"sent a bad piece {i}"
                        self.log(f"share: banned {peer}: piece {i} did not match")
                        data = None
                    if data is None:
                        if not hedging[i]:
                            inflight.pop(i, None)
                            todo.insert(0, i)
                        wake.set()
                        if peer in self.t.banned:
                            return
                        continue
                    os.pwrite(fd, data, lo)
                    os.write(have_fd, b"%d\n" % i)
                    done.add(i)
                    inflight.pop(i, None)
                    self.t.bytes_from[peer] = self.t.bytes_from.get(peer, 0) + n
                    self.t.fetched += n
                    self.progress(n)
                    wake.set()
                wake.set()

            last = time.monotonic()
            workers = [asyncio.ensure_future(worker(p, True)) for p in holders for _ in range(2)]
            partial = [asyncio.ensure_future(worker(p, False)) for p in others
                       for _ in range(2)]
            while len(done) < len(hashes):
                pending = [w for w in workers + partial if not w.done()]
                if not pending:
                    break
                before = len(done)
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED, timeout=1)
                wake.set()
                if len(done) > before:
                    last = time.monotonic()
                elif all(w.done() for w in workers) and time.monotonic() - last > 4 * self.stall:
                    break  # no whole holder left, and the partial ones make no progress
            for w in workers + partial:
                w.cancel()
            await asyncio.gather(*workers, *partial, return_exceptions=True)
            for w in workers + partial:
                if w.done() and not w.cancelled() and w.exception():
                    raise w.exception()
            os.fsync(fd)
            os.close(have_fd)
        finally:
            os.close(fd)
        if len(done) < len(hashes):
            return False  # every holder failed; the partial file stays for a resume
        for extra in (have_path, part + ".pieces"):
            try:
                os.unlink(extra)
            except FileNotFoundError:
                pass
        return await self._commit(part, digest)

    async def _range(self, url, lo, n, ranged=True):
        """N bytes at LO of URL, or an error; a pause of `stall` seconds is one."""
        import aiohttp
        headers = {"Range": f"bytes={lo}-{lo + n - 1}"} if ranged else {}
        async with self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.stall, sock_read=self.stall)) as r:
            if r.status != (206 if ranged else 200):
                raise EOFError(f"answered {r.status} to a Range request")
            buf = bytearray()
            async for chunk in r.content.iter_chunked(1 << 16):
                buf += chunk
                if len(buf) > n:
                    break
            if len(buf) != n:
                raise EOFError(f"sent {len(buf)} bytes for a {n}-byte piece")
            return bytes(buf)

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

    async def _commit(self, part, digest):
        """Copy PART into the store through a BlobWriter, which hashes it; commit
        only if the hash is DIGEST.  The partial file goes either way."""
        def copy():
            w = self.store.writer()
            try:
                with open(part, "rb") as f:
                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        w.write(b)
                if "sha256:" + w.hash.hexdigest() != digest:
                    w.abort()
                    return False
                w.commit()
                self.store.sync_dir()
                return True
            except BaseException:
                w.abort()
                raise
            finally:
                try:
                    os.unlink(part)
                except FileNotFoundError:
                    pass
        return await asyncio.get_running_loop().run_in_executor(None, copy)


def _write_atomic(path, obj):
    import json
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _verified_pieces(fd, psize, size, hashes):
    """The pieces of a partial file that already match their hashes (a resume)."""
    done = set()
    for i, want in enumerate(hashes):
        data = os.pread(fd, min(psize, size - i * psize), i * psize)
        if data.count(0) != len(data) and hashlib.sha256(data).hexdigest() == want:
            done.add(i)
    return done
