"""Ed25519 keys in Nix's own format (`name:base64`; the secret key is the
64-byte seed+public pair `nix-store --generate-binary-cache-key` writes),
and the signatures of narinfo fingerprints and piece lists.

Library: `cryptography` (maintained, OpenSSL-backed Ed25519).
"""

import base64
import os

from ..errors import EmergenceError

FORM = ("NAME:BASE64 (a node's public key as `emergence node status` and "
        "/share/v1/info show it, e.g. emergence-host1-1a2b3c4d:<44 characters of base64>)")


def _split(text, what):
    name, sep, b64 = text.strip().partition(":")
    if not sep or not name:
        raise EmergenceError(f"{what} is not in Nix's NAME:BASE64 form")
    try:
        return name, base64.b64decode(b64, validate=True)
    except ValueError:
        raise EmergenceError(f"{what} has invalid base64") from None


def public_keys(texts, where):
    """TEXTS, each checked to be a Nix public key; an error names WHERE they
    came from (`--trusted-key`, `[share] trusted_keys`) and the form wanted."""
    from ..errors import shown
    out = []
    for text in texts:
        if not isinstance(text, str):
            raise EmergenceError(f"{where} {shown(text)}: a key is a string, {FORM}")
        name, sep, b64 = text.strip().partition(":")
        try:
            raw = base64.b64decode(b64, validate=True) if sep and name else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise EmergenceError(f"{where} {shown(text)} is not a public key; give {FORM}")
        out.append(text.strip())
    return out


class SecretKey:
    def __init__(self, text):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        self.name, raw = _split(text, "secret key")
        if len(raw) not in (32, 64):
            raise EmergenceError("secret key must hold 64 bytes (seed and public key)")
        self.key = Ed25519PrivateKey.from_private_bytes(raw[:32])

    @classmethod
    def generate(cls, name):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
            PublicFormat,
        )
        k = Ed25519PrivateKey.generate()
        seed = k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        pub = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(f"{name}:" + base64.b64encode(seed + pub).decode())

    def text(self):
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )
        seed = self.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return f"{self.name}:" + base64.b64encode(seed + self._pub()).decode()

    def _pub(self):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def public(self):
        """The public key as Nix writes it (trusted-public-keys)."""
        return f"{self.name}:" + base64.b64encode(self._pub()).decode()

    def sign(self, message):
        """NAME:BASE64(signature) over MESSAGE (str or bytes)."""
        if isinstance(message, str):
            message = message.encode()
        return f"{self.name}:" + base64.b64encode(self.key.sign(message)).decode()


def verify(public_keys, message, signature):
    """True if SIGNATURE (NAME:BASE64) over MESSAGE is by one of PUBLIC_KEYS."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    if isinstance(message, str):
        message = message.encode()
    try:
        name, sig = _split(signature, "signature")
    except EmergenceError:
        return False
    for text in public_keys:
        kname, raw = _split(text, "public key")
        if kname != name or len(raw) != 32:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(sig, message)
            return True
        except InvalidSignature:
            continue
    return False


def default_name(key):
    """This node's key name unless one is set: the hostname and 8 hex digits
    of the key's own hash, so two nodes with one hostname still differ in
    Nix's trusted-public-keys (which go by name)."""
    import hashlib
    return f"emergence-{os.uname().nodename}-{hashlib.sha256(key._pub()).hexdigest()[:8]}"


def legacy_name(name):
    """True for the default of old (emergence-HOSTNAME-1, the same on every
    node with that hostname)."""
    return name == f"emergence-{os.uname().nodename}-1"


def load_or_make_key(state_dir, name=None, log=None):
    """The node's signing key (`cache-key.sec`, 0600), made on first use,
    named NAME, or `default_name` when NAME is None.  A key on disk keeps its
    name unless NAME is set and differs: then its bytes stay and the name
    changes (logged: the peers' trusted_keys must change with it)."""
    path = os.path.join(state_dir, "cache-key.sec")
    try:
        with open(path) as f:
            key = SecretKey(f.read())
    except FileNotFoundError:
        key = None
    if key is not None:
        if name and name != key.name:
            old = key.public()
            key.name = name
            _write(path, key)
            if log:
                log(f"share: the node key is now named {name} ([share] key_name); it was "
                    f"{old}: peers that trust the old name need {key.public()}")
        elif not name and legacy_name(key.name) and log:
            log(f"share: the node key keeps its old name {key.name}, which another node "
                "with this hostname may also have; set [share] key_name to rename it")
        return key
    key = SecretKey.generate(name or "emergence")
    if not name:
        key.name = default_name(key)
    _write(path, key)
    return key


def _write(path, key):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.text())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
