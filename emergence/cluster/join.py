"""Joining a cluster with a one-time token (kubeadm's idea, our wire form).

A token is `ID.SECRET.PIN`: ID (8 hex) names it, SECRET (32 hex) is shared
only by the CA host and the joiner, PIN (64 hex) is the SHA-256 of the CA
certificate.  `cluster token create` mints one on the CA host
(tokens.json, 0600: roles, expiry); it travels to the new node out of band
and is read from a file or $EMERGENCE_JOIN_TOKEN, never argv.

  joiner -> POST /cluster/v1/join  {"id", "name", "csr", "nonce", "mac"}
            mac = HMAC-SHA256(SECRET, "join-request\\0" + canonical(rest))
  CA host: the token exists, is unused and unexpired; the mac matches (a
            wrong one does not burn the token, so knowing an ID is not
            enough to spend it); the CSR's signature verifies.  Then it
            burns the token, signs a certificate for the CSR's key with the
            token's roles, makes etcd user NAME with password
            HMAC(SECRET, "etcd-password\\0" + NAME) (never on the wire),
            and answers {"cert", "ca", "endpoints", "prefix", "roles", "mac"}
            with mac = HMAC(SECRET, "join-answer\\0" + canonical(rest + nonce)).
  joiner:   checks the answer's mac, that SHA-256(CA) is PIN, that the
            certificate is the CA's and holds its own key; writes its dir.
SECRET is never sent, so plain HTTP reveals nothing that lets anyone else
join; an answer from anyone but the CA host fails the mac or the pin.
"""

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time

from ..errors import EmergenceError
from . import files, pki

_TOKEN = re.compile(r"^([0-9a-f]{8})\.([0-9a-f]{32})\.([0-9a-f]{64})$")
DEFAULT_TTL = 3600.0


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def mac(secret, purpose, obj):
    return hmac.new(secret.encode(), purpose.encode() + b"\0" + canonical(obj),
                    hashlib.sha256).hexdigest()


def etcd_password(secret, name):
    return hmac.new(secret.encode(), b"etcd-password\0" + name.encode(),
                    hashlib.sha256).hexdigest()


def parse_token(text):
    m = _TOKEN.match((text or "").strip())
    if not m:
        raise EmergenceError("the join token is not ID.SECRET.PIN as printed by "
                             "`emergence cluster token create`")
    return m.groups()


def read_token(path=None):
    """The token from PATH, else $EMERGENCE_JOIN_TOKEN (never from argv)."""
    if path:
        try:
            with open(path) as f:
                return parse_token(f.read())
        except OSError as e:
            raise EmergenceError(f"--token-file {path}: {e.strerror}")
    env = os.environ.get("EMERGENCE_JOIN_TOKEN")
    if not env:
        raise EmergenceError("no join token: give --token-file FILE or set "
                             "EMERGENCE_JOIN_TOKEN")
    return parse_token(env)


