"""The cluster's etcd client: etcd3gw (etcd's JSON gateway over `requests`)
with TLS both ways and an etcd user.

etcd's gateway ignores the CN of a client certificate (it refuses one that
has a CN), so RBAC cannot take the user from the certificate on this path.
Two locks instead: the TLS handshake needs a certificate issued by the
cluster CA (`--client-cert-auth`), and every request carries the token of
the node's etcd user (its password is in the node's cluster directory);
etcd's roles decide what that user may touch.  A token that expired (etcd
forgets simple tokens after 5 idle minutes, or on restart), or one older than
the last change of etcd's users and roles (a node joined since), is renewed
and the request sent again (a few times, as users may change meanwhile).

Several endpoints (a list, or URLs joined by commas): one session speaks to
the first that answers and moves to the next when a connection to the one in
use fails (refused, reset, no route); etcd3gw and the watch stream build
their URLs from the first endpoint, and the session points them at the one in
use.  A request already sent when the connection broke is sent again to the
next member: etcd's puts and leases are idempotent, and a create-if-absent
sent twice reports the key as taken, which the callers treat as "someone
else was first" (a result or an acknowledgement is then re-read).
"""

from urllib.parse import urlparse

from ..errors import EmergenceError

DEFAULT_ENDPOINT = "https://127.0.0.1:2379"
INSECURE_WARNING = ("warning: --insecure: etcd over plain http, no certificates, no "
                    "users: anyone who reaches it controls the cluster")


def _session_class():
    import requests

    class TokenSession(requests.Session):
        """A requests session that logs in to etcd as USER and sends its token."""

        def __init__(self, bases, user=None, password=None):
            super().__init__()
            # the cluster's CA, never $REQUESTS_CA_BUNDLE (which would win over
            # session.verify) nor a proxy from the environment
            self.trust_env = False
            self.bases = [bases] if isinstance(bases, str) else list(bases)
            self.current = 0
            self.user, self.password, self.token = user, password, None

        @property
        def base(self):
            return self.bases[self.current]

        def _send(self, method, url, *args, **kw):
            """Send to the member in use; on a broken connection, to the next
            ones in turn (each once) before giving up with the last error."""
            import requests
            path = url
            for b in self.bases:
                if url.startswith(b + "/"):
                    path = url[len(b):]
                    break
            else:
                return super().request(method, url, *args, **kw)
            for tried in range(len(self.bases)):
                try:
                    return super().request(method, self.base + path, *args, **kw)
                except requests.ConnectionError:
                    if tried == len(self.bases) - 1:
                        raise
                    self.current = (self.current + 1) % len(self.bases)

        def login(self):
            r = self._send("POST", self.base + "/v3/auth/authenticate",
                           json={"name": self.user, "password": self.password},
                           timeout=10)
            if r.status_code != 200:
                raise EmergenceError(f"etcd refused user {self.user!r}: "
                                     f"{_message(r)}; is this node's cluster directory "
                                     "from this cluster?")
            self.token = r.json()["token"]

        def request(self, method, url, *args, **kw):
            if self.user is None:
                return self._send(method, url, *args, **kw)
            if self.token is None:
                self.login()
            headers = dict(kw.pop("headers", None) or {})
            headers["Authorization"] = self.token
            r = self._send(method, url, *args, headers=headers, **kw)
            # users may change again and again meanwhile (nodes joining): a stale
            # token means nothing was applied, so sending again is safe; for a
            # while, not a number of times (a burst of joins outlasts any count)
            import time
            deadline = time.monotonic() + 15.0
            while _stale_token(r) and time.monotonic() < deadline:
                self.login()
                headers["Authorization"] = self.token
                r = self._send(method, url, *args, headers=headers, **kw)
            return r
    return TokenSession


def _stale_token(r):
    """etcd no longer takes this token: expired or forgotten (401), or issued
    before the users or roles changed (400 "revision of auth store is old":
    a node joined since).  Logging in again is the cure for both."""
    return (r.status_code == 401 and "invalid auth token" in r.text) or \
        (r.status_code == 400 and "auth store is old" in r.text)


def _message(r):
    try:
        return r.json().get("error") or r.text[:200]
    except ValueError:
        return r.text[:200]


def parse(endpoint):
    u = urlparse(endpoint if "://" in endpoint else "https://" + endpoint)
    try:
        _ = u.port  # a port that is not a number raises here
    except ValueError:
        u = None
    if u is None or not u.hostname or u.scheme not in ("http", "https"):
        raise EmergenceError(f"--etcd {endpoint!r} is not a URL like {DEFAULT_ENDPOINT}")
    return u


def endpoints(endpoint):
    """ENDPOINT as a list of URLs: a list, or one string of URLs joined by commas."""
    parts = endpoint.split(",") if isinstance(endpoint, str) else list(endpoint)
    out = [p.strip() for p in parts if p and p.strip()]
    if not out:
        raise EmergenceError(f"--etcd {endpoint!r}: give a URL like {DEFAULT_ENDPOINT} "
                             "(several joined by commas)")
    schemes = {parse(p).scheme for p in out}
    if len(schemes) > 1:
        raise EmergenceError(f"--etcd {','.join(out)}: mixes http and https members")
    return out


def session(endpoint, material=None, insecure=False, user=None, ca=None):
    """A `requests` session for ENDPOINT (one URL, or several to fail over
    between): TLS with the node's certificate and its etcd user (or
    USER=(name, password)), or plain with INSECURE.  Returns (session, the
    first member's base URL)."""
    urls = endpoints(endpoint)
    bases = [f"{u.scheme}://{u.netloc}" for u in map(parse, urls)]
    endpoint = ",".join(urls)
    u = parse(urls[0])
    base = bases[0]
    cls = _session_class()
    if u.scheme == "http":
        if not insecure:
            raise EmergenceError(f"etcd at {endpoint} is plain http: use https:// with "
                                 "certificates (`emergence cluster init`), or pass "
                                 "--insecure to accept an unauthenticated cluster")
        return cls(bases), base
    if material is None:
        raise EmergenceError(f"etcd at {endpoint} needs a cluster certificate; join the "
                             "cluster first (`emergence cluster join --token-file FILE`)")
    material.check()
    name, password = user or material.user()
    s = cls(bases, name, password)
    s.verify = ca or material.ca
    s.cert = (material.cert, material.key)
    return s, base


def connect(endpoint, material=None, insecure=False, timeout=3.0, user=None):
    """An etcd3gw client for ENDPOINT (see session())."""
    from etcd3gw.client import Etcd3Client
    s, _ = session(endpoint, material, insecure, user)
    u = parse(endpoints(endpoint)[0])
    return Etcd3Client(host=u.hostname, port=u.port or 2379, protocol=u.scheme,
                       timeout=timeout, api_path="/v3/", session=s)


class Admin:
    """etcd's auth API (users, roles, enable) through one session."""

    def __init__(self, endpoint, material=None, insecure=False, user=None):
        self.session, self.base = session(endpoint, material, insecure, user)

    def call(self, path, body, ok_if=()):
        r = self.session.post(self.base + "/v3/" + path, json=body, timeout=10)
        if r.status_code != 200:
            msg = _message(r)
            if any(s in msg for s in ok_if):
                return None
            raise EmergenceError(f"etcd {path}: {msg}")
        return r.json()
