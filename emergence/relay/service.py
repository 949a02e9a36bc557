"""Relay's long-running work inside `emergence node`: keep the kernel equal to
the graph.

A thread reads rtnetlink events from the host's netns (links, addresses,
routes).  An event about one of Relay's objects (a host veth, a bridge, a
static route) marks that node's key dirty; the reconcile task applies with
`check` = the dirty keys, so only those nodes are read back from the kernel
and only their operations are issued: a veth deleted by hand comes back, a
bridge address removed by hand returns, an attachment whose netns was
deleted (its veth dies with it) is released.  Events about anything else are
ignored.  Events can be lost: the kernel says so with ENOBUFS, and then the
whole graph is compared (a full resync); the same full compare also runs
every `resync_interval` seconds to catch drift no event shows (an address
removed inside a container's netns, which the host's socket cannot see).
"""

import asyncio
import errno
import functools
import threading
import time

RTM_NEWLINK, RTM_DELLINK = "RTM_NEWLINK", "RTM_DELLINK"
RTM_DELADDR, RTM_DELROUTE = "RTM_DELADDR", "RTM_DELROUTE"


class Service:
    """Long-running work of relay inside `emergence node`."""

    name = "relay"
    DEFAULTS = {"state_dir": "", "host_netns": "", "resync_interval": 30.0,
                "rcvbuf": 1048576, "instance": ""}

    def __init__(self, config, state_dir, log):
        self.config = dict(self.DEFAULTS, **(config or {}))
        self.state_dir = self.config["state_dir"] or state_dir
        self.host_netns = self.config["host_netns"] or None
        self.log = log
        self.relay = None
        self._dirty = set()
        self._full = False
        self._wake = None
        self._tasks = []
        self._thread = None
        self._stopping = threading.Event()
        self._events_sock = None
        self._busy = None        # the apply running on the executor, if any
        self.stats = {"events": 0, "ignored": 0, "reconciles": 0, "resyncs": 0,
                      "enobufs": 0, "changes": 0, "errors": 0, "last_error": ""}
        self._names = {}

    # ---- the node's contract ------------------------------------------------------

    def routes(self):
        from aiohttp import web

        async def status(request):
            return web.json_response(self.status())

        async def graph(request):
            loop = asyncio.get_running_loop()
            doc = await loop.run_in_executor(None, self.relay.show)
            return web.json_response(doc)
        from .. import access
        return [access.read(web.get("/relay/v1/status", status)),
                access.read(web.get("/relay/v1/graph", graph))]

    async def start(self):
        from .engine import Relay
        self.relay = Relay(self.state_dir, host_netns=self.host_netns,
                           instance=self.config["instance"] or None)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._refresh_names()
        self._thread = threading.Thread(target=self._listen, name="relay-netlink", daemon=True)
        self._thread.start()
        self._full = True       # converge once at start
        self._wake.set()
        self._tasks = [asyncio.create_task(self._reconciler()),
                       asyncio.create_task(self._periodic())]

    async def stop(self):
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        if self._busy is not None:
            # an apply cannot be cancelled midway: let it finish before its sockets close
            try:
                await self._busy
            except Exception:  # noqa: BLE001 - logged by the reconciler already
                pass
        if self._events_sock is not None:
            try:
                self._events_sock.close()
            except Exception:  # noqa: BLE001
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.relay is not None:
            self.relay.close()

    def status(self):
        return dict(self.stats, watching=len(self._names), dirty=len(self._dirty))

    # ---- events ---------------------------------------------------------------------

    def _refresh_names(self):
        """Kernel names of Relay's objects -> their keys (from what was applied)."""
        a = self.relay.applied()
        names = {rec["host"]: key for key, rec in a["attachments"].items()}
        names.update({rec["bridge"]: f"net:{n}" for n, rec in a["networks"].items()})
        self._names = names
        self._routes = {r["destination"]: key for key, r in a["routes"].items()}

    def _listen(self):
        from pyroute2 import IPRoute
        while not self._stopping.is_set():
            try:
                kw = {"rcvbuf": int(self.config["rcvbuf"])}
                sock = IPRoute(netns=self.host_netns, **kw) if self.host_netns else IPRoute(**kw)
                self._events_sock = sock
                sock.bind()
                while not self._stopping.is_set():
                    for msg in sock.get():
                        self._on_event(msg)
            except OSError as e:
                if self._stopping.is_set():
                    return
                if getattr(e, "errno", None) == errno.ENOBUFS or \
                        getattr(e, "code", None) == errno.ENOBUFS:
                    # events were lost: only a full compare knows what changed
                    self.stats["enobufs"] += 1
                    self._loop.call_soon_threadsafe(self._mark_full)
                else:
                    self.stats["errors"] += 1
                    self.stats["last_error"] = str(e)
                    time.sleep(0.5)
            except Exception as e:  # noqa: BLE001 - the listener must survive
                if self._stopping.is_set():
                    return
                self.stats["errors"] += 1
                self.stats["last_error"] = f"{type(e).__name__}: {e}"
                time.sleep(0.5)
            finally:
                try:
                    self._events_sock.close()
                except Exception:  # noqa: BLE001
                    pass

    def _on_event(self, msg):
        self.stats["events"] += 1
        ev = msg.get("event")
        key = None
        if ev in (RTM_NEWLINK, RTM_DELLINK):
            name = msg.get("IFLA_IFNAME")
            key = self._names.get(name)
            if key is None and ev == RTM_DELLINK:
                self._refresh_names()   # made since by a CLI or a CNI call?
                key = self._names.get(name)
            if key and ev == RTM_NEWLINK and msg["flags"] & 1 and (
                    key.startswith("net:") or msg.get("IFLA_MASTER") is not None):
                key = None   # up, and a veth still on its bridge: nothing to repair
        elif ev == RTM_DELADDR:
            name = msg.get("IFA_LABEL")
            k = self._names.get(name)
            key = k if k and k.startswith("net:") else None
        elif ev == RTM_DELROUTE:
            dst = msg.get("RTA_DST")
            if dst is not None:
                key = self._routes.get(f"{dst}/{msg['dst_len']}")
        if key is None:
            self.stats["ignored"] += 1
            return
        self._loop.call_soon_threadsafe(self._mark, key)

    def _mark(self, key):
        self._dirty.add(key)
        self._wake.set()

    def _mark_full(self):
        self._full = True
        self._wake.set()

    # ---- reconciling ----------------------------------------------------------------

    async def _reconciler(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(0.02)   # let a burst of events gather
            self._wake.clear()
            full, keys = self._full, self._dirty
            self._full, self._dirty = False, set()
            try:
                self._busy = loop.run_in_executor(
                    None, functools.partial(self.relay.apply, full=full, check=keys))
                changes = await asyncio.shield(self._busy)
                self.stats["resyncs" if full else "reconciles"] += 1
                self.stats["changes"] += len(changes)
                if changes:
                    self.log("relay: " + ", ".join(str(c) for c in changes))
                self._refresh_names()
            except Exception as e:  # noqa: BLE001 - log, retry on the next event/resync
                self.stats["errors"] += 1
                self.stats["last_error"] = str(e)
                self.log(f"relay: reconcile failed: {e}")

    async def _periodic(self):
        while True:
            await asyncio.sleep(float(self.config["resync_interval"]))
            self._mark_full()
