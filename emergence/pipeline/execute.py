"""One attempt of one stage, in its own container.

The bundle is the image's own /nix/store paths (image.run_image.image_bundle);
then the config is narrowed to what the stage declared:

  /src          its work-tree inputs, hard-linked into a staging dir, read-only
  /in/STAGE     the outputs of each stage it takes as input, read-only
  /work         an empty scratch dir, the working directory
  /out          where it leaves its declared outputs (collected afterwards)
  /run/secrets  one read-only file per declared secret

The environment is the image's plus the stage's (plus its secrets): nothing
of the caller's.  The network namespace is the container's own (loopback
only) unless the stage declares `network = "host"`, or a Relay network
(`network = "NAME[:ip=IP]"`: the runtime's `org.emergence.relay.net`
annotation, whose hooks attach the container on create and detach it after).

The container is started by the `emergence run` command in a child process,
so a timeout can kill it (`emergence kill ID KILL`) and `run` deletes it.
That child dies with the runner, and the run's watcher deletes what it made
(watch.py).
"""

import os
import shutil
import subprocess
import sys
import time

from .. import fastjson


def emergence_argv():
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "emergence"]


def stage_inputs(base, files, dest):
    """Hard-link (or copy, across file systems) each input file under DEST."""
    os.makedirs(dest, exist_ok=True)
    for rel in files:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(os.path.join(base, rel), target)
        except OSError:
            shutil.copy2(os.path.join(base, rel), target)


def _bind(src, dst, ro=True):
    return {"destination": dst, "type": "bind", "source": src,
            "options": ["rbind", "ro" if ro else "rw", "nosuid", "nodev"]}


def make_bundle(store_root, image_digest, bundle, argv, env, src_dir, in_dirs, work, out,
                secret_files, network, limits, relay=""):
    from ..image.run_image import image_bundle
    os.makedirs(bundle)
    image_bundle(store_root, image_digest, bundle, argv)
    path = os.path.join(bundle, "config.json")
    with open(path, "rb") as f:
        cfg = fastjson.loads(f.read())
    rootfs = os.path.join(bundle, "rootfs")
    for d in ("src", "in", "work", "out", "run/secrets"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    mounts = [_bind(src_dir, "/src"), _bind(work, "/work", ro=False), _bind(out, "/out", ro=False)]
    for name, d in in_dirs.items():
        os.makedirs(os.path.join(rootfs, "in", name), exist_ok=True)
        mounts.append(_bind(d, f"/in/{name}"))
    for name, f in secret_files.items():
        open(os.path.join(rootfs, "run", "secrets", name), "w").close()
        mounts.append(_bind(f, f"/run/secrets/{name}"))
    cfg["mounts"] += mounts
    base_env = [e for e in cfg["process"]["env"] if e.partition("=")[0] not in env]
    cfg["process"]["env"] = base_env + [f"{k}={v}" for k, v in env.items()]
    cfg["process"]["cwd"] = "/work"
    cfg["process"]["terminal"] = False
    res = cfg["linux"].setdefault("resources", {})
    if "memory" in limits:
        res["memory"] = {"limit": limits["memory"]}
    if "cpus" in limits:
        res["cpu"] = {"period": 100000, "quota": int(limits["cpus"] * 100000)}
    if "pids" in limits:
        res["pids"] = {"limit": limits["pids"]}
    if network == "host":
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                      if n["type"] != "network"]
    elif network == "relay":  # Relay's public seam: the runtime adds its attach/detach hooks
        cfg.setdefault("annotations", {})["org.emergence.relay.net"] = relay
    with open(path, "w") as f:
        f.write(fastjson.dumps(cfg))


def mask(data, secrets):
    """DATA with every secret value replaced by ***."""
    for v in secrets:
        if v:
            data = data.replace(v.encode(), b"***")
    return data


