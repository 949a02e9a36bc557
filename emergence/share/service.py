"""The sharing part inside `emergence node`: the OCI distribution API and
the Nix binary cache on the node's listener, and the peer-to-peer endpoints
(/share/v1/: who this node is, whom it knows, signed piece lists)."""

import os

from aiohttp import web

from ..access import echo
from .registry import DIGEST_RE, error


class Service:
    """Long-running work of share inside `emergence node`."""

    name = "share"
    DEFAULTS = {
        "store": "",               # the image store ("" = the default store)
        "peers": [],               # base URLs of other nodes, e.g. "http://10.0.0.2:7480"
        "upstream": "",            # a registry for what no peer has, e.g. https://quay.io
        "readers": [],             # networks allowed to read ([] = whoever can connect)
        "trusted_keys": [],        # Nix-format public keys whose piece lists we accept
        "key_name": "",            # the key's name ("" = emergence-<hostname>-<8 hex of key>)
        "nix_store": "/nix/store",
        "piece_size": 0,           # bytes per piece of a piece list (0: by the blob's size)
        "advertise": "",           # the URL peers reach this node at (announced on push)
        "member_networks": [],     # learned members must be inside these ([] = anywhere)
        "gossip_interval": 2.0,    # seconds between membership exchanges
        "member_timeout": 10.0,    # a member silent this long is dead
        "max_manifest": 4 << 20,   # bytes: a larger manifest push is 413
        "upload_expiry": 3600.0,   # seconds an idle upload session (and its file) lives
    }
    MAX_ANNOUNCED = 100_000

    def __init__(self, config, state_dir, log):
        from ..image.store import Store
        from .nixcache import NixCache
        from .registry import Registry
        from .signing import load_or_make_key, public_keys
        self.config = {**self.DEFAULTS, **(config or {})}
        self.config["trusted_keys"] = public_keys(self.config["trusted_keys"],
                                                  "[share] trusted_keys:")
        self.state_dir = state_dir
        self.log = log
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.store = Store(self.config["store"] or None)
        self.key = load_or_make_key(state_dir, self.config["key_name"] or None, log)
        self.registry = Registry(self.store, state_dir, log, self.config["max_manifest"],
                                 self.config["upload_expiry"])
        self.cache = NixCache(self.key, self.config["nix_store"], log=log)
        self.piece_lists = {}
        self.partial_shapes = {}  # PART.pieces -> (its stat key, (size, pieceSize, pieces))
        self.have_watches = {}  # digest -> [futures of long polls waiting, the state seen]
        self.holders = {}  # ref or digest -> URLs of nodes that announced it
        self.tasks = set()
        self.registry.on_put = self._announce
        from .members import Members
        self.members = Members(self.key, self.config["advertise"], self.config["peers"],
                               self.config["trusted_keys"], self.config["member_networks"],
                               self.config["gossip_interval"], self.config["member_timeout"],
                               log)

    def routes(self):
        """Every route with its access class (access.py); `[share] readers`
        limits who may read these (the node's `[node] readers` limits all)."""
        from .. import access
        nets = self.config["readers"]
        reads = [web.get("/share/v1/info", self.info),
                 web.get("/share/v1/peers", self.peers),
                 web.get("/share/v1/members", self.members_get),
                 web.get("/share/v1/tag", self.tag),
                 web.get("/share/v1/pieces/{digest}", self.pieces),
                 web.get("/share/v1/who-has", self.who_has),
                 web.get("/share/v1/partial/{digest}", self.partial_have),
                 web.get("/share/v1/partial/{digest}/{piece:[0-9]+}", self.partial_piece)]
        signed = [web.post("/share/v1/members", self.members_post),  # records signed
                  web.post("/share/v1/announce", self.announced)]  # signed, or the token
        return ([access.classed(cls, r, nets) for cls, r in self.registry.routes()]
                + [access.read(r, nets) for r in self.cache.routes() + reads]
                + [access.signed(r, nets) for r in signed])

    async def start(self):
        import asyncio
        self.log(f"share: serving {self.store.root}; cache key {self.key.public()}")
        self.registry.start()
        if self.config["peers"] or self.config["advertise"]:
            if not self.config["trusted_keys"]:
                self.log("share: no [share] trusted_keys: no members are learned, "
                         "only the static peers are used")
            task = asyncio.ensure_future(self.members.run())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def stop(self):
        for t in list(self.tasks):
            t.cancel()
        self.registry.close()

    def status(self):
        return {"store": self.store.root, "public_key": self.key.public(),
                "peers": list(self.config["peers"]), "members": self.members.table(),
                "uploads": len(self.registry.uploads)}

    async def info(self, request):
        return web.json_response({"public_key": self.key.public(), "store": "oci"})

    async def peers(self, request):
        """The static peers and the live members (each signed by a trusted key)."""
        return web.json_response({"peers": list(dict.fromkeys(
            [p.rstrip("/") for p in self.config["peers"]] + self.members.live()))})

    async def tag(self, request):
        """This node's signed statement of what NAME:TAG is here."""
        from . import tags
        name, tag = request.query.get("name", ""), request.query.get("tag", "")
        if DIGEST_RE.match(tag):
            raise error(400, "TAG_INVALID", "a digest needs no statement")
        _, digest = self.registry._find_manifest(name, tag)
        return web.json_response(tags.statement(self.key, name, tag, digest))

    async def members_get(self, request):
        return web.json_response({"members": self.members.table(),
                                  "records": self.members.records(),
                                  "refused": self.members.refused})

    async def members_post(self, request):
        """Push-pull: take the caller's signed member records, answer with ours.
        No token: a record counts only if a trusted key signed it."""
        import json

        from .. import access
        from .members import MAX_MEMBERS
        try:
            got = json.loads(await access.read_body(request, access.SIGNED_MAX))["members"]
            if not isinstance(got, list) or len(got) > MAX_MEMBERS:
                raise ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            return _bad("want {members: [{url, key, heartbeat, sig}...]}")
        self.members.merge(got)
        return web.json_response({"members": self.members.records()})

    # -- announce on put, ask on miss --
    def _announce(self, keys):
        """Tell the peers this node now holds KEYS (refs and digests): a hint
        only, since every byte is verified by whoever fetches it."""
        import asyncio
        if not self.config["advertise"] or not self.config["peers"]:
            return
        task = asyncio.ensure_future(self._send_announce(keys))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send_announce(self, keys):
        import aiohttp

        from .auth import sign_announce
        body = sign_announce(self.key, self.config["advertise"], keys)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            for peer in self.config["peers"]:
                try:
                    async with s.post(peer.rstrip("/") + "/share/v1/announce", json=body):
                        pass
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    self.log(f"share: announce to {peer} failed: {e}")

    async def announced(self, request):
        """A peer says it holds KEYS: taken if its node key signed it (a key in
        [share] trusted_keys) or the caller holds the node token."""
        import json

        from .. import access
        from .auth import announce_refused
        try:
            body = json.loads(await access.read_body(request, access.SIGNED_MAX))
            node, keys = body["node"], body["keys"]
            if not (isinstance(node, str) and node.startswith(("http://", "https://"))
                    and isinstance(keys, list) and len(keys) <= 1000
                    and all(isinstance(k, str) and len(k) < 300 for k in keys)):
                raise ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            return _bad("want {node: URL, keys: [ref or digest...], time, sig}")
        if not access.authenticated(request):
            refused = announce_refused(body, self.config["trusted_keys"])
            if refused is not None:
                status, why = refused
                return access.refusal(status, "UNAUTHORIZED" if status == 401 else "DENIED",
                                      why)
        if len(self.holders) < self.MAX_ANNOUNCED:
            for k in keys:
                self.holders.setdefault(k, set()).add(node.rstrip("/"))
        return web.json_response({"ok": True})

    async def who_has(self, request):
        key = request.query.get("key", "")
        return web.json_response({"key": key, "nodes": sorted(self.holders.get(key, ()))})

    # -- pieces of a pull in progress (its partial file in our state dir) --
    def _partial(self, request):
        digest = request.match_info["digest"]
        if not DIGEST_RE.match(digest):
            raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 digest")
        return digest, os.path.join(self.state_dir, "partial", digest[7:])

    def _partial_shape(self, part):
        """(size, pieceSize, pieces) of the piece list at PART.pieces, parsed once
        while the file is the same (a 1 GB blob's list is ~70 kB of JSON: parsing it
        for every piece served cost more than sending the piece)."""
        path = part + ".pieces"
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        known = self.partial_shapes.get(path)
        if known is not None and known[0] == key:
            return known[1]
        plist = _read_json(path)
        try:
            shape = (int(plist["size"]), int(plist["pieceSize"]), len(plist["pieces"]))
        except (TypeError, KeyError, ValueError):
            return None
        if len(self.partial_shapes) >= 64:  # pulls in flight: a few; forget the oldest
            self.partial_shapes.pop(next(iter(self.partial_shapes)))
        self.partial_shapes[path] = (key, shape)
        return shape

    def _partial_list(self, digest):
        return _read_json(os.path.join(self.state_dir, "partial", digest[7:] + ".pieces"))

    async def partial_have(self, request):
        """The pieces this node has verified of a blob it is pulling: the lines of
        its `.have` list from byte `from` on, waiting up to `wait` seconds (at
        most 5) for new ones, so that peers learn of a piece as soon as it lands
        without polling hard.  `complete` once the blob is in the store."""
        import time
        digest, part = self._partial(request)
        try:
            start = int(request.query.get("from", 0))
            wait = min(float(request.query.get("wait", 0)), 5.0)
        except ValueError:
            raise web.HTTPBadRequest(text="from is a byte offset, wait seconds\n") from None
        deadline = time.monotonic() + wait
        while True:
            complete, size = self._have_state(digest, part)
            if complete:
                return web.json_response({"digest": digest, "complete": True})
            if size is not None and (size != start or time.monotonic() >= deadline):
                break
            if time.monotonic() >= deadline:
                raise web.HTTPNotFound()
            await self._have_changed(digest, part, deadline, (complete, size))
        reset = size < start
        try:
            with open(part + ".have", "rb") as f:
                f.seek(0 if reset else start)
                data = f.read()
        except OSError:
            raise web.HTTPNotFound() from None
        data = data[:data.rfind(b"\n") + 1]  # whole lines only
        lists = {b"": [], b"c": [], b"u": []}
        for line in data.split():  # "7": verified; "c7": asked a seed for it; "u7": no more
            kind = line[:1] if line[:1] in (b"c", b"u") else b""
            if line[len(kind):].isdigit():
                lists[kind].append(int(line[len(kind):]))
        shape = self._partial_shape(part)   # its piece size: the numbers are of its list's pieces
        return web.json_response({"digest": digest, "have": lists[b""], "claimed": lists[b"c"],
                                  "unclaimed": lists[b"u"], "reset": reset,
                                  "end": (0 if reset else start) + len(data),
                                  "pieceSize": shape[1] if shape else None})

    def _have_state(self, digest, part):
        """(whole in the store, size of PART's .have list or None)."""
        if os.path.isfile(self.store.blob_path(digest)):
            return True, None
        try:
            return False, os.stat(part + ".have").st_size
        except OSError:
            return False, None

    async def _have_changed(self, digest, part, deadline, seen):
        """Until DIGEST's have list (or whether it is whole) is no longer SEEN, or
        DEADLINE.  One watcher a blob looks every 50 ms for all the peers
        long-polling it (seven pullers each polling alone cost a stat and a
        wake-up apiece)."""
        import asyncio
        import time
        watch = self.have_watches.get(digest)
        if watch is None:
            watch = self.have_watches[digest] = [set(), seen]
            asyncio.ensure_future(self._watch_have(digest, part, watch))
        elif watch[1] != seen:
            return  # it changed since the caller looked
        woken = asyncio.get_running_loop().create_future()
        watch[0].add(woken)
        try:
            await asyncio.wait_for(woken, max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            pass
        finally:
            watch[0].discard(woken)

    async def _watch_have(self, digest, part, watch):
        import asyncio
        try:
            while watch[0]:
                await asyncio.sleep(0.05)
                now = self._have_state(digest, part)
                if now != watch[1]:
                    watch[1] = now
                    for f in list(watch[0]):
                        if not f.done():
                            f.set_result(None)
                if not watch[0]:
                    break
        finally:
            self.have_watches.pop(digest, None)

    async def partial_piece(self, request):
        """One verified piece of a blob this node is pulling (one its `.have` list
        names: written there only once the piece is verified and on disk), or of
        one it now holds whole; by Range (the piece's bytes), sent with sendfile."""
        digest, part = self._partial(request)
        i = int(request.match_info["piece"])
        try:
            rng = request.http_range
        except ValueError:
            raise web.HTTPRequestRangeNotSatisfiable() from None
        whole = self.store.blob_path(digest)
        if os.path.isfile(whole):
            try:
                fd = os.open(whole, os.O_RDONLY)
            except FileNotFoundError:
                raise web.HTTPNotFound() from None
            size = os.fstat(fd).st_size
            if rng.start is not None and rng.stop is not None and \
                    0 <= rng.start < rng.stop <= size:
                return await _send(request, fd, rng.start, rng.stop, size)
            os.close(fd)
            return web.FileResponse(whole)
        shape = self._partial_shape(part)
        if shape is None or i >= shape[2] or rng.start is None:
            raise web.HTTPNotFound()
        size, psize, _ = shape
        if (rng.start, rng.stop) != (i * psize, min(size, (i + 1) * psize)):
            raise web.HTTPRequestRangeNotSatisfiable()
        try:
            with open(part + ".have", "rb") as f:
                have = f.read()
        except OSError:
            raise web.HTTPNotFound() from None
        if b"\n%d\n" % i not in b"\n" + have:
            raise web.HTTPNotFound()  # not verified here yet: never pass it on
        try:
            fd = os.open(part, os.O_RDONLY)
        except FileNotFoundError:  # moved into the store meanwhile: ask again
            raise web.HTTPNotFound() from None
        return await _send(request, fd, rng.start, rng.stop, size)

    async def pieces(self, request):
        """The signed piece list of a blob (made once, in a worker thread)."""
        import asyncio
        digest = request.match_info["digest"]
        if not DIGEST_RE.match(digest):
            raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 digest")
        made = self.piece_lists.get(digest)
        if made is None:
            path = self.store.blob_path(digest)
            if not os.path.isfile(path):
                partial = self._partial_list(digest)  # as signed by the node it came from
                if partial is None:
                    raise error(404, "BLOB_UNKNOWN", f"blob {digest} unknown")
                return web.json_response(partial)
            made = self.piece_lists[digest] = asyncio.ensure_future(self._make_list(
                path, digest))  # hashed once however many pullers ask at once
        plist = await asyncio.shield(made)
        if plist is None:  # never vouch for bytes that are not what their name says
            self.piece_lists.pop(digest, None)
            raise error(404, "BLOB_UNKNOWN", f"blob {digest} is corrupt here")
        return web.json_response(plist)

    async def _make_list(self, path, digest):
        import asyncio

        from . import pieces
        plist = await asyncio.get_running_loop().run_in_executor(
            None, pieces.make, path, digest, int(self.config["piece_size"]))
        return plist and pieces.sign(plist, self.key)


async def _send(request, fd, start, stop, size):
    """Bytes START..STOP of the open file FD (of SIZE bytes; closed here) as a
    206, by sendfile: what FileResponse does for a piece, without its trips
    to a thread to open and stat the file (a piece a few ms of CPU, eight
    pullers at once)."""
    f = os.fdopen(fd, "rb")
    try:
        resp = web.StreamResponse(status=206, headers={
            "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
            "Content-Range": f"bytes {start}-{stop - 1}/{size}"})
        resp.content_length = stop - start
        await resp.prepare(request)
        if request.method != "HEAD":
            try:
                await request._loop.sendfile(request.transport, f, start, stop - start)
            except NotImplementedError:  # TLS: through the event loop
                f.seek(start)
                left = stop - start
                while left:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        raise ConnectionError("the file is shorter than it was")
                    await resp.write(chunk)
                    left -= len(chunk)
        await resp.write_eof()
        return resp
    finally:
        f.close()


def _read_json(path):
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _bad(msg):
    return web.json_response({"error": msg}, status=400)


def make_app(service, policy):
    """An aiohttp application with SERVICE's routes under POLICY (access.py)."""
    from .. import access
    app = access.application(service.routes(), policy, client_max_size=1 << 30)
    app.on_startup.append(lambda app: service.start())
    app.on_cleanup.append(lambda app: service.stop())
    return app


def main(argv=None):
    """Serve this part alone (as the tests do; the node hosts it otherwise):
    python -m emergence.share.service --listen HOST:PORT --state DIR [--config JSON]
    [--limits JSON] (the listener's [node] limits, emergence/listener.py).
    The token is DIR/node.token (made on first start)."""
    import argparse
    import asyncio
    import json
    import signal

    from .. import access, listener
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:7480")
    ap.add_argument("--state", default="/var/lib/emergence/share")
    ap.add_argument("--config", default="{}")
    ap.add_argument("--limits", default="{}")
    a = ap.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    from .auth import LEGACY_TOKEN_FILE
    token = access.load_or_make_token(a.state, os.path.join(a.state, LEGACY_TOKEN_FILE))
    limits = listener.limits_of(json.loads(a.limits))

    async def run():
        svc = Service(json.loads(a.config), a.state, lambda m: print(m, flush=True))
        policy = access.Policy(token, uploads_per_client=limits["uploads_per_client"])
        runner = await listener.serve(make_app(svc, policy), host, int(port), None, limits)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    asyncio.run(run())


if __name__ == "__main__":
    main()
