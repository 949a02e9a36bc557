"""SHA-256 for names (veth hashes, bridge MACs, instance tags) without
hashlib: hashlib loads OpenSSL (~2 ms, an eighth of a cold CNI call), while
CPython's builtin module gives the same digest."""

try:
    from _sha256 import sha256  # CPython <= 3.11
except ImportError:  # pragma: no cover - newer or other interpreters
    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