def run_container(root, cid, bundle, timeout, cancel=None, error_log=None, watcher=None,
                  sink=None):
    """(exit code, output bytes, why stopped: None | "timeout" | "cancelled").
    On a timeout, or CANCEL (a threading.Event) being set, the container is
    killed and `run` (our child) deletes it; we delete again to be sure.
    The runtime's own errors (not the command's) also go to ERROR_LOG.
    WATCHER (watch.Watcher) hears of the container before it exists.  SINK,
    when given, is called with each piece of output as it comes (a cluster
    stage's live log, logstream.py)."""
    argv = emergence_argv() + ["--root", root]
    log = ["--log", error_log] if error_log else []
    if watcher is not None:
        watcher.container(cid)
    p = subprocess.Popen(argv + log + ["run", "--bundle", bundle, cid], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         preexec_fn=_pdeathsig())
    if watcher is not None:
        watcher.runner(p.pid)
    reader = _Reader(p.stdout, sink) if sink is not None else None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            why = "timeout" if left <= 0 else "cancelled" if cancel and cancel.is_set() else None
            if why:
                break
            try:
                if reader is not None:
                    p.wait(timeout=min(left, 0.1 if cancel else left))
                    return p.returncode, reader.output(), None
                out, _ = p.communicate(timeout=min(left, 0.1 if cancel else left))
                return p.returncode, out, None  # output is not lost between tries
            except subprocess.TimeoutExpired:
                continue
        subprocess.run(argv + ["kill", cid, "KILL"], capture_output=True)
        try:
            if reader is not None:
                p.wait(timeout=10)
                return 137, reader.output(), why
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out = reader.output() if reader is not None else p.communicate()[0]
        return 137, out, why
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.returncode != 0:  # `run` deletes what it ran; a cold process less per stage
            subprocess.run(argv + ["delete", "--force", cid], capture_output=True)
        if watcher is not None:
            watcher.finished(cid)


class _Reader:
    """Reads a pipe to its end in a thread, handing each piece to SINK too."""

    def __init__(self, pipe, sink):
        import threading
        self.pipe, self.sink, self.parts = pipe, sink, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        fd = self.pipe.fileno()
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            self.parts.append(data)
            try:
                self.sink(data)
            except Exception:
                pass  # the live copy is best effort; the log is whole here

    def output(self, timeout=10.0):
        """All of it, once the pipe closed (or TIMEOUT: a child kept it open)."""
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.pipe.close()
        return b"".join(self.parts)


_preexec = []


def _pdeathsig():
    if not _preexec:
        from ..lifetime import dies_with_us
        _preexec.append(dies_with_us())
    return _preexec[0]


def collect(out, outputs, dest):
    """Copy the declared outputs from OUT to DEST; the missing ones are returned."""
    missing = []
    os.makedirs(dest, exist_ok=True)
    for o in outputs:
        src = os.path.join(out, o)
        target = os.path.join(dest, o)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, target, symlinks=True)
        elif os.path.isfile(src):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(src, target)
        else:
            missing.append(o)
    return missing


def attempt(ctx, stage, key, attempt_no, in_dirs, src_dir, collected):
    """Run STAGE once: (exit code, masked log bytes, why it was stopped (None,
    "timeout", "cancelled" or "runtime": the runtime could not run it), message,
    seconds)."""
    scratch = os.path.join(ctx.run_dir, f"{stage.name}.{attempt_no}")
    bundle, work, out = (os.path.join(scratch, d) for d in ("bundle", "work", "out"))
    os.makedirs(work)
    os.makedirs(out)
    secret_files = {}
    env = {"HOME": "/work", "SRC": "/src", "OUT": "/out", "IN": "/in", "CI": "true"}
    env.update(stage.env)
    if stage.secrets:
        sdir = os.path.join(scratch, "secrets")
        os.makedirs(sdir, mode=0o700)
        for name in stage.secrets:
            f = os.path.join(sdir, name)
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            os.write(fd, ctx.secrets[name].encode())
            os.close(fd)
            secret_files[name] = f
            env[name] = ctx.secrets[name]
    argv = ["/bin/sh", "-c", stage.command] if isinstance(stage.command, str) \
        else list(stage.command)
    cid = f"{ctx.id_prefix}{ctx.run_id}-{stage.name}-{attempt_no}"  # unique per run
    try:
        make_bundle(ctx.store, ctx.images[stage.name], bundle, argv, env, src_dir, in_dirs,
                    work, out, secret_files, stage.network, stage.limits, stage.relay)
        t0 = time.monotonic()
        error_log = os.path.join(scratch, "runtime-errors")
        code, log, why = run_container(ctx.root, cid, bundle, stage.timeout, ctx.cancel,
                                       error_log, ctx.watcher)
        elapsed = time.monotonic() - t0
        log = mask(log, ctx.secrets.values())
        msg = ""
        if why == "cancelled":
            msg = "cancelled: another stage failed (fail-fast); container killed"
        elif why == "timeout":
            msg = f"timed out after {stage.timeout:g} s; container killed"
        elif code != 0 and os.path.exists(error_log) and os.path.getsize(error_log):
            with open(error_log, errors="replace") as f:
                line = f.read().strip().splitlines()[-1].removeprefix("emergence: error: ")
            msg = f"could not start: {line}"
            why = "runtime"
        elif code != 0:
            msg = f"exited with {code}" + (f" (signal {code - 128})" if code > 128 else "")
        else:
            if os.path.exists(collected):
                shutil.rmtree(collected)
            missing = collect(out, stage.outputs, collected)
            if missing:
                code, msg = 1, f"declared output {missing[0]!r} was not left in /out"
        return code, log, why, msg, elapsed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
