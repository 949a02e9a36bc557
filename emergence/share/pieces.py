"""Piece lists: a blob cut into fixed pieces, each with its SHA-256, signed
by the node that made the list.  A puller that trusts the signer can check
each piece as it arrives (and ban the peer that sent a bad one) instead of
learning only at the end that the whole blob is wrong.

The signed message is `emergence-pieces-1;<digest>;<size>;<piece size>;
<hex,hex,...>`: the blob's digest is inside it, so a list cannot be
replayed for another blob.

Version 2 adds `states`: SHA-256's state at the start of every piece
(midstate.py), signed as `statesSig` over `emergence-pieces-2;<digest>;
<size>;<piece size>;<hex,...>;<state,...>`.  A puller that has them checks
each piece by resuming the blob's own hash: one pass per byte checks the
piece and, all pieces checked, the whole blob against its digest.  A list
keeps `pieces` and `sig` (version 1) for pullers that know nothing else, and
a puller takes a version-1 list (no states, or a piece size that is not a
multiple of 64 bytes) as before: per-piece hashes, then the whole blob hashed
again.
"""

import hashlib
import os

MIN_PIECE, MAX_PIECE, PIECES = 1 << 20, 16 << 20, 1024


def size_for(blob_size):
    """The piece size for a blob of BLOB_SIZE bytes: 1 MiB up to 1 GiB, then
    the power of two that keeps about 1,024 pieces, at most 16 MiB.  A piece
    is passed on only once it is whole and checked, so every hop a piece
    takes costs a piece's transfer time: small pieces spread through a swarm
    sooner (8 pulls of 256 MB at once: 1.24-1.31x one pull with 1 MiB
    pieces, 1.33-1.38x with 2 MiB, 1.58-1.63x with 4 MiB).  Above ~1,024
    pieces the signed list and the requests grow for little gain."""
    size = MIN_PIECE
    while size < MAX_PIECE and size * PIECES < blob_size:
        size <<= 1
    return size


def make(path, digest, piece_size=None):
    """The piece list of the blob at PATH, or None if it is not DIGEST.
    PIECE_SIZE None (or 0): size_for() the blob's size."""
    from . import midstate
    if not piece_size:
        piece_size = size_for(os.path.getsize(path))
    hashes, states = [], []
    size = 0
    chain = midstate.Chain() if piece_size % midstate.BLOCK == 0 and midstate.available() \
        else None
    whole = chain or hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(piece_size)
            if not data:
                break
            if chain:
                states.append(chain.state())
            size += len(data)
            whole.update(data)
            hashes.append(hashlib.sha256(data).hexdigest())
    if "sha256:" + whole.hexdigest() != digest:
        return None
    plist = {"digest": digest, "size": size, "pieceSize": piece_size, "pieces": hashes}
    if chain and hashes:
        plist["states"] = states
    return plist


def message(plist):
    return (f"emergence-pieces-1;{plist['digest']};{plist['size']};{plist['pieceSize']};"
            + ",".join(plist["pieces"]))


def message2(plist):
    return message(plist).replace("emergence-pieces-1;", "emergence-pieces-2;", 1) + ";" + \
        ",".join(plist["states"])


def sign(plist, key):
    signed = {**plist, "sig": key.sign(message(plist))}
    if "states" in plist:
        signed["statesSig"] = key.sign(message2(plist))
    return signed


def check(plist, digest, trusted_keys):
    """True if PLIST is well formed, for DIGEST, and signed by a trusted key."""
    from .signing import verify
    try:
        ok = (plist["digest"] == digest and isinstance(plist["size"], int)
              and isinstance(plist["pieceSize"], int) and plist["pieceSize"] > 0
              and len(plist["pieces"]) == -(-plist["size"] // plist["pieceSize"])
              and all(isinstance(h, str) and len(h) == 64 for h in plist["pieces"]))
    except (KeyError, TypeError):
        return False
    return ok and verify(trusted_keys, message(plist), plist.get("sig", ""))


def states(plist, trusted_keys):
    """The midstates of PLIST (one that check() accepted) if it has them, well
    formed and signed by a trusted key (version 2); None: check pieces the
    version-1 way."""
    from .midstate import BLOCK, IV, available
    from .signing import verify
    st = plist.get("states")
    try:
        ok = (isinstance(st, list) and len(st) == len(plist["pieces"]) > 0 and st[0] == IV
              and plist["pieceSize"] % BLOCK == 0
              and all(isinstance(h, str) and _hex(h) for h in st)
              and isinstance(plist.get("statesSig"), str))
    except (KeyError, TypeError):
        return None
    if ok and available() and verify(trusted_keys, message2(plist), plist["statesSig"]):
        return st
    return None


def _hex(s):
    import re
    return re.fullmatch("[0-9a-f]{64}", s) is not None


def pick(need, held, count, rng, spare=False, claimed=()):
    """The piece to ask a peer for next: of the pieces we NEED that it holds
    (HELD; None = all), one of the rarest among the pullers (COUNT[i]: how
    many of them hold piece i), chosen at random so that pullers starting
    together ask for different pieces.  A SPARE source (one that had the
    whole blob, whose upload everyone shares) is asked only for pieces no
    puller holds yet nor has asked a spare source for (CLAIMED): the rest
    can come from the pullers."""
    cands = need if held is None else need & held
    if spare:
        cands = [i for i in cands if count[i] == 0 and i not in claimed]
    if not cands:
        return None
    least = min(count[i] for i in cands)
    return rng.choice([i for i in cands if count[i] == least])
