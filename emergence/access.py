"""Who may do what on the node's one HTTP listener: every route is classed
`read`, `write`, `control` or `signed`, and this module alone decides.

- read: open, or limited to networks (`[node] readers`, and a part's own
  list such as `[share] readers`).
- write, control: the node token (`<state_dir>/node.token`, 0600, made on
  the first start) as `Authorization: Bearer TOKEN` or as the password of
  HTTP Basic (so `--creds any:TOKEN` of skopeo and podman works), or a TLS
  client certificate the listener verified against `[node] client_ca`.
- signed: the payload carries its own proof (a signature by a trusted node
  key); the network limits apply, the handler checks the proof, and the
  body is capped before it is read.

A part declares a route's class where it makes it (`access.write(web.put(..))`);
`application()` refuses to serve a route without one.  The check runs in
the route itself, on the request's headers, before any byte of its body is
read: a refused upload is answered at once and its connection dropped.
"""

import base64
import hmac
import ipaddress
import json
import os
import secrets

from aiohttp import web

from .errors import EmergenceError

CLASSES = ("read", "write", "control", "signed")
TOKEN_FILE = "node.token"
LEGACY_TOKEN = os.path.join("share", "push.token")  # share's own token, before the node's
DRAIN = 64 << 10     # a refused body this small is read (and dropped)...
DRAIN_SECONDS = 0.5  # ...for at most this long, so a client that reads late sees the refusal
SIGNED_MAX = 1 << 20  # the largest body a signed route takes
ECHO = 200           # echoed values are cut to this many characters


