"""Keys and certificates (with `cryptography`, imported here only).

Every key is Ed25519: etcd (Go) and OpenSSL take Ed25519 certificates for
TLS, and the same key signs a command node's tasks, so a node has one key.
A node certificate names no CN: etcd's JSON gateway refuses a client
certificate with a CN ("will be ignored"), and the etcd user comes from the
node's password token instead (client.py).  Who a certificate is lives in
its subjectAltName URIs: urn:emergence:node:NAME and urn:emergence:role:ROLE
(command, worker, reader).  The CA pin is the SHA-256 of the CA's DER.
"""

import datetime
import ipaddress
import re

from ..errors import EmergenceError

ROLES = ("command", "worker", "reader")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_NODE, _ROLE = "urn:emergence:node:", "urn:emergence:role:"


def check_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise EmergenceError(f"node name {name!r}: use letters, digits, '.', '_' or '-' "
                             "(at most 63)")
    return name


def check_roles(roles):
    roles = sorted(set(roles))
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise EmergenceError(f"role {bad[0] if bad else ''!r}: use {', '.join(ROLES)}")
    return roles


def new_key():
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return ed25519.Ed25519PrivateKey.generate()


def key_pem(key):
    from cryptography.hazmat.primitives import serialization as s
    return key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())


def load_key(pem):
    from cryptography.hazmat.primitives import serialization as s
    return s.load_pem_private_key(pem, password=None)


def cert_pem(cert):
    from cryptography.hazmat.primitives import serialization as s
    return cert.public_bytes(s.Encoding.PEM)


def load_cert(pem):
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as e:
        raise EmergenceError(f"not a PEM certificate ({e})")


def pin(cert):
    """The CA pin: hex SHA-256 of the certificate's DER."""
    import hashlib

    from cryptography.hazmat.primitives import serialization as s
    return hashlib.sha256(cert.public_bytes(s.Encoding.DER)).hexdigest()


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _subject(*cn):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "emergence")]
    attrs += [x509.NameAttribute(NameOID.COMMON_NAME, c) for c in cn]
    return x509.Name(attrs)


def make_ca(days=3650):
    """A new cluster CA: (key, certificate)."""
    from cryptography import x509
    key = new_key()
    name = _subject("emergence cluster CA")
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), critical=True)
            .sign(key, None))
    return key, cert


def make_csr(key, name):
    from cryptography import x509
    return (x509.CertificateSigningRequestBuilder().subject_name(_subject())
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(_NODE + check_name(name))]), critical=False)
            .sign(key, None))


def load_csr(pem):
    from cryptography import x509
    try:
        csr = x509.load_pem_x509_csr(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as e:
        raise EmergenceError(f"not a PEM certificate request ({e})")
    if not csr.is_signature_valid:
        raise EmergenceError("the certificate request's signature does not verify")
    return csr


def issue(ca_key, ca_cert, public_key, name, roles, addresses=(), days=365):
    """A node certificate for PUBLIC_KEY: NAME, ROLES, and (for a node that
    serves etcd or HTTPS) its ADDRESSES as IP or DNS subjectAltNames."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import ExtendedKeyUsageOID
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise EmergenceError("node keys are Ed25519")
    sans = [x509.UniformResourceIdentifier(_NODE + check_name(name))]
    sans += [x509.UniformResourceIdentifier(_ROLE + r) for r in check_roles(roles)]
    for a in addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            sans.append(x509.DNSName(a))
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(_subject())
            .issuer_name(ca_cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=days),
                                 ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, None))
    return cert


def identity(cert):
    """(name, roles) that a node certificate states."""
    from cryptography import x509
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None, []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    names = [u[len(_NODE):] for u in uris if u.startswith(_NODE)]
    roles = sorted(u[len(_ROLE):] for u in uris if u.startswith(_ROLE))
    return (names[0] if len(names) == 1 else None), roles


def verify_issued(cert, ca_cert):
    """Raise EmergenceError unless CERT is a node certificate signed by
    CA_CERT and valid now."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:
        raise EmergenceError("the certificate is not issued by this cluster's CA")
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise EmergenceError("the certificate is expired or not yet valid")
