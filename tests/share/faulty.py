"""A misbehaving network in front of an honest node, for the pull tests:
  corrupt      flips one byte in every blob body it forwards
  die=N        forwards N bytes of blob bodies, then the process exits (kill)
  stall=N      forwards N bytes of blob bodies, then sends nothing more
  slow=BPS     forwards blob bodies at BPS bytes a second
  swap=URL     answers manifests asked for by tag from the node at URL (a peer
               lying about what a tag means)
Everything else (manifests, piece lists) passes through unchanged.

python faulty.py PORT UPSTREAM_URL MODE
"""

import asyncio
import os
import sys

from aiohttp import ClientSession, web

port, upstream, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
kind, _, arg = mode.partition("=")
sent = 0


async def handle(request):
    global sent
    async with ClientSession(auto_decompress=False) as s:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        to = arg if kind == "swap" and "/manifests/" in request.path and \
            "sha256:" not in request.path else upstream
        async with s.request(request.method, to + request.path_qs, headers=headers,
                             data=await request.read()) as r:
            blob = "/blobs/sha256:" in request.path and request.method == "GET"
            resp = web.StreamResponse(status=r.status, headers={
                k: v for k, v in r.headers.items()
                if k.lower() not in ("transfer-encoding", "connection")})
            await resp.prepare(request)
            first = True
            async for chunk in r.content.iter_chunked(1 << 16):
                if blob:
                    if kind == "corrupt" and first:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    if kind in ("die", "stall") and sent + len(chunk) > int(arg):
                        if kind == "die":
                            os._exit(9)
                        await asyncio.sleep(3600)
                    if kind == "slow":
                        await asyncio.sleep(len(chunk) / int(arg))
                    sent += len(chunk)
                    first = False
                await resp.write(chunk)
            await resp.write_eof()
            return resp

app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