class _Tokens:
    """tokens.json under an exclusive lock (join answers may race)."""

    def __init__(self, material):
        self.path = material.tokens
        self.lock = open(material.tokens + ".lock", "a")
        os.chmod(self.lock.name, 0o600)

    def __enter__(self):
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            with open(self.path) as f:
                self.data = json.load(f)
        except FileNotFoundError:
            self.data = {}
        return self

    def save(self):
        now = time.time()
        self.data = {k: v for k, v in self.data.items()  # forget long-dead tokens
                     if v["expires"] > now - 86400}
        files.write(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def __exit__(self, *exc):
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()


def create_token(material, roles, ttl=DEFAULT_TTL):
    """A new one-time token for ROLES, valid TTL seconds: the string to hand over."""
    if not material.is_ca():
        raise EmergenceError(f"no CA key in {material.dir}: create tokens on the node that "
                             "ran `emergence cluster init`")
    roles = pki.check_roles(roles)
    tid, secret = secrets.token_hex(4), secrets.token_hex(16)
    with _Tokens(material) as t:
        t.data[tid] = {"secret": secret, "roles": roles, "expires": time.time() + ttl,
                       "used": None}
        t.save()
    return f"{tid}.{secret}.{pki.pin(material.ca_cert())}"


class Refused(EmergenceError):
    status = 403


def answer(material, body, admin=None):
    """The CA host's side: the answer to a join request BODY, or Refused."""
    from . import rbac
    from .client import Admin
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in
                                             ("id", "name", "csr", "nonce", "mac")):
        raise EmergenceError("a join request has id, name, csr, nonce and mac (strings)")
    with _Tokens(material) as t:
        tok = t.data.get(body["id"])
        if tok is None:
            raise Refused("unknown join token")
        rest = {k: v for k, v in body.items() if k != "mac"}
        if not hmac.compare_digest(mac(tok["secret"], "join-request", rest), body["mac"]):
            raise Refused("the join request is not made with this token's secret")
        if tok["used"] is not None:
            raise Refused("this join token was already used; create another")
        if tok["expires"] < time.time():
            raise Refused("this join token has expired; create another")
        tok["used"] = time.time()
        t.save()
    name = pki.check_name(body["name"])
    csr = pki.load_csr(body["csr"])
    ca_key = pki.load_key(files.read(material.ca_key, "CA key"))
    ca_cert = material.ca_cert()
    cert = pki.issue(ca_key, ca_cert, csr.public_key(), name, tok["roles"])
    info = material.info
    admin = admin or Admin(info["endpoints"], material, user=material.root_user())
    rbac.add_node(admin, info["prefix"], name, tok["roles"],
                  etcd_password(tok["secret"], name))
    out = {"cert": pki.cert_pem(cert).decode(), "ca": pki.cert_pem(ca_cert).decode(),
           "endpoints": info["endpoints"], "prefix": info["prefix"], "roles": tok["roles"]}
    out["mac"] = mac(tok["secret"], "join-answer", dict(out, nonce=body["nonce"]))
    return out


def request(url, token, name, cluster_dir, timeout=30.0):
    """The joiner's side: ask URL (the CA host's node) for a certificate with
    TOKEN (parsed), check the answer, and write CLUSTER_DIR."""
    import requests
    tid, secret, want_pin = token
    name = pki.check_name(name)
    key = pki.new_key()
    from cryptography.hazmat.primitives import serialization as s
    body = {"id": tid, "name": name, "nonce": secrets.token_hex(16),
            "csr": pki.make_csr(key, name).public_bytes(s.Encoding.PEM).decode()}
    body["mac"] = mac(secret, "join-request", body)
    target = url.rstrip("/") + "/cluster/v1/join"
    try:
        # the server's certificate cannot be checked before we hold the CA:
        # the answer's mac and the pin authenticate it instead
        import urllib3
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        r = requests.post(target, json=body, timeout=timeout, verify=False)
    except requests.RequestException as e:
        raise EmergenceError(f"cannot reach {target}: {type(e).__name__}")
    try:
        ans = r.json()
    except ValueError:
        ans = None
    if r.status_code != 200 or not isinstance(ans, dict):
        why = ans.get("error") if isinstance(ans, dict) else f"HTTP {r.status_code}"
        raise EmergenceError(f"the cluster refused to join: {why}")
    need = ("cert", "ca", "endpoints", "prefix", "roles", "mac")
    if any(k not in ans for k in need):
        raise EmergenceError("the join answer is incomplete; is this an emergence node?")
    rest = {k: ans[k] for k in need if k != "mac"}
    if not isinstance(ans["mac"], str) or not hmac.compare_digest(
            mac(secret, "join-answer", dict(rest, nonce=body["nonce"])), ans["mac"]):
        raise EmergenceError("the join answer is not signed with this token: not the CA "
                             "host, or tampered with; nothing written")
    ca = pki.load_cert(ans["ca"])
    if not hmac.compare_digest(pki.pin(ca), want_pin):
        raise EmergenceError(f"the cluster's CA (sha256 {pki.pin(ca)[:16]}…) does not match "
                             "the token's pin; nothing written")
    cert = pki.load_cert(ans["cert"])
    pki.verify_issued(cert, ca)
    raw = s.Encoding.Raw, s.PublicFormat.Raw
    if cert.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        raise EmergenceError("the certificate is not for this node's key; nothing written")
    from .bootstrap import install
    return install(cluster_dir, {"name": name, "roles": ans["roles"], "cert": ans["cert"],
                                 "ca": ans["ca"], "endpoints": ans["endpoints"],
                                 "prefix": ans["prefix"],
                                 "etcd_password": etcd_password(secret, name)},
                   key_pem=pki.key_pem(key))
