"""The stage cache shared between nodes, on Bazel's split of an action cache
and a CAS, through the share part (its public functions only):

  CAS           the outputs tar and the log are blobs of the store, which every
                node serves (OCI distribution API) and pulls verified by digest;
  action cache  KEY -> result is an OCI artifact tagged `emergence-ci-result:HEX(KEY)`:
                a manifest whose config holds the key and the outputs' digests and
                whose layers are the two blobs.  The node that produced it holds
                the tag; share signs "emergence-ci-result:HEX is DIGEST" with that node's
                key when asked (/share/v1/tag).

A miss asks the peers ([share] peers, --peer) for the tag; share takes a
manifest only with a statement signed by a key in [share] trusted_keys (or
--trusted-key) and every blob only if it hashes to its digest.  Without a
trusted key nothing is asked: a tag nobody vouches for means nothing.  The
artifact's config must name the key asked for; its outputs are hashed again
as they are unpacked (cache.unpack).  Anything else is a miss: the stage runs.
"""

import os

from ..errors import EmergenceError
from ..image.store import MANIFEST, canonical

NAME = "emergence-ci-result"
ARTIFACT = "application/vnd.emergence.pipeline.result.v1"
CONFIG = "application/vnd.emergence.pipeline.result.config.v1+json"
OUTPUTS = "application/vnd.emergence.pipeline.outputs.v1.tar"
LOG = "text/plain"


def ref(key):
    return f"{NAME}:{key.partition(':')[2]}"


class Shared:
    def __init__(self, cache, peers, trusted_keys, state_dir):
        self.cache, self.store = cache, cache.store
        self.peers, self.trusted = list(peers), list(trusted_keys)
        self.state_dir = state_dir
        self.why = {}  # key -> why its peers' result was not taken (said in the report)

    def publish(self, entry):
        """Tag ENTRY's result in the store, for the node's share service to serve."""
        store = self.store
        meta = {k: entry[k] for k in ("key", "output_digests", "stage", "duration")
                if k in entry}
        config = canonical(meta)
        cdigest, csize = store.put(config)
        layers = []
        for k, media in (("outputs", OUTPUTS), ("log", LOG)):
            size = os.path.getsize(store.blob_path(entry[k]))
            layers.append({"mediaType": media, "digest": entry[k], "size": size})
        manifest = canonical({"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": ARTIFACT,
                              "config": {"mediaType": CONFIG, "digest": cdigest, "size": csize},
                              "layers": layers})
        mdigest, msize = store.put(manifest)
        store.set_ref(ref(entry["key"]), {"mediaType": MANIFEST, "digest": mdigest,
                                          "size": msize})
        return mdigest

    def fetch(self, key):
        """KEY's result from the peers into the local cache; the entry, or None."""
        if not self.peers or not self.trusted:
            return None
        return self._pull(key, ref(key), self.trusted)

    def fetch_digest(self, key, digest):
        """KEY's result by its manifest DIGEST (named in the result of the stage
        task, by the worker that ran it) from the peers: no tag to trust, every
        digest checked, the config must name KEY."""
        entry = self._pull(key, f"{NAME}@{digest}", ())
        self.store.remove_refs([f"{NAME}@{digest}"])  # the cache index keeps its blobs
        return entry

    def _pull(self, key, reference, trusted):
        from .. import share
        from ..share.fetch import Interrupted, Missing
        for attempt in (1, 2):  # a pull that failed midway resumes (a stall, a dead peer)
            try:
                got = share.pull_image(self.store, reference, self.peers, "", trusted,
                                       self.state_dir)
                manifest = self.store.read_json(got["digest"])
                meta = self.store.read_json(manifest["config"]["digest"])
                outputs, log = (d["digest"] for d in manifest["layers"][:2])
                break
            except Missing:
                return None  # a plain miss: nothing to say
            except Interrupted as e:
                self.why[key] = str(e)
                if attempt == 2:
                    return None
            except (EmergenceError, OSError, KeyError, TypeError, ValueError) as e:
                self.why[key] = f"{type(e).__name__}: {e}"
                return None
        if meta.get("key") != key or not isinstance(meta.get("output_digests"), dict):
            self.why[key] = "the peers' result names another key"
            return None  # a signed tag for another key's result: not this stage's
        self.why.pop(key, None)
        entry = {"key": key, "outputs": outputs, "log": log, "exit_code": 0,
                 "output_digests": meta["output_digests"], "stage": meta.get("stage", ""),
                 "duration": meta.get("duration", 0), "from_peer": sorted(got.get("from", {}))}
        self.cache.write_index(key, entry)
        return entry


def from_options(cache, opts, store_root, cluster=False):
    """(a Shared for `pipeline run --share` or --cluster ([share] of node.toml,
    --peer, --trusted-key), or None; that [share] config, or {})."""
    if not opts.get("share") and not cluster:
        return None, {}
    from .. import share
    cfg = share.config(opts.get("config"), opts.get("peer", ()), opts.get("trusted-key", ()))
    state = os.path.join(store_root, "pipeline", "share-state")
    os.makedirs(state, mode=0o700, exist_ok=True)
    return Shared(cache, cfg.get("peers", ()), cfg.get("trusted_keys", ()), state), cfg
