"""Sharing: every node serves its store to the others and pulls from many
of them at once, trusting none of them.

  service.py    the part inside `emergence node` (routes, start/stop, status)
  registry.py   the OCI distribution API over the store: pull, tags, manifests, deletes
  uploads.py    its blob uploads: monolithic, chunked, mount, expiry of idle sessions
  manifests.py  what a pushed manifest must be; what is read out of a stored one
  referrers.py  its referrers API and the referrers tag (sha256-HEX) kept with it
  auth.py       signed announcements (the token and readers are access.py's)
  nixcache.py   a signed Nix binary cache over /nix/store
  nar.py        NAR serialisation and Nix's base-32
  signing.py    Ed25519 keys and signatures in Nix's NAME:BASE64 format
  pieces.py     signed piece lists: a blob's pieces and their SHA-256
  peers.py      who the peers are (config + their own lists) and who has a digest
  fetch.py      a pull from many peers at once, verified piece by piece, resumable
  client.py     a small registry client: manifests, blobs, push, upstream auth
  members.py    membership learned by gossip: signed member records, expiry
  tags.py       signed tag -> digest statements: which peer says what a tag means
  closure.py    Nix closures from the peers' signed caches (run --image, build)
  commands.py   the verbs: pull, push, peers

May import: the top-level helpers and image/ (its Store, for every write).
Other parts may call the functions below and nothing else.
"""


def config(path=None, peers=(), trusted_keys=()):
    """[share] of the node's config file (default /etc/emergence/node.toml, if
    any), with PEERS and TRUSTED_KEYS added: what `emergence pull` uses."""
    from .commands import _config
    return _config({"config": path, "peer": list(peers), "trusted-key": list(trusted_keys)})


def pull_image(store, ref, peers=(), upstream="", trusted_keys=(),
               state_dir="/var/lib/emergence/share"):
    """Fetch REF ('name[:tag|@digest]') into STORE (an image.store.Store) from
    PEERS and/or UPSTREAM, as `emergence pull` does; returns its summary
    ({"digest", "bytes", "from", "banned", ...}).  `run --image` calls it on a
    store miss."""
    import asyncio

    import aiohttp

    from .fetch import Interrupted, Puller
    try:
        return asyncio.run(Puller(store, state_dir, peers, upstream, trusted_keys).pull(ref))
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise Interrupted(f"pull of {ref} failed: {type(e).__name__} {e}; "
                             "run it again to resume") from None


def copy_closure(paths, peers, trusted_keys, to=None):
    """Copy Nix PATHS from the first peer whose signed cache has them (Nix checks
    the signatures against TRUSTED_KEYS); returns that peer."""
    from .closure import copy_closure
    return copy_closure(paths, peers, trusted_keys, to)


def substituter_options(peers, trusted_keys, offline=True):
    """nix-build options using the peers' signed caches as substituters."""
    from .closure import substituter_options
    return substituter_options(peers, trusted_keys, offline)
