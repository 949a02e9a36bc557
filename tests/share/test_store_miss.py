"""A store miss goes to the peers.  Node A (in its netns) holds hello-c, built
by `emergence build`; `run --image hello-c` in B's netns, with an empty store,
pulls the image from A (every blob verified) and runs it.

Both namespaces share this machine's one /nix/store, so that run finds the
closure already there: it proves the image pull and the closure check.  A
second run gives B a mount namespace whose /nix is an empty directory (its
own Nix store and database, which Nix initialises), so the closure really is
missing: `run --image` copies it from A's signed cache and runs it from
there; `build` in such a namespace takes A's build from A's cache (signed by
A, not built).  The substituter options and the closure copy are also
checked into a separate store (local?root=DIR), with wrong keys refused."""

import hashlib
import json
import os
import subprocess

import pytest
from netnslib import in_ns, mesh, node_key  # noqa: F401
from sharelib import NEEDS, built, nodes  # noqa: F401

from emergence.errors import EmergenceError
from emergence.share import copy_closure, substituter_options
from emergence.share.signing import SecretKey

pytestmark = [NEEDS, pytest.mark.slow]


def closure_of(store, digest):
    with open(os.path.join(store, "blobs", "sha256", digest[7:])) as f:
        ann = json.load(f)["annotations"]
    return ann["io.github.emergence.nix.contents"].split()[0], \
        ann["io.github.emergence.nix.store-paths"].split()


def cli(ns, store, root, *args):
    from conftest import emergence_command
    p = in_ns(ns, *emergence_command(), "--root", str(root), "--store", str(store), *args,
              timeout=300)
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    return p


