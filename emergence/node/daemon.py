"""The node process: one asyncio loop hosting the parts' long-running work.

It supervises the warm planner (a separate, single-threaded process, since a
process with threads must not fork workers), serves the parts' HTTP routes
on one listener (loopback unless told otherwise), and answers `status` and
`stop` on a root-only control socket (0600 in its 0700 run dir, and each
caller checked by SO_PEERCRED: root or the node's own uid).  The run dir must
be the node's own (`rundir.py`).  A service that fails to start is reported
in status and the others run on; nothing here is needed by a verb.
"""

import asyncio
import json
import os
import signal
import sys
import time

from .. import __version__
from . import BUILD_ID


class Node:
    def __init__(self, cfg):
        self.cfg = cfg
        node = cfg["node"]
        self.run_dir = node["run_dir"]
        self.state_dir = node["state_dir"]
        self.services = {}
        self.failed = {}
        self.planner = None
        self.planner_starts = 0
        self.started = time.time()
        self.stopping = asyncio.Event()
        self.http = None
        self.ready = False  # planner, services and listener up: what `node start` waits for

    def log(self, msg):
        sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
        sys.stderr.flush()

    @property
    def planner_socket(self):
        return os.path.join(self.run_dir, "planner.sock")

    @property
    def control_socket(self):
        return os.path.join(self.run_dir, "control.sock")

    async def run(self):
        from .rundir import check
        check(self.run_dir, create=True)  # main() did; cheap, and it must hold here
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        control = await asyncio.start_unix_server(self._control, self.control_socket)
        os.chmod(self.control_socket, 0o600)
        tasks = []
        try:
            if self.cfg["node"]["planner"]:
                try:  # a socket left by a killed node: ours exists only once bound
                    os.unlink(self.planner_socket)
                except FileNotFoundError:
                    pass
                tasks.append(asyncio.create_task(self._supervise_planner()))
            await self._start_services()
            await self._start_http()
            while self.cfg["node"]["planner"] and not os.path.exists(self.planner_socket):
                await asyncio.sleep(0.02)
            self.ready = True
            self.log(f"node {__version__} (build {BUILD_ID}) running, pid {os.getpid()}")
            await self.stopping.wait()
        finally:
            self.log("stopping")
            control.close()
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except asyncio.CancelledError:
                    pass
            await self._stop_planner()
            for name, svc in reversed(list(self.services.items())):
                try:
                    await asyncio.wait_for(svc.stop(), 10)
                except Exception as e:  # stop the others all the same
                    self.log(f"{name}: stop failed: {type(e).__name__}: {e}")
            if self.http is not None:
                await self.http.cleanup()
            for path in (self.control_socket, self.planner_socket):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            import shutil

            from .planner import scratch_dir
            shutil.rmtree(scratch_dir(self.planner_socket), ignore_errors=True)

    # -- the parts' services -------------------------------------------------
    async def _start_services(self):
        from .config import service_classes
        for part, cls in service_classes(self.cfg["node"]["services"]).items():
            state = os.path.join(self.state_dir, part)
            try:
                os.makedirs(state, mode=0o700, exist_ok=True)
                svc = cls(self.cfg.get(cls.name, {}), state,
                          lambda msg, p=part: self.log(
                              msg if msg.startswith(f"{p}: ") else f"{p}: {msg}"))
                await svc.start()
            except Exception as e:
                self.failed[part] = f"{type(e).__name__}: {e}"
                self.log(f"{part}: failed to start: {self.failed[part]}")
                continue
            self.services[part] = svc

    async def _start_http(self):
        """The parts' routes on one listener, each checked by its access class
        (access.py); HTTPS with client certificates when [node] tls_* is set."""
        from .. import access, listener
        # made on the first start whether or not anything is served: clients and
        # tools find it in one place
        token = access.load_or_make_token(
            self.state_dir, os.path.join(self.state_dir, access.LEGACY_TOKEN))
        routes = []
        for svc in self.services.values():
            routes.extend(svc.routes())
        if not routes:
            return
        node = self.cfg["node"]
        limits = listener.limits_of(node)
        ctx = None
        if node["tls_cert"] or node["tls_key"] or node["client_ca"]:
            ctx = access.ssl_context(node["tls_cert"], node["tls_key"], node["client_ca"])
        policy = access.Policy(token, node["readers"], client_certs=bool(node["client_ca"]),
                               uploads_per_client=limits["uploads_per_client"])
        app = access.application(routes, policy, client_max_size=1 << 30)
        host, _, port = node["listen"].rpartition(":")
        self.http = await listener.serve(app, host.strip("[]") or "127.0.0.1", int(port),
                                         ctx, limits)
        self.log(f"serving HTTP{'S' if ctx else ''} on {node['listen']}")

    # -- the warm planner ----------------------------------------------------
    async def _supervise_planner(self):
        delay = 0.2
        while True:
            started = time.monotonic()
            self.planner = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "emergence.node.planner", self.planner_socket,
                str(self.cfg["node"]["planner_spares"]),
                stdin=asyncio.subprocess.DEVNULL)
            self.planner_starts += 1
            code = await self.planner.wait()
            self.log(f"planner exited with {code}; restarting")
            delay = 0.2 if time.monotonic() - started > 10 else min(delay * 2, 5)
            await asyncio.sleep(delay)

    async def _stop_planner(self):
        p = self.planner
        if p is not None and p.returncode is None:
            p.terminate()
            try:
                await asyncio.wait_for(p.wait(), 5)
            except asyncio.TimeoutError:
                p.kill()
                await p.wait()

    # -- control -------------------------------------------------------------
    def status(self):
        out = {"pid": os.getpid(), "version": __version__, "build": BUILD_ID,
               "ready": self.ready,
               "uptime_seconds": round(time.time() - self.started, 1),
               "listen": self.cfg["node"]["listen"] if self.http else None,
               "planner": None, "services": {}}
        p = self.planner
        if p is not None:
            out["planner"] = {"socket": self.planner_socket, "pid": p.pid,
                              "running": p.returncode is None, "starts": self.planner_starts}
        for name, svc in self.services.items():
            try:
                out["services"][name] = {"state": "running", **(svc.status() or {})}
            except Exception as e:
                out["services"][name] = {"state": "running", "status_error": str(e)}
        for name, why in self.failed.items():
            out["services"][name] = {"state": "failed", "error": why}
        return out

    async def _control(self, reader, writer):
        import socket
        import struct
        try:
            pid, uid, _ = struct.unpack("3i", writer.get_extra_info("socket").getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if uid not in (0, os.geteuid()):  # before reading a byte of theirs
                self.log(f"control: refused uid {uid} (pid {pid})")
                writer.write(json.dumps({"error": f"the node answers root only, not uid {uid}"})
                             .encode() + b"\n")
                await writer.drain()
                return
            line = (await reader.readline()).decode(errors="replace").strip()
            if line == "status":
                writer.write(json.dumps(self.status()).encode() + b"\n")
            elif line == "stop":
                writer.write(b'{"stopping": true}\n')
                self.stopping.set()
            else:
                writer.write(json.dumps({"error": f"unknown request {line!r}"}).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()


def main(cfg=None):
    """`python -m emergence.node.daemon -`: what `node start` runs; the
    configuration comes as JSON on stdin (never in argv, which every user
    sees in ps), and stdin is /dev/null after it."""
    if cfg is None:
        if sys.argv[1:] != ["-"]:
            sys.exit("usage: python -m emergence.node.daemon - < CONFIG-JSON "
                     "(`emergence node start` runs this)")
        cfg = json.loads(sys.stdin.buffer.read())
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
    # Not the caller's directory: it holds nothing of ours, and `-m` would import
    # from it (a source tree there is another build than the one installed).
    os.chdir("/")
    pid_file = os.path.join(cfg["node"]["run_dir"], "node.pid")
    from ..errors import EmergenceError
    from .rundir import check
    try:  # before the pid file is written there
        check(cfg["node"]["run_dir"], create=True)
    except EmergenceError as e:
        sys.exit(f"emergence: {e}")
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(pid_file + ".tmp", pid_file)
    try:
        asyncio.run(Node(cfg).run())
    except EmergenceError as e:  # e.g. a TLS file missing: one line, the log's last
        sys.stderr.write(f"emergence node: {e}\n")
        sys.exit(1)
    finally:
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
