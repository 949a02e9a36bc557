"""Piece lists: a blob cut into fixed pieces, each with its SHA-256, signed
by the node that made the list.  A puller that trusts the signer can check
each piece as it arrives (and ban the peer that sent a bad one) instead of
learning only at the end that the whole blob is wrong.

The signed message is `emergence-pieces-1;<digest>;<size>;<piece size>;
<hex,hex,...>`: the blob's digest is inside it, so a list cannot be
replayed for another blob.
"""

import hashlib

PIECE = 4 << 20


def make(path, digest, piece_size=PIECE):
    """The piece list of the blob at PATH, or None if it is not DIGEST."""
    hashes = []
    size = 0
    whole = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(piece_size)
            if not data:
                break
            size += len(data)
            whole.update(data)
            hashes.append(hashlib.sha256(data).hexdigest())
    if "sha256:" + whole.hexdigest() != digest:
        return None
    return {"digest": digest, "size": size, "pieceSize": piece_size, "pieces": hashes}


def message(plist):
    return (f"emergence-pieces-1;{plist['digest']};{plist['size']};{plist['pieceSize']};"
            + ",".join(plist["pieces"]))


def sign(plist, key):
    return {**plist, "sig": key.sign(message(plist))}


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
