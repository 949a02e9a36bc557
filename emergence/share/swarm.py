"""The pieces of one blob from many peers at once (fetch.py's swarm mode):
which peer is asked for which piece, streaming a piece into the partial file
while it is hashed, checking it (piece hashes, or the blob's own SHA-256
resumed from a signed midstate), hedging, and the whole-blob hash that
follows the verified prefix.  Split from fetch.py, which decides when a blob
is pulled this way and commits it."""

import asyncio
import hashlib
import os
import time


def _err(e):
    import aiohttp
    return isinstance(e, (OSError, asyncio.TimeoutError, aiohttp.ClientError, EOFError))


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
        self.psize, self.size = plist["pieceSize"], plist["size"]
        self.digest = plist["digest"]
        self.n = len(plist["pieces"])
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
            if got and got.get("pieceSize") not in (None, self.psize):
                break   # its list cuts the blob otherwise: its piece numbers are not ours
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
