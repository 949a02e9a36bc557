"""SHA-256 resumed from a chaining state: a piece of a blob checked on its own,
in one pass that is also the blob's own hash.

SHA-256 runs its compression over 64-byte blocks; after any whole number of
blocks its state is eight 32-bit words (the "midstate").  A piece list that
carries the state at the start of every piece (`states`, pieces.py) lets a
puller hash each piece from its start state and compare the state it ends in
with the next piece's (the last piece: the finished digest with the blob's
digest).  Pieces verified that way in any order chain from SHA-256's initial
state to the blob's digest: the blob hashes to its digest without a second
pass over it, whatever the states say (wrong states only make good pieces
fail).  hashlib cannot start from a given state, so this calls OpenSSL's
SHA256_Update (libcrypto, the library hashlib uses; the GIL is released
during the call, as hashlib releases it).  Without libcrypto, available() is
False and the piece lists carry no states.
"""

import struct

IV = "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19"
BLOCK = 64

_lib = None


def _load():
    global _lib
    if _lib is None:
        import ctypes

        class Ctx(ctypes.Structure):  # SHA256_CTX of openssl/sha.h, unchanged since 0.9.8
            _fields_ = [("h", ctypes.c_uint32 * 8), ("Nl", ctypes.c_uint32),
                        ("Nh", ctypes.c_uint32), ("data", ctypes.c_uint32 * 16),
                        ("num", ctypes.c_uint), ("md_len", ctypes.c_uint)]
        try:
            lib = ctypes.CDLL(_libcrypto())
            for name, args in (("SHA256_Init", [ctypes.POINTER(Ctx)]),
                               ("SHA256_Update", [ctypes.POINTER(Ctx), ctypes.c_void_p,
                                                  ctypes.c_size_t]),
                               ("SHA256_Final", [ctypes.c_char_p, ctypes.POINTER(Ctx)])):
                f = getattr(lib, name)
                f.argtypes, f.restype = args, ctypes.c_int
            lib.Ctx = Ctx
            _lib = lib if _selftest(lib) else False
        except (OSError, AttributeError, ImportError):
            _lib = False
    return _lib


def _libcrypto():
    """The libcrypto that hashlib loaded (found in our own mappings: no
    ldconfig run), else the system's."""
    import _hashlib  # noqa: F401
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").partition("/")[2]
                if "/libcrypto.so" in "/" + path:
                    return "/" + path
    except OSError:
        pass
    import ctypes.util
    return ctypes.util.find_library("crypto") or "libcrypto.so.3"


def _selftest(lib):
    import hashlib
    data = bytes(range(256)) * 3
    mid = Chain(IV, 0, lib).update(data[:128]).state()
    return (Chain(mid, 128, lib).update(bytearray(data[128:])).hexdigest()
            == hashlib.sha256(data).hexdigest())


def available():
    return bool(_load())


class Chain:
    """SHA-256 from STATE (hex, the state after OFFSET bytes, a multiple of 64)."""

    def __init__(self, state=IV, offset=0, lib=None):
        self.lib = lib or _load()
        if not self.lib:
            raise OSError("no libcrypto for SHA-256 midstates")
        if offset % BLOCK or len(state) != 64:
            raise ValueError("a midstate is 64 hex digits at a multiple of 64 bytes")
        self.ctx = self.lib.Ctx()
        self.lib.SHA256_Init(self.ctx)
        self.ctx.h[:] = struct.unpack(">8I", bytes.fromhex(state))
        bits = offset * 8
        self.ctx.Nl, self.ctx.Nh = bits & 0xFFFFFFFF, bits >> 32

    def _update(self, data):
        import ctypes
        view = memoryview(data).cast("B")
        if view.readonly:  # bytes: passed as its own pointer
            self.lib.SHA256_Update(self.ctx, data if isinstance(data, bytes) else bytes(view),
                                   len(view))
        else:  # a bytearray or a view of one: hashed where it is
            buf = (ctypes.c_char * len(view)).from_buffer(view)
            self.lib.SHA256_Update(self.ctx, buf, len(view))

    def update(self, data):
        if len(data):
            self._update(data)
        return self

    def state(self):
        """The state now, as hex (meaningful after a multiple of 64 bytes)."""
        return struct.pack(">8I", *self.ctx.h).hex()

    def hexdigest(self):
        """The finished hash (the chain is used up)."""
        import ctypes
        out = ctypes.create_string_buffer(32)
        self.lib.SHA256_Final(out, self.ctx)
        return out.raw.hex()
