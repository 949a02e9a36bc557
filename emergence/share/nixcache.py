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
DIGITS = re.compile(r"[0-9]*\Z")  # ASCII only: str.isdigit takes "²", which int() does not


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
        rng = byte_range(request.headers.get("Range"), info.nar_size)
        if rng is not None:
            start, end, status = rng[0], rng[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.nar_size}"
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


def byte_range(header, size):
    """[start, end) of the one byte range HEADER (a Range value) asks of SIZE
    bytes, or None to serve the whole, as RFC 9110 14.2 lets a server: no
    Range, another unit, or several ranges (Nix asks for one at most; a whole
    200 is a valid answer to a multi-range request).  A malformed range, or
    one past the end, raises 416 (with `Content-Range: bytes */SIZE`); the
    route's access class was checked before this runs."""
    if not header:
        return None
    unit, eq, spec = header.strip().partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    refuse = web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    ranges = [r.strip() for r in spec.split(",")]
    parsed = []
    for r in ranges:
        first, dash, last = r.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not DIGITS.match(first) or not DIGITS.match(last):
            raise refuse  # not a range at all (bytes=abc, bytes=-, bytes=1-2-3, bytes=²-)
        if first == "":
            if last == "":
                raise refuse
            n = _number(last)  # the last N bytes
            parsed.append((max(size - n, 0), size) if n else None)
            continue
        a = _number(first)
        b = size - 1 if last == "" else _number(last)
        if b < a:
            raise refuse  # bytes=5-2 is invalid (RFC 9110 14.1.1)
        parsed.append((a, min(b, size - 1) + 1) if a < size else None)
    if not any(parsed):
        raise refuse  # nothing satisfiable
    if len(parsed) > 1:
        return None  # several: the whole NAR, 200
    return parsed[0]


def _number(text):
    """TEXT's ASCII digits as an int, capped (Python refuses ints of 4,300 digits)."""
    return int(text) if len(text) <= 18 else 10 ** 18