def echo(value, limit=ECHO):
    """VALUE's repr for an error message, cut to LIMIT characters with an
    ellipsis: an error never sends a client's 2 MB value back whole."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# -- the token --------------------------------------------------------------------
def token_path(state_dir):
    return os.path.join(state_dir, TOKEN_FILE)


def load_or_make_token(state_dir, legacy=None):
    """The node token of STATE_DIR, made (0600, atomically) if there is none.
    An existing LEGACY token file (share's `push.token`) is migrated: its value
    becomes the node token, so clients that hold it keep working, and the old
    name becomes a link to the new file."""
    path = token_path(state_dir)
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    token = None
    if legacy and os.path.isfile(legacy) and not os.path.islink(legacy):
        token = _read_token(legacy)
    token = token or secrets.token_urlsafe(32)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # first start wins; a racing one reads its token
    except FileExistsError:
        os.unlink(tmp)
        return _read_token(path)
    os.unlink(tmp)
    if legacy and os.path.isfile(legacy) and not os.path.islink(legacy):
        link = legacy + ".tmp"
        try:
            os.unlink(link)
        except FileNotFoundError:
            pass
        os.symlink(os.path.relpath(path, os.path.dirname(legacy)), link)
        os.replace(link, legacy)
    return token


def _read_token(path):
    st = os.stat(path)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise EmergenceError(f"{path}: the node token must be owned by the node's user "
                             f"and mode 0600 (it is {st.st_mode & 0o777:o}); "
                             f"chmod 600 {path}")
    with open(path) as f:
        token = f.read().strip()
    if len(token) < 16:
        raise EmergenceError(f"{path}: the node token is shorter than 16 characters; "
                             "remove the file and restart the node to make a new one")
    return token


# -- classing routes ------------------------------------------------------------
def classed(cls, route, networks=(), max_body=None):
    """ROUTE (an aiohttp RouteDef) as a route of class CLS: its handler runs
    only once `check` lets the request through.  NETWORKS further limit who
    may read it; MAX_BODY caps a declared body (signed routes: 1 MiB)."""
    if cls not in CLASSES:
        raise ValueError(f"unknown route class {cls!r}")
    nets = _networks(networks)
    if max_body is None and cls == "signed":
        max_body = SIGNED_MAX
    handler = route.handler

    async def guarded(request):
        refused = await _gate(request, cls, nets, max_body)
        if refused is not None:
            return refused
        policy = request.app.get(POLICY_KEY)
        if cls != "write" or policy is None or not request.body_exists:
            return await handler(request)
        with policy.uploading(request.remote):
            return await handler(request)

    async def expect(request):  # Expect: 100-continue: refuse before the client sends
        refused = await _gate(request, cls, nets, max_body)
        if refused is not None:
            return refused
        from aiohttp import HttpVersion11
        if request.version != HttpVersion11:
            return None
        if request.headers.get("Expect", "").lower() != "100-continue":
            return refusal(417, "UNSUPPORTED", "the only Expect taken is 100-continue")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    guarded.access = cls
    guarded.__name__ = getattr(handler, "__name__", "handler")
    guarded.__doc__ = getattr(handler, "__doc__", None)
    return web.RouteDef(route.method, route.path, guarded,
                        {**route.kwargs, "expect_handler": expect})


def read(route, networks=()):
    return classed("read", route, networks)


def write(route, networks=()):
    return classed("write", route, networks)


def control(route, networks=()):
    return classed("control", route, networks)


def signed(route, networks=(), max_body=SIGNED_MAX):
    return classed("signed", route, networks, max_body)


def class_of(route):
    """The class ROUTE (a RouteDef) was given, or None."""
    return getattr(route.handler, "access", None)


def _networks(items):
    return tuple(ipaddress.ip_network(n, strict=False) for n in items)


# -- the policy of one listener ---------------------------------------------------
class Policy:
    """What the listener knows: the node token, the reader networks, whether
    a client certificate can be presented (a TLS listener with a client CA)."""

    def __init__(self, token, readers=(), client_certs=False, uploads_per_client=16):
        self.token = token.encode() if isinstance(token, str) else token
        self.readers = _networks(readers)
        self.client_certs = client_certs
        self.uploads_per_client = uploads_per_client
        self.uploads = {}  # client address -> write requests with a body in flight

    def busy(self, peer):
        """The refusal for one more upload from PEER, or None."""
        n = self.uploads.get(peer, 0)
        if n < self.uploads_per_client:
            return None
        return (429, "TOOMANYREQUESTS", f"{peer} has {n} uploads in flight, the most this "
                "node takes from one client at once ([node] uploads_per_client); retry later")

    def uploading(self, peer):
        """A context counting one upload of PEER's while it lasts."""
        import contextlib

        @contextlib.contextmanager
        def slot():
            self.uploads[peer] = self.uploads.get(peer, 0) + 1
            try:
                yield
            finally:
                left = self.uploads.pop(peer) - 1
                if left:
                    self.uploads[peer] = left
        return slot()

    def credential(self, request):
        """'certificate', 'token', None (none presented) or False (a wrong one)."""
        if self.client_certs and request.transport is not None and \
                request.transport.get_extra_info("peercert"):
            return "certificate"  # verified by the TLS handshake against client_ca
        header = request.headers.get("Authorization")
        if header is None:
            return None
        kind, _, value = header.strip().partition(" ")
        got = b""
        if kind.lower() == "bearer":
            got = value.strip().encode(errors="replace")
        elif kind.lower() == "basic":
            try:
                got = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except ValueError:
                got = b""
        if self.token and got and hmac.compare_digest(got, self.token):
            return "token"
        return False


POLICY_KEY = web.AppKey("emergence_access_policy", Policy)
NEEDS = ("needs the node token (Authorization: Bearer TOKEN, or --creds any:TOKEN; "
         "the token is the root-only file node.token in the node's state dir) "
         "or a client certificate of the cluster CA")


def authenticated(request):
    """True if REQUEST carries a right credential (for a handler that serves
    more to those who have one, e.g. /v2/'s challenge, an unsigned announce)."""
    policy = request.app.get(POLICY_KEY)
    return bool(policy is not None and policy.credential(request))


def why_refused(request, cls, networks=()):
    """None if REQUEST may use a route of class CLS; else (status, code, why)."""
    policy = request.app.get(POLICY_KEY)
    cred = policy.credential(request) if policy is not None else None
    if cls in ("write", "control"):
        if policy is None or not policy.token:
            return 401, "UNAUTHORIZED", "this listener has no node token, so it takes no writes"
        if cred is False:
            return 401, "UNAUTHORIZED", "wrong credential: " + NEEDS
        if not cred:
            return 401, "UNAUTHORIZED", f"{request.method} {request.path[:100]} " + NEEDS
        return None
    if cred:
        return None  # a credential reads from anywhere
    # a wrong one counts as none here: skopeo sends empty Basic credentials after
    # /v2/'s challenge, a client may hold another registry's; reads stay as open as set
    peer = request.remote or ""
    for nets in (policy.readers if policy is not None else (), networks):
        if nets and not _inside(peer, nets):
            return 403, "DENIED", f"{peer} may not read from this node (not in its readers)"
    return None


def _inside(peer, nets):
    try:
        addr = ipaddress.ip_address(peer.partition("%")[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in nets)


def refusal(status, code, message, path=""):
    """The one JSON line of a refusal: {"error"} for people and tools, and
    the OCI distribution spec's {"errors": [...]}, so registry clients read it."""
    message = message if len(message) <= 500 else message[:500] + "…"
    body = json.dumps({"error": message, "errors": [
        {"code": code, "message": message, "detail": {}}]}) + "\n"
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="emergence"'
    if status == 429:
        headers["Retry-After"] = "1"
    if path.startswith("/v2/"):
        headers["Docker-Distribution-API-Version"] = "registry/2.0"
    return web.Response(status=status, text=body, content_type="application/json",
                        headers=headers)


async def _gate(request, cls, networks, max_body):
    why = why_refused(request, cls, networks)
    if why is None and max_body is not None and (request.content_length or 0) > max_body:
        why = 413, "SIZE_INVALID", f"the body is larger than {max_body} bytes"
    policy = request.app.get(POLICY_KEY)
    if why is None and cls == "write" and policy is not None and request.body_exists:
        why = policy.busy(request.remote)
    if why is None:
        return None
    return await _refuse(request, refusal(*why, path=request.path))


async def _refuse(request, resp):
    """Send RESP now; then, if the client is sending a body, close.  A small
    body (DRAIN at most, by its Content-Length) is read and dropped first, so
    a client that reads only once it has sent all still gets the answer; a
    larger one is not read at all: the client reads the refusal already sent
    (the kernel keeps it for it across the reset) and its sending fails."""
    import asyncio
    if not request.body_exists or request.content.at_eof():
        return resp
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    loop = asyncio.get_running_loop()
    waiting = request.headers.get("Expect", "").lower() == "100-continue"  # sent nothing
    small = request.content_length is not None and request.content_length <= DRAIN
    end, dropped = loop.time() + (DRAIN_SECONDS if small and not waiting else 0), 0
    try:
        while dropped < DRAIN and not request.content.at_eof():
            dropped += len(await asyncio.wait_for(request.content.readany(),
                                                  max(end - loop.time(), 0)))
    except (asyncio.TimeoutError, ConnectionError):
        pass
    except Exception:  # the payload's own errors: the connection goes all the same
        pass
    request.protocol.force_close()
    return resp


async def read_body(request, limit):
    """The request's body, at most LIMIT bytes (413 beyond, before reading on)."""
    if (request.content_length or 0) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    data = await request.content.read(limit + 1)
    if len(data) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return data


# -- the listener -----------------------------------------------------------------
def application(routes, policy, **kwargs):
    """An aiohttp Application serving ROUTES under POLICY; a route without a
    class is a bug in its part and stops the listener from starting."""
    unclassed = [f"{r.method} {r.path}" for r in routes if class_of(r) not in CLASSES]
    if unclassed:
        raise EmergenceError("routes without an access class (read, write, control, "
                             "signed): " + ", ".join(unclassed))
    app = web.Application(**kwargs)
    app[POLICY_KEY] = policy
    app.add_routes(routes)
    return app


def ssl_context(cert, key, client_ca=""):
    """The listener's TLS context: its certificate and key, and, with
    CLIENT_CA, client certificates verified against it when presented (a
    client without one may still read; one from another CA fails the
    handshake)."""
    import ssl
    for what, path in (("tls_cert", cert), ("tls_key", key), ("client_ca", client_ca)):
        if path and not os.path.isfile(path):
            raise EmergenceError(f"[node] {what} {path}: no such file")
    if not cert or not key:
        raise EmergenceError("[node] tls_cert and tls_key go together (and client_ca "
                             "needs both)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (ssl.SSLError, ValueError) as e:
        raise EmergenceError(f"[node] TLS: {cert} / {key} / {client_ca or '-'}: {e}") \
            from None
    return ctx
