"""NAR, Nix's archive format, written by us from the format's definition
(Dolstra's thesis, fig. 5.2): deterministic, so its SHA-256 is the NarHash
Nix records for a store path.  Streamed in chunks; never held whole.

Every string is its length (u64 little-endian), its bytes, zero padding
to 8.  A node is `( type regular [executable ""] contents <data> )`,
`( type symlink target <t> )` or `( type directory (entry ( name <n> node
<node> ))* )`, entries sorted by name bytes; the file opens with
"nix-archive-1".
"""

import os
import stat

CHUNK = 1 << 20
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32(data):
    """Nix's base-32 (its own alphabet, least significant bits first)."""
    n = (len(data) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        b = i * 5
        j, k = divmod(b, 8)
        c = data[j] >> k
        if j + 1 < len(data):
            c |= data[j + 1] << (8 - k)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


def _str(b):
    if isinstance(b, str):
        b = b.encode()
    return len(b).to_bytes(8, "little") + b + b"\0" * (-len(b) % 8)


def _node(path):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        yield _str("(") + _str("type") + _str("symlink") + _str("target") + \
            _str(os.fsencode(os.readlink(path))) + _str(")")
    elif stat.S_ISREG(st.st_mode):
        head = _str("(") + _str("type") + _str("regular")
        if st.st_mode & 0o100:
            head += _str("executable") + _str("")
        yield head + _str("contents") + st.st_size.to_bytes(8, "little")
        left = st.st_size
        with open(path, "rb") as f:
            while left:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise OSError(f"{path} shrank while being archived")
                left -= len(data)
                yield data
        yield b"\0" * (-st.st_size % 8) + _str(")")
    elif stat.S_ISDIR(st.st_mode):
        yield _str("(") + _str("type") + _str("directory")
        for name in sorted(os.listdir(os.fsencode(path))):
            yield _str("entry") + _str("(") + _str("name") + _str(name) + _str("node")
            yield from _node(os.path.join(os.fsencode(path), name))
            yield _str(")")
        yield _str(")")
    else:
        raise OSError(f"{path}: a NAR holds only files, directories and symlinks")


def dump(path):
    """The NAR of PATH, as a stream of byte chunks."""
    yield _str("nix-archive-1")
    yield from _node(path)


def hash_and_size(path):
    """(sha256 digest bytes, size) of PATH's NAR."""
    import hashlib
    h = hashlib.sha256()
    size = 0
    for chunk in dump(path):
        h.update(chunk)
        size += len(chunk)
    return h.digest(), size
