"""A stage as a placement task (`pipeline run --cluster`): what the runner
puts in the task, and what the worker that gets it does.

Everything a stage needs moves by content address through the share part:

  image    the stage image's manifest, tagged emergence-ci-image:RUN-HEX in
           the runner's store; the worker pulls NAME@DIGEST, and its missing
           Nix paths as `run --image` does (the peers' Nix caches, signed by a
           key in the worker's own [share] trusted_keys);
  /src     the stage's work-tree inputs, one tar in an artifact tagged
           emergence-ci-input:RUN-HEX in the runner's store;
  /in/S    each needed stage's result artifact (shared.py) by manifest digest,
           from whichever peer holds it (the worker that ran S, or the runner).

The task is signed by the command node (place/tasks.submit), so the digests
in it are what the runner meant; every pull is checked against them (share
verifies the manifest's and each blob's digest; the outputs tar is hashed
again as it is unpacked).  The worker runs the stage as the local runner does
(execute.py), publishes its result as the shared cache's artifact (tagged
emergence-ci-result:HEX(KEY), its share service signs the tag) and records
the manifest digest in the task's result; the runner pulls it by digest.

Logs stream back live through etcd (logstream.py: bounded chunks under the
worker's own logs/NAME/, which the runner follows for the host the leader
assigned), and come back whole with the result: a passing stage's log is the
artifact's log layer; a failing stage's last LOG_TAIL bytes are in the task
result.  Secrets never go to a worker (etcd holds tasks in clear): the
runner refuses a stage with secrets in cluster mode, and the worker refuses a
stage task that carries any.  A stage task asks nothing of the worker's host:
no host or Relay network, no host paths (the worker makes every mount)."""

import os
import re
import shutil
import tempfile
import time

from ..image.store import MANIFEST, canonical
from .shared import ARTIFACT, NAME

IMAGE_NAME = "emergence-ci-image"
INPUT_NAME = "emergence-ci-input"
INPUT_CONFIG = "application/vnd.emergence.pipeline.input.config.v1+json"
INPUT_TAR = "application/vnd.emergence.pipeline.input.v1.tar"
LOG_TAIL = 16000
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_STAGE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_FIELDS = {"name", "key", "image", "argv", "env", "outputs", "limits", "timeout", "src", "in",
           "peers"}


# -- the runner's side --

def tag_image(store, digest, run_id):
    """Tag the stage image for this run so peers serve it by digest; the ref."""
    desc = store.resolve(digest)
    ref = f"{IMAGE_NAME}:{run_id}-{digest[7:]}"
    store.set_ref(ref, dict(desc))
    return ref


def publish_src(store, src_dir, run_id):
    """SRC_DIR (the stage's staged inputs) as an artifact in STORE, tagged for
    this run (the run drops its tags at its end): (manifest digest, ref)."""
    from .cache import pack
    w = store.writer()
    try:
        pack(src_dir, w)
        tar, size = w.commit()
    except BaseException:
        w.abort()
        raise
    cdigest, csize = store.put(canonical({"tar": tar}))
    manifest = canonical({"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": ARTIFACT,
                          "config": {"mediaType": INPUT_CONFIG, "digest": cdigest,
                                     "size": csize},
                          "layers": [{"mediaType": INPUT_TAR, "digest": tar, "size": size}]})
    mdigest, msize = store.put(manifest)
    ref = f"{INPUT_NAME}:{run_id}-{tar[7:]}"
    store.set_ref(ref, {"mediaType": MANIFEST, "digest": mdigest, "size": msize})
    return mdigest, ref


def stage_spec(stage, key, image, src, needs, peers):
    """The `stage` field of the task for STAGE under KEY."""
    argv = ["/bin/sh", "-c", stage.command] if isinstance(stage.command, str) \
        else list(stage.command)
    return {"name": stage.name, "key": key, "image": image, "argv": argv,
            "env": dict(stage.env), "outputs": list(stage.outputs),
            "limits": dict(stage.limits), "timeout": float(stage.timeout), "src": src,
            "in": dict(needs), "peers": list(peers)}


def pull(store, name, digest, peers, state_dir):
    """NAME@DIGEST into STORE from PEERS (share verifies every digest); the summary."""
    from .. import share
    return share.pull_image(store, f"{name}@{digest}", peers, "", (), state_dir)


# -- the worker's side --

