"""Sharing: every node serves its store to the others and pulls from many
of them at once, trusting none of them.

  service.py    the part inside `emergence node` (routes, start/stop, status)
  registry.py   the OCI distribution API over the store: pull, and push with a token
  auth.py       the push token (root-only file) and the readers' network filter
  nixcache.py   a signed Nix binary cache over /nix/store
  nar.py        NAR serialisation and Nix's base-32
  signing.py    Ed25519 keys and signatures in Nix's NAME:BASE64 format
  pieces.py     signed piece lists: a blob's pieces and their SHA-256
  peers.py      who the peers are (config + their own lists) and who has a digest
  fetch.py      a pull from many peers at once, verified piece by piece, resumable
  client.py     a small registry client: manifests, blobs, push, upstream auth
  commands.py   the verbs: pull, push, peers

May import: the top-level helpers and image/ (its Store, for every write).
Other parts may call `pull_image` below and nothing else.
"""


def pull_image(store, ref, peers=(), upstream="", trusted_keys=(),
               state_dir="/var/lib/emergence/share"):
    """Fetch REF ('name[:tag|@digest]') into STORE (an image.store.Store) from
    PEERS and/or UPSTREAM, as `emergence pull` does; returns its summary
    ({"digest", "bytes", "from", "banned", ...}).  The one entry other parts
    (e.g. `run --image` or `build` on a miss) may call."""
    import asyncio

    from .fetch import Puller
    return asyncio.run(Puller(store, state_dir, peers, upstream, trusted_keys).pull(ref))
