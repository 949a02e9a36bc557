"""A byte-reproducible POSIX ustar writer: every entry owned by 0:0 at one
fixed mtime, in the order given.  Hand-written rather than tarfile because it
is the cost of a build (tarfile measured 1.98x the tar|sha256 floor, this 1.3x)."""

from ..errors import EmergenceError

EPOCH = 1  # mtime of every entry (1970-01-01T00:00:01Z, the image's creation time)


class TarWriter:
    """Writes a POSIX ustar archive with every entry owned by 0:0 at mtime EPOCH,
    no hardlinks (each layer stands alone).  Hand-rolled because tarfile builds
    each header through several copies: that was a third of a build's time.
    Names longer than ustar holds use a GNU long-name record, as tar does."""

    BLOCK = 512

    def __init__(self, out):
        self.out = out

    @staticmethod
    def _num(value, width):
        return b"%0*o\0" % (width - 1, value)

    def _header(self, name, kind, mode, size=0, linkname=b""):
        prefix = b""
        if len(name) > 100:
            cut = name.rfind(b"/", 0, 156)
            if 0 < cut and len(name) - cut - 1 <= 100 and cut <= 155:
                prefix, name = name[:cut], name[cut + 1:]
            else:
                self._longname(b"././@LongLink", b"L", name + b"\0")
                name = name[:100]
        if len(linkname) > 100:
            self._longname(b"././@LongLink", b"K", linkname + b"\0")
            linkname = linkname[:100]
        h = bytearray(self.BLOCK)
        h[0:len(name)] = name
        h[100:108] = self._num(mode, 8)
        h[108:116] = self._num(0, 8)
        h[116:124] = self._num(0, 8)
        h[124:136] = self._num(size, 12)
        h[136:148] = self._num(EPOCH, 12)
        h[148:156] = b" " * 8
        h[156:157] = kind
        h[157:157 + len(linkname)] = linkname
        h[257:265] = b"ustar\x0000"
        h[345:345 + len(prefix)] = prefix
        h[148:156] = b"%06o\0 " % sum(h)
        self.out.write(bytes(h))

    def _longname(self, marker, kind, data):
        self._header(marker, kind, 0o644, len(data))
        self._data(data)

    def _data(self, data):
        self.out.write(data)
        pad = -len(data) % self.BLOCK
        if pad:
            self.out.write(b"\0" * pad)

    def dir(self, name, mode=0o755):
        self._header(name.encode() + b"/", b"5", mode)

    def symlink(self, name, target):
        self._header(name.encode(), b"2", 0o777, linkname=target.encode())

    def file(self, name, mode, path, size):
        self._header(name.encode(), b"0", mode, size)
        written = 0
        with open(path, "rb", buffering=0) as f:
            while written < size:
                chunk = f.read(min(1 << 20, size - written))
                if not chunk:
                    raise EmergenceError(f"{path} shrank while being archived")
                self.out.write(chunk)
                written += len(chunk)
        pad = -size % self.BLOCK
        if pad:
            self.out.write(b"\0" * pad)

    def close(self):
        self.out.write(b"\0" * (2 * self.BLOCK))