def test_run_image_pulls_a_miss_from_a_peer(built, mesh, tmp_path):  # noqa: F811
    store, digest = built
    (na, aa), (nb, _) = mesh(2)
    key = node_key(tmp_path / "shm-state0", "shm-a-1")
    a = mesh.start(na, aa, 0, {"store": store})
    dest, root = tmp_path / "shm-b-store", tmp_path / "shm-b-root"
    cid = f"shm{os.getpid()}run"
    p = cli(nb, dest, root, "run", "--image", "hello-c", "--peer", a.url, "--trusted-key",
            key, "--config", "/dev/null", cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from C, built by Nix\n"
    with open(dest / "index.json") as f:
        index = json.load(f)["manifests"]
    assert [m["digest"] for m in index] == [digest]
    for name in os.listdir(dest / "blobs" / "sha256"):  # whole, verified blobs only
        assert hashlib.sha256((dest / "blobs" / "sha256" / name).read_bytes()).hexdigest() \
            == name
    assert not os.listdir(root / ".bundles")  # the bundle went with the container
    # now a hit: no peer needed
    p = cli(nb, dest, root, "run", "--image", "hello-c", "--config", "/dev/null", cid)
    assert p.returncode == 0 and p.stdout == "hello from C, built by Nix\n", p.stderr


class OwnNix:
    """Node A (serving STORE) in one netns; commands in B's netns run with an
    empty directory as /nix (a mount namespace of their own): B's own Nix store."""

    def __init__(self, mesh, tmp_path, store):  # noqa: F811
        (na, aa), (self.nb, _) = mesh(2)
        self.key = node_key(tmp_path / "shm-state0", "shm-a-1")
        self.a = mesh.start(na, aa, 0, {"store": store})
        self.dir = tmp_path / "shm-own-nix"
        self.dir.mkdir()

    def __call__(self, *cmd):
        p = in_ns(self.nb, "unshare", "-m", "sh", "-c",
                  'mount --make-rprivate / && mount --bind "$0" /nix && exec "$@"',
                  str(self.dir), *cmd, timeout=600)
        assert "Traceback" not in p.stderr, p.stderr
        return p

    def has(self, path):
        return os.path.exists(f"{self.dir}/store/{os.path.basename(path)}")


def test_run_image_copies_a_missing_closure_from_the_peer(built, mesh, tmp_path):  # noqa: F811
    store, digest = built
    top, paths = closure_of(store, digest)
    own = OwnNix(mesh, tmp_path, store)
    from conftest import emergence_command

    def run_in_own_nix(key):
        return own(*emergence_command(), "--root", str(tmp_path / "shm-b-root"), "--store",
                   str(tmp_path / "shm-b-store"), "run", "--image", f"hello-c@{digest}",
                   "--peer", own.a.url, "--config", "/dev/null", "--trusted-key", key,
                   f"shm{os.getpid()}nix")
    a = own.a
    p = run_in_own_nix(SecretKey.generate("shm-wrong-1").public())  # a key A never used
    assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
    assert "trusted signature" in p.stderr and a.url in p.stderr
    assert not own.has(top)
    p = run_in_own_nix(own.key)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from C, built by Nix\n"  # run from B's own copies
    assert all(own.has(path) for path in paths)  # B's own store holds the closure...
    p = own("nix-store", "--verify", "--check-contents")  # ...and Nix agrees on it
    assert p.returncode == 0 and "error" not in p.stderr.lower(), p.stderr


def test_a_miss_without_peers_or_with_a_dead_one(mesh, tmp_path):  # noqa: F811
    (nb, _), = mesh(1)
    dest, root = tmp_path / "shm-b-store", tmp_path / "shm-b-root"
    p = cli(nb, dest, root, "run", "--image", "hello-c", "--config", "/dev/null", "shmx")
    assert p.returncode != 0 and p.stderr.count("\n") == 1
    assert "--peer" in p.stderr and not dest.exists()
    p = cli(nb, dest, root, "run", "--image", "hello-c", "--config", "/dev/null",
            "--peer", "http://10.231.0.77:7480", "shmx")  # nobody there
    assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
    assert "no peer" in p.stderr and "10.231.0.77" in p.stderr
    assert os.listdir(dest / "blobs" / "sha256") == []  # nothing partial
    assert not os.path.exists(root / ".bundles" / "shmx")


def test_closure_copied_from_a_peers_signed_cache(built, nodes, tmp_path):  # noqa: F811
    store, digest = built
    n = nodes(store)
    top, paths = closure_of(store, digest)
    dest = tmp_path / "shm-nix"
    wrong = SecretKey.generate("shm-other-1").public()
    with pytest.raises(EmergenceError) as e:
        copy_closure([top], [n.url], [wrong], to=f"local?root={dest}")
    assert "trusted signature" in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists(f"{dest}{top}")
    with pytest.raises(EmergenceError, match="trusted_keys"):
        copy_closure([top], [n.url], [], to=f"local?root={dest}")
    assert copy_closure(paths, ["http://127.0.0.1:1", n.url], [n.public_key],
                        to=f"local?root={dest}") == n.url  # the dead peer is passed over
    for path in paths:
        assert os.path.exists(f"{dest}{path}")
    p = subprocess.run(["nix-store", "--store", f"local?root={dest}", "--verify",
                        "--check-contents"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "error" not in p.stderr.lower(), p.stderr


def test_a_peer_replaced_at_the_same_address_is_read_afresh(built, nodes, tmp_path):  # noqa: F811
    """Nix keeps narinfos for a month; the node now at a peer's address may be
    another, with another key: its narinfos must be read again, not the cached
    ones signed by the node that was there before."""
    store, digest = built
    top, paths = closure_of(store, digest)
    first = nodes(store)
    key = first.public_key
    assert copy_closure(paths, [first.url], [key],
                        to=f"local?root={tmp_path / 'shm-nix1'}") == first.url
    port = int(first.url.rsplit(":", 1)[1])
    first.stop()
    second = nodes(store, port=port)  # same address, a new state: a new key
    assert second.url == first.url and second.public_key != key
    assert copy_closure(paths, [second.url], [second.public_key],
                        to=f"local?root={tmp_path / 'shm-nix2'}") == second.url
    assert os.path.exists(f"{tmp_path / 'shm-nix2'}{top}")


def test_peers_caches_as_build_substituters(built, nodes, tmp_path):  # noqa: F811
    """What `build` adds to nix-build: the path is copied from the peer, not built."""
    store, digest = built
    n = nodes(store)
    top, _ = closure_of(store, digest)
    dest = tmp_path / "shm-nix"
    assert substituter_options([n.url], []) == []  # no trusted key: peers unused
    opts = substituter_options([n.url], [n.public_key])
    p = subprocess.run(["nix-store", "--store", f"local?root={dest}", "--realise", top]
                       + opts, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"from '{n.url}/nix-cache'" in p.stderr
    assert os.path.exists(f"{dest}{top}")
    wrong = substituter_options([n.url], [SecretKey.generate("shm-o-1").public()])
    p = subprocess.run(["nix-store", "--store", f"local?root={tmp_path}/shm-nix2", "--realise",
                        top] + wrong, capture_output=True, text=True, timeout=300)
    assert not os.path.exists(f"{tmp_path}/shm-nix2{top}")
    # and `build` takes the same peers (here everything is built already: it must
    # still succeed, with nix-build accepting the options)
    from sharelib import EXAMPLES, emergence
    out = json.loads(emergence(str(tmp_path / "shm-st"), "build",
                               os.path.join(EXAMPLES, "hello-c.nix"), "--json", "--peer",
                               n.url, "--trusted-key", n.public_key, "--config",
                               "/dev/null").stdout)
    assert out["digest"] == digest


def test_build_copies_what_a_peer_built(built, mesh, tmp_path):  # noqa: F811
    """`build` in an empty Nix store (B's own /nix, as above): the closure A
    built comes from A's signed cache (signed, not built here: not 'ultimate')."""
    store, digest = built
    top, _ = closure_of(store, digest)
    own = OwnNix(mesh, tmp_path, store)
    from conftest import emergence_command
    from sharelib import EXAMPLES
    p = own(*emergence_command(), "--store", str(tmp_path / "shm-b-store"), "build",
            os.path.join(EXAMPLES, "hello-c.nix"), "--json", "--peer", own.a.url,
            "--trusted-key", own.key, "--config", "/dev/null")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["digest"] == digest  # the same image as A's
    p = own("nix", "--extra-experimental-features", "nix-command", "path-info", "--json", top)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    info = info[0] if isinstance(info, list) else info.get(top, info)
    assert not info.get("ultimate") and any(s.startswith("shm-a-1:")
                                            for s in info.get("signatures", []))