def check(spec):
    """None if the stage task SPEC is one a worker may run, else why not (one line)."""
    st = spec.get("stage")
    if not isinstance(st, dict):
        return "a stage task needs 'stage' (an object)"
    if "secrets" in st or "secrets" in spec:
        return "a stage task may not carry secrets (etcd holds tasks in clear)"
    extra = set(st) - _FIELDS
    if extra:
        return f"a stage task may not ask for {sorted(extra)[0]!r}"
    if not isinstance(st.get("name"), str) or not _STAGE.match(st["name"]):
        return "the stage's name is not letters, digits, - and _"
    for f in ("key", "image", "src"):
        if not isinstance(st.get(f), str) or not _DIGEST.match(st[f]):
            return f"the stage's {f!r} is not a sha256 digest"
    ins = st.get("in")
    if not isinstance(ins, dict) or not all(
            isinstance(k, str) and _STAGE.match(k) and isinstance(v, str) and _DIGEST.match(v)
            for k, v in ins.items()):
        return "the stage's 'in' is not {stage: sha256 digest}"
    argv = st.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return "the stage's 'argv' is not a list of strings"
    env = st.get("env")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            and "=" not in k for k, v in env.items()):
        return "the stage's 'env' is not {NAME: string}"
    outs = st.get("outputs")
    if not isinstance(outs, list) or not all(
            isinstance(o, str) and o and not o.startswith("/") and ".." not in o.split("/")
            for o in outs):
        return "the stage's outputs must be relative paths under /out"
    limits = st.get("limits")
    if not isinstance(limits, dict) or set(limits) - {"memory", "cpus", "pids"} or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for v in limits.values()):
        return "the stage's 'limits' are not memory, cpus, pids > 0"
    t = st.get("timeout")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 86400:
        return "the stage's 'timeout' is not 0 < seconds <= 86400"
    peers = st.get("peers")
    if not isinstance(peers, list) or not all(isinstance(p, str) and
                                              p.startswith(("http://", "https://"))
                                              for p in peers):
        return "the stage's 'peers' are not http(s) URLs"
    return None


def execute(spec, store_root, root, cid, stop=None, output=None):
    """Run the stage task SPEC here: (exit code, log tail, {"result": manifest
    digest} when it passed).  STOP (a threading.Event) kills the container;
    OUTPUT (logstream.Shipper.feed) gets its output as it comes."""
    from ..image.store import Store
    from .cache import Cache, output_digests, unpack
    from .execute import collect, emergence_argv, make_bundle, run_container
    from .shared import Shared
    from .watch import Watcher
    st = spec["stage"]
    store = Store(store_root)
    cache = Cache(store_root)
    state = os.path.join(store.root, "pipeline", "share-state")
    os.makedirs(state, mode=0o700, exist_ok=True)
    tasks = os.path.join(store.root, "pipeline", "tasks")
    os.makedirs(tasks, mode=0o700, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f"{st['name']}-", dir=tasks)
    # a worker killed mid-stage (kill -9 too) leaves no container and no scratch:
    # the runner's watcher (watch.py) deletes them when this process is gone
    watcher = Watcher(emergence_argv(), root, scratch)
    peers = st["peers"]
    pulled = []
    try:
        if not store.has(st["image"]):
            pull(store, IMAGE_NAME, st["image"], peers, state)
        from ..image.run_image import fetch_missing  # its Nix paths, from signed caches
        fetch_missing(store.root, st["image"], peers)
        dirs = {}
        for label, name, digest in [("src", INPUT_NAME, st["src"])] + \
                [(f"in/{k}", NAME, v) for k, v in sorted(st["in"].items())]:
            if not store.has(digest):
                pull(store, name, digest, peers, state)
                pulled.append(f"{name}@{digest}")
            manifest = store.read_json(digest)
            layer = manifest["layers"][0]["digest"]
            d = dirs[label] = os.path.join(scratch, label)
            os.makedirs(d)
            unpack(store.blob_path(layer), layer, d)  # hashed again as it is unpacked
        bundle, work, out = (os.path.join(scratch, d) for d in ("bundle", "work", "out"))
        os.makedirs(work)
        os.makedirs(out)
        env = {"HOME": "/work", "SRC": "/src", "OUT": "/out", "IN": "/in", "CI": "true"}
        env.update(st["env"])
        make_bundle(store.root, st["image"], bundle, st["argv"], env, dirs["src"],
                    {k[3:]: v for k, v in dirs.items() if k.startswith("in/")}, work, out,
                    {}, "none", st["limits"])
        t0 = time.monotonic()
        code, log, why = run_container(root, cid, bundle, st["timeout"], stop,
                                       os.path.join(scratch, "runtime-errors"),
                                       watcher=watcher, sink=output)
        took = time.monotonic() - t0
        text = log.decode(errors="replace")
        if why == "timeout":
            return 137, (text + f"\ntimed out after {st['timeout']:g} s")[-LOG_TAIL:], {}
        if code != 0:
            return code, text[-LOG_TAIL:], {}
        collected = os.path.join(scratch, "collected")
        missing = collect(out, st["outputs"], collected)
        if missing:
            return 1, (text + f"\ndeclared output {missing[0]!r} was not left in /out"
                       )[-LOG_TAIL:], {}
        entry = cache.put(st["key"], collected, log,
                          {"exit_code": 0, "stage": st["name"], "duration": took,
                           "output_digests": output_digests(collected, st["outputs"])})
        digest = Shared(cache, (), (), state).publish(entry)
        return 0, text[-LOG_TAIL:], {"result": digest}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        watcher.close()
        store.remove_refs(pulled)  # inputs are not kept past the stage (gc takes them)
