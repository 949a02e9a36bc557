"""Piece lists version 2 (SHA-256 midstates): one pass per byte checks each
piece and, all pieces checked, the blob against its digest; a lying signer
still gets no other bytes into the store; a list without states (or with
states no trusted key signed) is checked the version-1 way; a piece streamed
into the partial file takes no byte after it is verified."""

import hashlib
import json
import os
import random

import pytest
import requests
from sharelib import NEEDS, Faulty, emergence, nodes, random_image  # noqa: F401

from emergence.share import midstate, pieces
from emergence.share.fetch import _verified_pieces
from emergence.share.signing import SecretKey
from emergence.share.swarm import _Checker, _Request, _Swarm

pytestmark = pytest.mark.skipif(not midstate.available(), reason="no libcrypto")


def blob(tmp_path, size, seed=1):
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"blob{seed}"
    path.write_bytes(data)
    return str(path), data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_midstates_are_sha256(tmp_path):
    path, data, digest = blob(tmp_path, 5 * 4096 + 77)
    plist = pieces.make(path, digest, 4096)
    assert plist["states"][0] == midstate.IV and len(plist["states"]) == 6
    for i, st in enumerate(plist["states"]):  # each state resumes the blob's own hash
        assert midstate.Chain(st, i * 4096).update(data[i * 4096:]).hexdigest() == digest[7:]
    assert pieces.make(path, "sha256:" + "0" * 64, 4096) is None


def test_states_taken_only_signed_by_a_trusted_key(tmp_path):
    path, _, digest = blob(tmp_path, 3 * 4096)
    key, other = SecretKey.generate("n1"), SecretKey.generate("n2")
    signed = pieces.sign(pieces.make(path, digest, 4096), key)
    trusted = [key.public()]
    assert pieces.check(signed, digest, trusted)  # what a version-1 puller checks
    assert pieces.states(signed, trusted) == signed["states"]
    assert pieces.states(signed, [other.public()]) is None
    forged = json.loads(json.dumps(signed))
    forged["states"][1] = "0" * 64  # changed after signing: taken the version-1 way
    assert pieces.check(forged, digest, trusted) and pieces.states(forged, trusted) is None
    spaced = json.loads(json.dumps(signed))
    spaced["states"][1] = "00 " * 21 + "0"
    assert pieces.states(spaced, trusted) is None
    odd = pieces.sign(pieces.make(path, digest, 1000), key)  # not whole 64-byte blocks
    assert "states" not in odd and pieces.check(odd, digest, trusted)
    assert pieces.states(odd, trusted) is None


def test_a_lying_signer_gets_no_other_bytes_in(tmp_path):
    """A trusted key signs states of OTHER bytes under the blob's digest: every
    piece but the last checks out, the last cannot end in the digest, so the
    transfer never completes and nothing enters the store."""
    psize = 4096
    path, data, digest = blob(tmp_path, 4 * psize + 100)
    other_path, other, _ = blob(tmp_path, len(data), seed=2)
    lie = pieces.make(other_path, "sha256:" + hashlib.sha256(other).hexdigest(), psize)
    lie["digest"] = digest
    check = _Checker(lie, lie["states"])
    results = []
    for i in range(len(lie["states"])):
        c = check(i)
        c.update(other[i * psize:(i + 1) * psize])
        results.append(c.ok())
    assert results == [True] * 4 + [False]
    fd = os.open(other_path, os.O_RDONLY)
    try:  # a resume from a partial file of those bytes: the same
        assert _verified_pieces(fd, psize, len(other), check) == {0, 1, 2, 3}
    finally:
        os.close(fd)
    truth = pieces.make(path, digest, psize)
    good = _Checker(truth, truth["states"])
    assert all(_ok(good(i), data[i * psize:(i + 1) * psize]) for i in range(5))
    assert not _ok(good(2), other[2 * psize:3 * psize])  # a lying peer's piece


def _ok(c, data):
    c.update(data)
    return c.ok()


