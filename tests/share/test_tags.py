"""Which peer is trusted to say what a tag means: signed tag statements.  A
peer that serves another manifest than the one its signed statement names
is banned, and alone it fails the pull with one clear line; a peer whose
statement no trusted key signed is refused; trusted peers that disagree stop
the pull; a pull by digest needs no statement."""

import json

import pytest
from sharelib import NEEDS, Faulty, emergence, nodes, random_image  # noqa: F401
from test_pull import refs, store_is_clean

from emergence.share import tags
from emergence.share.signing import SecretKey

pytestmark = [NEEDS, pytest.mark.slow]
SIZE = 1 << 20


@pytest.fixture
def two_images(tmp_path):
    """Two stores, each with a different image called big:1."""
    good, other = str(tmp_path / "sh-good"), str(tmp_path / "sh-other")
    return random_image(good, "big:1", SIZE, seed=1), random_image(other, "big:1", SIZE,
                                                                    seed=2), good, other


def pull(dest, state, peers, keys, ref="big:1"):
    args = ["pull", ref, "--json", "--state", str(state), "--config", "/dev/null"]
    for p in peers:
        args += ["--peer", p]
    for k in keys:
        args += ["--trusted-key", k]
    return emergence(str(dest), *args, check=False)


def test_lying_peer_is_refused(two_images, nodes, tmp_path):  # noqa: F811
    (digest, _), (other_digest, _), good, other = two_images
    honest, elsewhere = nodes(good), nodes(other)
    liar = Faulty(honest, f"swap={elsewhere.url}")  # honest's statement, another manifest
    try:
        dest = tmp_path / "sh-d1"
        p = pull(dest, tmp_path / "sh-s", [liar.url], [honest.public_key])
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
        assert liar.url in p.stderr and other_digest in p.stderr and digest in p.stderr
        assert not (dest / "index.json").exists() or refs(dest) == []
        # with an honest peer as well: the pull gets the vouched-for image (the
        # fastest first: the liar, if it was asked, is banned for it)
        p = pull(dest, tmp_path / "sh-s", [liar.url, honest.url], [honest.public_key])
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["digest"] == digest
        assert other_digest in out["banned"].get(liar.url, other_digest)
        store_is_clean(str(dest))
        assert refs(dest) == ["big:1"]
    finally:
        liar.stop()


def test_untrusted_or_disagreeing_statements(two_images, nodes, tmp_path):  # noqa: F811
    (digest, _), (other_digest, _), good, other = two_images
    a, b = nodes(good), nodes(other)
    # b's key is not trusted: its statement is refused, a's is taken
    out = json.loads(pull(tmp_path / "sh-d1", tmp_path / "sh-s", [b.url, a.url],
                          [a.public_key]).stdout)
    assert out["digest"] == digest and "not signed by a trusted key" in out["banned"][b.url]
    p = pull(tmp_path / "sh-d2", tmp_path / "sh-s", [b.url], [a.public_key])
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert "no peer vouches for big:1" in p.stderr
    assert not (tmp_path / "sh-d2" / "blobs" / "sha256").exists() or \
        not any((tmp_path / "sh-d2" / "blobs" / "sha256").iterdir())
    # both trusted, and they disagree: stop, and say how to go on
    p = pull(tmp_path / "sh-d3", tmp_path / "sh-s", [a.url, b.url],
             [a.public_key, b.public_key])
    assert p.returncode == 1 and "disagree" in p.stderr and "by digest" in p.stderr
    assert digest in p.stderr and other_digest in p.stderr
    # by digest, no statement is needed (the digest proves itself)
    out = json.loads(pull(tmp_path / "sh-d3", tmp_path / "sh-s", [a.url, b.url],
                          [a.public_key, b.public_key], f"big@{other_digest}").stdout)
    assert out["digest"] == other_digest


def test_statements_are_checked():
    k, other = SecretKey.generate("k-1"), SecretKey.generate("o-1")
    d = "sha256:" + "a" * 64
    st = tags.statement(k, "big", "1", d)
    assert tags.check(st, "big", "1", [k.public()]) == d
    assert tags.check(st, "big", "2", [k.public()]) is None  # another tag
    assert tags.check({**st, "digest": "sha256:" + "b" * 64}, "big", "1", [k.public()]) is None
    assert tags.check(st, "big", "1", [other.public()]) is None
    assert tags.check({"name": "big"}, "big", "1", [k.public()]) is None
