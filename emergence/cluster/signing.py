"""Tasks signed by the command node that submits them, checked by the worker
that would run them.

A signed task carries `signature`: {"cert": the signer's certificate (PEM),
"sig": base64 Ed25519 over the task's canonical form}.  The canonical form
is the task without `signature` as JSON with sorted keys, no spaces, ASCII
only, after the domain tag b"emergence-task-v1\\0" (so the signature
cannot be reused for anything else the key signs).  The worker checks: the
certificate is issued by the cluster CA and valid now, it states the role
`command`, and the signature verifies.  Nothing else in etcd is trusted:
whoever could write a task without the command node's key gets a refusal.
"""

import base64
import json

from ..errors import EmergenceError

TAG = b"emergence-task-v1\0"


class Refused(EmergenceError):
    """A task the worker will not run; the message is the recorded reason."""


def canonical(task):
    body = {k: v for k, v in task.items() if k != "signature"}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Refused(f"the task is not plain JSON ({e})")
    return TAG + text.encode()


def sign(task, key, cert_pem):
    """TASK with its signature by KEY (Ed25519), carrying CERT_PEM."""
    sig = key.sign(canonical(task))
    return dict(task, signature={"cert": cert_pem, "sig": base64.b64encode(sig).decode()})


def verify(task, ca_cert):
    """The signer's node name, or Refused saying why the task is not trusted."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from .pki import identity, load_cert, verify_issued
    s = task.get("signature") if isinstance(task, dict) else None
    if not isinstance(s, dict) or not isinstance(s.get("cert"), str) \
            or not isinstance(s.get("sig"), str):
        raise Refused("the task is not signed by a command node")
    try:
        cert = load_cert(s["cert"])
        verify_issued(cert, ca_cert)
    except EmergenceError as e:
        raise Refused(f"the task's signer certificate: {e}")
    name, roles = identity(cert)
    if "command" not in roles:
        raise Refused(f"the task's signer {name!r} is not a command node")
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise Refused("the task's signer key is not Ed25519")
    try:
        key.verify(base64.b64decode(s["sig"], validate=True), canonical(task))
    except (InvalidSignature, ValueError):
        raise Refused(f"the task's signature does not verify (signer {name!r})")
    return name
