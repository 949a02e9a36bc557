"""Who may write: one secret token in a root-only file of the node's state
dir (`push.token`, made on first start).  A client presents it as HTTP
Bearer, or as the password of HTTP Basic (any user name) so skopeo's and
podman's `--creds user:TOKEN` work.  Reads may be limited to networks.
"""

import base64
import hmac
import ipaddress
import os
import secrets

TOKEN_FILE = "push.token"


def load_or_make_token(state_dir):
    """The node's push token, made (0600, atomically) if there is none."""
    path = os.path.join(state_dir, TOKEN_FILE)
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return token


class TokenAuth:
    def __init__(self, token, readers=()):
        self.token = token.encode()
        self.readers = [ipaddress.ip_network(r, strict=False) for r in readers]

    def _presented(self, header):
        kind, _, value = header.partition(" ")
        if kind.lower() == "bearer":
            return value.strip().encode()
        if kind.lower() == "basic":
            try:
                return base64.b64decode(value.strip()).partition(b":")[2]
            except ValueError:
                return b""
        return b""

    def check(self, request):
        """Raise 401 unless REQUEST carries the token."""
        from .registry import error
        got = self._presented(request.headers.get("Authorization", ""))
        if not got or not hmac.compare_digest(got, self.token):
            raise error(401, "UNAUTHORIZED", "pushing needs the node's token "
                        "(--creds any:TOKEN or Authorization: Bearer TOKEN)",
                        headers={"WWW-Authenticate": 'Basic realm="emergence"'})

    def reader_guard(self, handler):
        """HANDLER, refusing readers outside the allowed networks (if any are set)."""
        if not self.readers:
            return handler

        async def guarded(request):
            peer = request.remote or ""
            try:
                addr = ipaddress.ip_address(peer)
            except ValueError:
                addr = None
            if addr is None or not any(addr in net for net in self.readers):
                from .registry import error
                raise error(403, "DENIED", f"{peer} may not read from this node")
            return await handler(request)
        return guarded
