"""What outlives the runner: its stage containers and its run dir (which holds
the secrets files) are removed however `pipeline run` ends, kill -9 included.

Two parts, so that no single kill can leave anything behind:

  - each `emergence run` child gets PR_SET_PDEATHSIG(SIGKILL): it dies with
    the runner's thread that started it, so it makes no container afterwards;
  - a watcher process (started with the first container, in a session of its
    own so a terminal's ^C or hang-up does not reach it) reads the runner's
    pipe: the state root, the run dir, each container id and the pid of the
    `run` that makes it.  On EOF without "done" (the runner died) it waits for
    those pids to be gone, deletes each container (`delete --force`: its
    processes and its cgroup) and removes the run dir.

Should the watcher die too, the next run removes any run dir whose lock
(RUN.lock beside it) no process holds (`sweep`).  Stdlib only: the watcher starts with `python -S`.
"""

import os
import shutil
import subprocess
import sys
import threading

RUNS = os.path.join("pipeline", "runs")


def make_run_dir(store_root, run_id):
    """STORE/pipeline/runs/RUN_ID (0700), with RUN_ID.lock beside it, locked by
    us (before the dir exists) while the run lives."""
    import fcntl
    top = os.path.join(store_root, RUNS)
    os.makedirs(top, mode=0o700, exist_ok=True)
    os.chmod(top, 0o700)
    sweep(top)
    path = os.path.join(top, run_id)
    fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.mkdir(path, 0o700)
    return path, fd


def sweep(top):
    """Remove the run dirs of runs that died with their watcher: nobody holds
    their lock.  A lock is taken before its dir is made, so a run starting now
    is never swept."""
    import fcntl
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        if not name.endswith(".lock"):
            continue
        lock = os.path.join(top, name)
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live run
        shutil.rmtree(lock[:-5], ignore_errors=True)
        os.unlink(lock)  # while still holding it: a sweeper beside us finds it gone
        os.close(fd)


class Watcher:
    """The runner's side: started lazily, before the first container."""

    def __init__(self, argv, root, run_dir):
        self.argv, self.root, self.run_dir = argv, root, run_dir
        self.proc = None
        self.lock = threading.Lock()

    def _send(self, line):
        with self.lock:
            if self.proc is None:
                import emergence
                top = os.path.dirname(os.path.dirname(os.path.abspath(emergence.__file__)))
                code = (f"import sys; sys.path.insert(0, {top!r}); "
                        "from emergence.pipeline.watch import main; main()")
                self.proc = subprocess.Popen(
                    [sys.executable, "-S", "-c", code], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True, close_fds=True)
                import json
                self.proc.stdin.write(f"argv {json.dumps(self.argv)}\nroot {self.root}\n"
                                      f"dir {self.run_dir}\n".encode())
            try:
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()
            except OSError:
                pass  # the watcher is gone: the run goes on; the next run sweeps

    def container(self, cid):
        self._send(f"cid {cid}")

    def runner(self, pid):
        self._send(f"pid {pid}")

    def finished(self, cid):
        if self.proc is not None:
            self._send(f"end {cid}")

    def close(self):
        """A clean end: the runner removed everything itself."""
        with self.lock:
            if self.proc is not None:
                try:
                    self.proc.stdin.write(b"done\n")
                    self.proc.stdin.close()
                except OSError:
                    pass
                self.proc.returncode = 0  # not waited for: it exits on its own, reaped by init
                self.proc = None


def main():
    """The watcher process."""
    import json
    import select
    import signal
    import time
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    argv, root, run_dir = None, None, None
    cids, pidfds, done = [], [], False
    for raw in sys.stdin.buffer:
        kind, _, value = raw.decode().rstrip("\n").partition(" ")
        if kind == "argv":
            argv = json.loads(value)
        elif kind == "root":
            root = value
        elif kind == "dir":
            run_dir = value
        elif kind == "cid":
            cids.append(value)
        elif kind == "end" and value in cids:
            cids.remove(value)
        elif kind == "pid":
            try:
                pidfds.append(os.pidfd_open(int(value)))
            except OSError:
                pass  # already gone
        elif kind == "done":
            done = True
    if done:
        return
    # The runner is gone: its `run` children got SIGKILL; let them finish dying.
    deadline = time.monotonic() + 10
    for fd in pidfds:
        select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    for cid in cids:
        subprocess.run(argv + ["--root", root, "delete", "--force", cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
        try:
            os.unlink(run_dir + ".lock")  # the runner's lock died with it
        except OSError:
            pass
