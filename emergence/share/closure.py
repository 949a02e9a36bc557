"""Nix closures from the peers' signed binary caches, for `run --image` and
`build` on a miss.  Nix itself copies and checks: `nix copy --from
PEER/nix-cache` with `require-sigs` on and only the operator's trusted keys,
so a path enters /nix/store only if a trusted node signed its NAR hash and
references, and Nix registers each path atomically (nothing partial)."""

import subprocess

from ..errors import EmergenceError

NIX = ["nix", "--extra-experimental-features", "nix-command"]


def caches(peers):
    return [p.rstrip("/") + "/nix-cache" for p in peers]


# Nix keeps narinfos it read for a month (~/.cache/nix); a peer's may be stale
# there: the node at that address was rebuilt or replaced, with another key (its
# cached signature then fails as "lacks a valid signature").  Peers are near:
# read each narinfo afresh.
FRESH_NARINFO = ["--option", "narinfo-cache-negative-ttl", "0",
                 "--option", "narinfo-cache-positive-ttl", "0"]


def _keys(trusted_keys, what):
    if not trusted_keys:
        raise EmergenceError(f"{what} needs the peers' keys: set [share] trusted_keys in "
                             "/etc/emergence/node.toml or give --trusted-key NAME:BASE64")
    return " ".join(trusted_keys)


def copy_closure(paths, peers, trusted_keys, to=None):
    """Copy PATHS (and their closures) from the first of PEERS' caches that has
    them all; return that peer.  TO is another Nix store (tests: local?root=DIR)."""
    keys = _keys(trusted_keys, f"fetching {paths[0]} from a peer")
    why = "no peers"
    for peer, cache in zip(peers, caches(peers)):
        cmd = NIX + ["copy", "--from", cache, "--option", "trusted-public-keys", keys,
                     "--option", "require-sigs", "true", "--option", "substituters", "",
                     *FRESH_NARINFO]
        cmd += ["--to", to] if to else []
        try:
            p = subprocess.run(cmd + list(paths), capture_output=True, text=True,
                               timeout=3600, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise EmergenceError("nix is not installed (apt-get install nix-bin)") from None
        if p.returncode == 0:
            return peer
        lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip().startswith("error")]
        why = f"{peer}: {lines[-1] if lines else f'nix copy exited with {p.returncode}'}"
    raise EmergenceError(f"no peer's Nix cache gave {paths[0]} with a trusted signature "
                         f"({why})")


def substituter_options(peers, trusted_keys, offline):
    """nix-build options that make the peers' caches substituters (signatures
    checked against TRUSTED_KEYS), so what a peer built is copied, not rebuilt.
    OFFLINE: the peers are the only substituters.  Without trusted keys the
    peers are not used (a build never needs them)."""
    if not peers or not trusted_keys:
        return []
    keys = " ".join(trusted_keys)
    urls = " ".join(caches(peers))
    return ["--option", "substituters" if offline else "extra-substituters", urls,
            "--option", "extra-trusted-public-keys", keys, *FRESH_NARINFO]
