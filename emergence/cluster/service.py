"""The cluster inside `emergence node`: on the node that holds the CA
(`<state_dir>/cluster/ca.key`), the join route; elsewhere nothing.

  POST /cluster/v1/join   a join request (join.py); 200 with the
                          certificate, 403 for a bad/used/expired token,
                          400 for a malformed request.
The route authenticates its own payload with the token's HMAC (route class
`signed`), so it needs no node token.
"""


class Service:
    name = "cluster"
    DEFAULTS = {"join": True}  # serve the join route when this node holds the CA

    def __init__(self, config, state_dir, log):
        from .files import Material
        self.config = dict(self.DEFAULTS, **(config or {}))
        self.material, self.log = Material(state_dir), log

    async def start(self):
        pass

    async def stop(self):
        pass

    def status(self):
        return {"ca": self.material.is_ca()}

    def routes(self):
        from aiohttp import web

        from .. import access
        if not (self.config["join"] and self.material.is_ca()):
            return []
        # signed: the body proves itself by the join token's HMAC (join.py)
        return [access.signed(web.post("/cluster/v1/join", self._join))]

    async def _join(self, request):
        import asyncio

        from aiohttp import web

        from ..errors import EmergenceError
        from .join import Refused, answer
        try:
            body = await request.json()
        except Exception:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                None, answer, self.material, body)
        except Refused as e:
            self.log(f"cluster: join refused from {request.remote}: {e}")
            return web.json_response({"error": str(e)}, status=403)
        except EmergenceError as e:
            return web.json_response({"error": str(e)[:500]}, status=400)
        self.log(f"cluster: {body.get('name')} joined with roles {', '.join(out['roles'])}")
        return web.json_response(out)
