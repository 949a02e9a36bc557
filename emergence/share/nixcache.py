"""A Nix binary cache over the node's /nix/store: nix-cache-info,
<hash>.narinfo signed with the node's Ed25519 key, and nar/ files that
nar.py serialises on the fly (uncompressed, streamed, with Range).

Only paths the local Nix database calls valid are served, and only when the
NAR we produce hashes to the NarHash Nix recorded (a damaged store path is
refused, not passed on).  Facts about a path are computed once: store paths
never change.
"""

import asyncio
import os
import re

from aiohttp import web

from . import nar

HASH_RE = re.compile(r"[0-9a-df-np-sv-z]{32}\Z")


class PathInfo:
    __slots__ = ("path", "nar_hash", "nar_size", "references", "deriver")

    def fingerprint(self):
        """What the signature covers (Nix's ValidPathInfo::fingerprint)."""
        return (f"1;{self.path};sha256:{self.nar_hash};{self.nar_size};"
                + ",".join(self.references))


def _nix_store(*args):
    import subprocess
    p = subprocess.run(["nix-store", *args], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        return None
    return p.stdout.strip()


def path_info(path):
    """PathInfo of a valid store PATH (computing its NAR), or None."""
    import base64
    recorded = _nix_store("--query", "--hash", path)
    if recorded is None:
        return None
    info = PathInfo()
    info.path = path
    digest, info.nar_size = nar.hash_and_size(path)
    info.nar_hash = nar.nix32(digest)
    # nix-store prints sha256:<nix32> (older: hex); compare as bytes
    algo, _, value = recorded.partition(":")
    if value not in (info.nar_hash, digest.hex(), base64.b64encode(digest).decode()):
        raise OSError(f"{path}: its NAR hashes to sha256:{info.nar_hash}, Nix recorded "
                      f"{recorded}; run `nix-store --verify --check-contents`")
    refs = _nix_store("--query", "--references", path) or ""
    info.references = sorted(r for r in refs.split("\n") if r)
    deriver = _nix_store("--query", "--deriver", path)
    info.deriver = deriver if deriver and deriver != "unknown-deriver" else None
    return info


class NixCache:
    def __init__(self, key, store_dir="/nix/store", prefix="/nix-cache", log=print):
        self.key = key
        self.store_dir = store_dir.rstrip("/")
        self.prefix = prefix.rstrip("/")
        self.infos = {}  # hash part -> PathInfo
        self.log = log

    def routes(self):
        p = self.prefix
        return [web.get(f"{p}/nix-cache-info", self.cache_info),
                web.get(f"{p}/{{hash:[0-9a-z]+}}.narinfo", self.narinfo),
                web.get(f"{p}/nar/{{hash:[0-9a-z]+}}-{{narhash:[0-9a-z]+}}.nar", self.nar)]

    async def cache_info(self, request):
        return web.Response(text=f"StoreDir: {self.store_dir}\nWantMassQuery: 1\n"
                                 "Priority: 40\n", content_type="text/x-nix-cache-info")

    def _find(self, hashpart):
        if not HASH_RE.match(hashpart):
            return None
        try:
            for entry in os.scandir(self.store_dir):
                if entry.name.startswith(hashpart + "-") and not entry.name.endswith(".lock"):
                    return entry.path
        except FileNotFoundError:
            pass
        return None

    async def info(self, hashpart):
        info = self.infos.get(hashpart)
        if info is None:
            path = self._find(hashpart)
            if path is None:
                return None
            try:
                info = await asyncio.get_running_loop().run_in_executor(None, path_info, path)
            except OSError as e:
                self.log(f"share: not serving {path}: {e}")
                return None
            if info is not None:
                self.infos[hashpart] = info
        return info

    def narinfo_text(self, info):
        hashpart = os.path.basename(info.path)[:32]
        lines = [f"StorePath: {info.path}",
                 f"URL: nar/{hashpart}-{info.nar_hash}.nar",
                 "Compression: none",
                 f"FileHash: sha256:{info.nar_hash}",
                 f"FileSize: {info.nar_size}",
                 f"NarHash: sha256:{info.nar_hash}",
                 f"NarSize: {info.nar_size}",
                 "References: " + " ".join(os.path.basename(r) for r in info.references)]
        if info.deriver:
            lines.append(f"Deriver: {os.path.basename(info.deriver)}")
        lines.append(f"Sig: {self.key.sign(info.fingerprint())}")
        return "\n".join(lines) + "\n"

    async def narinfo(self, request):
        info = await self.info(request.match_info["hash"])
        if info is None:
            raise web.HTTPNotFound(text="no such path\n")
        return web.Response(text=self.narinfo_text(info), content_type="text/x-nix-narinfo")

    async def nar(self, request):
        info = await self.info(request.match_info["hash"])
        if info is None or info.nar_hash != request.match_info["narhash"]:
            raise web.HTTPNotFound(text="no such NAR\n")
        start, end = 0, info.nar_size  # [start, end)
        status = 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/x-nix-nar"}
        rng = _range(request, info.nar_size)
        if rng is not None:
            s, e = rng.start, rng.stop
            if s is not None and s < 0:
                s, e = max(info.nar_size + s, 0), info.nar_size
            s = s or 0
            e = info.nar_size if e is None else min(e, info.nar_size)
            if s >= info.nar_size or s >= e:
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{info.nar_size}"})
            start, end, status = s, e, 206
            headers["Content-Range"] = f"bytes {s}-{e - 1}/{info.nar_size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        loop = asyncio.get_running_loop()
        stream = nar.dump(info.path)
        pos = 0
        done = object()
        while pos < end:
            chunk = await loop.run_in_executor(None, next, stream, done)
            if chunk is done:
                break
            lo, hi = max(start - pos, 0), min(end - pos, len(chunk))
            pos += len(chunk)
            if lo < hi:
                await resp.write(chunk[lo:hi])
        await resp.write_eof()
        return resp


def _range(request, size):
    """The request's byte range (a slice), or None for the whole NAR.  As RFC
    9110 14.2 says: a Range in another unit is ignored; one this server cannot
    take (malformed, or several ranges) is refused with 416, not a 500."""
    header = request.headers.get("Range")
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    try:
        return request.http_range
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable(
            headers={"Content-Range": f"bytes */{size}"}) from None