def test_no_byte_lands_in_a_piece_after_it_is_verified(tmp_path):
    import threading
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 8)
        s = _Swarm.__new__(_Swarm)
        s.fd, s.open, s.writing = fd, True, threading.Lock()
        s.direct, s.sealed = {}, set()
        first = s.direct[0] = _Request(0, True)  # streams piece 0 as it comes
        assert s._write(first, b"xx", 0)
        hedge = _Request(0, False)  # a duplicate, verified whole: seals the piece
        assert s._write(hedge, b"GOODGOOD", 0)
        assert not s._write(first, b"yy", 2) and not s._write(first, None, 8)
        late = _Request(0, True)  # a request begun after the piece was verified
        assert not s._write(late, b"zz", 0) and not s._write(hedge, b"GOODGOOD", 0)
        assert os.pread(fd, 8, 0) == b"GOODGOOD"
        s.direct = {1: _Request(1, True)}
        assert s._write(s.direct[1], b"ab", 4) and s._write(s.direct[1], None, 6)
        assert 1 in s.sealed and not s._write(_Request(1, False), b"cd", 4)
        s.open = False  # the transfer is over: nothing more
        assert not s._write(_Request(2, True), b"q", 0)
    finally:
        os.close(fd)


@NEEDS
@pytest.mark.slow
def test_pull_checks_pieces_both_ways(tmp_path, nodes):  # noqa: F811
    """A corrupt peer is banned and the blob is right with a version-2 list (1 MB
    pieces) and with a version-1 one (pieces that are not whole 64-byte blocks)."""
    store = str(tmp_path / "sh-seed")
    digest, layer = random_image(store, "big:1", 6 << 20)
    for psize, v2 in ((1 << 20, True), (999_999, False)):
        ns = [nodes(store, {"piece_size": psize}) for _ in range(2)]
        bad = Faulty(ns[1], "corrupt")
        try:
            plist = requests.get(f"{ns[0].url}/share/v1/pieces/{layer}").json()
            assert ("states" in plist) == v2
            dest, state = str(tmp_path / f"d{psize}"), tmp_path / f"s{psize}"
            args = ["pull", "big:1", "--json", "--state", str(state), "--config", "/dev/null",
                    "--peer", bad.url, "--peer", ns[0].url]
            for n in ns:
                args += ["--trusted-key", n.public_key]
            out = json.loads(emergence(dest, *args).stdout)
            assert out["digest"] == digest and "bad piece" in out["banned"][bad.url]
            with open(os.path.join(dest, "blobs", "sha256", layer[7:]), "rb") as f:
                assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == layer
        finally:
            bad.stop()


def test_a_silent_peer_is_given_up_after_stall():
    """A peer that sends part of a streamed piece and then nothing is given up
    after `stall` seconds, not waited for."""
    import socket
    import threading
    import time

    from emergence.share.swarm import _PieceConn
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held = []

    def serve():
        c, _ = srv.accept()
        held.append(c)
        c.recv(4096)
        c.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1000000\r\n"
                  b"Content-Range: bytes 0-999999/1000000\r\n\r\n" + b"x" * 300000)
    threading.Thread(target=serve, daemon=True).start()
    conn = _PieceConn(f"http://127.0.0.1:{srv.getsockname()[1]}", 1.0)
    s = _Swarm.__new__(_Swarm)
    s.fd = os.open("/dev/null", os.O_WRONLY)
    s.open, s.writing, s.direct, s.sealed = True, threading.Lock(), {}, set()
    t = time.monotonic()
    try:
        with pytest.raises(OSError):
            conn.get("/v2/x/blobs/sha256:" + "0" * 64, 1000000, 0,
                     _Checker({"pieces": ["0" * 64], "pieceSize": 1000000,
                               "digest": "sha256:" + "0" * 64}, None)(0),
                     _Request(0, True), s._write)
        assert time.monotonic() - t < 30
    finally:
        os.close(s.fd)
        srv.close()
        for c in held:
            c.close()


def test_the_piece_size_follows_the_blob_size():
    """1 MiB pieces up to 1 GiB (they spread through a swarm sooner), then about
    1,024 pieces, at most 16 MiB; a list made with no size takes it."""
    assert pieces.size_for(0) == pieces.size_for(256 << 20) == pieces.size_for(1 << 30) == 1 << 20
    assert pieces.size_for((1 << 30) + 1) == 2 << 20
    assert pieces.size_for(4 << 30) == 4 << 20
    assert pieces.size_for(1 << 40) == 16 << 20


def test_a_list_made_with_no_size_uses_the_blob_size(tmp_path):
    data = os.urandom((3 << 20) + 5)
    path = tmp_path / "blob"
    path.write_bytes(data)
    plist = pieces.make(str(path), "sha256:" + hashlib.sha256(data).hexdigest())
    assert plist["pieceSize"] == 1 << 20 and len(plist["pieces"]) == 4
