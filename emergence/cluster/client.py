"""The cluster's etcd client: etcd3gw (etcd's JSON gateway over `requests`)
with TLS both ways and an etcd user.

etcd's gateway ignores the CN of a client certificate (it refuses one that
has a CN), so RBAC cannot take the user from the certificate on this path.
Two locks instead: the TLS handshake needs a certificate issued by the
cluster CA (`--client-cert-auth`), and every request carries the token of
the node's etcd user (its password is in the node's cluster directory);
etcd's roles decide what that user may touch.  A token that expired (etcd
forgets simple tokens after 5 idle minutes, or on restart) is renewed once.
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

        def __init__(self, base, user=None, password=None):
            super().__init__()
            # the cluster's CA, never $REQUESTS_CA_BUNDLE (which would win over
            # session.verify) nor a proxy from the environment
            self.trust_env = False
            self.base, self.user, self.password, self.token = base, user, password, None

        def login(self):
            r = super().request("POST", self.base + "/v3/auth/authenticate",
                                json={"name": self.user, "password": self.password},
                                timeout=10)
            if r.status_code != 200:
                raise EmergenceError(f"etcd refused user {self.user!r}: "
                                     f"{_message(r)}; is this node's cluster directory "
                                     "from this cluster?")
            self.token = r.json()["token"]

        def request(self, method, url, *args, **kw):
            if self.user is None:
                return super().request(method, url, *args, **kw)
            if self.token is None:
                self.login()
            headers = dict(kw.pop("headers", None) or {})
            headers["Authorization"] = self.token
            r = super().request(method, url, *args, headers=headers, **kw)
            if r.status_code == 401 and "invalid auth token" in r.text:
                self.login()
                headers["Authorization"] = self.token
                r = super().request(method, url, *args, headers=headers, **kw)
            return r
    return TokenSession


def _message(r):
    try:
        return r.json().get("error") or r.text[:200]
    except ValueError:
        return r.text[:200]


def parse(endpoint):
    u = urlparse(endpoint if "://" in endpoint else "https://" + endpoint)
    if not u.hostname or u.scheme not in ("http", "https"):
        raise EmergenceError(f"--etcd {endpoint!r} is not a URL like {DEFAULT_ENDPOINT}")
    return u


def session(endpoint, material=None, insecure=False, user=None, ca=None):
    """A `requests` session for ENDPOINT: TLS with the node's certificate and
    its etcd user (or USER=(name, password)), or plain with INSECURE."""
    u = parse(endpoint)
    base = f"{u.scheme}://{u.netloc}"
    cls = _session_class()
    if u.scheme == "http":
        if not insecure:
            raise EmergenceError(f"etcd at {endpoint} is plain http: use https:// with "
                                 "certificates (`emergence cluster init`), or pass "
                                 "--insecure to accept an unauthenticated cluster")
        return cls(base), base
    if material is None:
        raise EmergenceError(f"etcd at {endpoint} needs a cluster certificate; join the "
                             "cluster first (`emergence cluster join --token-file FILE`)")
    material.check()
    name, password = user or material.user()
    s = cls(base, name, password)
    s.verify = ca or material.ca
    s.cert = (material.cert, material.key)
    return s, base


def connect(endpoint, material=None, insecure=False, timeout=3.0, user=None):
    """An etcd3gw client for ENDPOINT (see session())."""
    from etcd3gw.client import Etcd3Client
    s, _ = session(endpoint, material, insecure, user)
    u = parse(endpoint)
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
