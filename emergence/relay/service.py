"""Relay's long-running work inside `emergence node`: keep the kernel equal to
the graph, in the shape of a reconciler (as Cilium builds them).

- Desired state: the graph, as Relay's journals say (any process may edit
  it: `net apply`, a CNI call, a hook); observed state: what was applied,
  plus the kernel's events and, on a full pass, the kernel read back.
- One view: every use of the Relay object -- a pass, the refresh of the
  kernel names it watches, the HTTP graph route -- holds one lock, and
  Relay's own flock inside it; the event thread never touches Relay, it
  reads a name map that a pass replaces whole.  (The earlier service
  reloaded the state from the event thread while an apply ran, which
  cleared the applied journal's dirty sets under it and lost records.)
- Per-object status: a key whose operation failed is kept with its error,
  its attempts and when it is tried again (exponential backoff, 0.5 s up to
  30 s); a failed batch is retried key by key, so one bad object never
  holds up the others.  Operations are idempotent (Relay's apply), so a
  retry, a duplicate event or a full pass over a converged graph change
  nothing.
- Triggers: an rtnetlink event about one of Relay's objects (a host veth,
  a bridge, a bridge address, a static route) marks its key; a name not
  known yet (made since by a CLI or a CNI call) makes the next pass
  refresh the names; lost events (ENOBUFS) and a periodic timer
  (`resync_interval`) run a full pass, which also catches what no event
  shows (an address removed inside a container's netns).
"""

import asyncio
import errno
import threading
import time

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


class Service:
    """Long-running work of relay inside `emergence node`."""

    name = "relay"
    DEFAULTS = {"state_dir": "", "host_netns": "", "resync_interval": 30.0,
                "rcvbuf": 1048576, "instance": "",
                # cluster networks this node joins (agent.py), as `net agent` would
                "cluster_networks": [],
                "cluster_vtep": "",       # default: the address etcd is reached from
                "cluster_etcd": "",       # default: the endpoints of the node's cluster.json
                "cluster_dir": "",        # default: <[node] state_dir>/cluster
                "cluster_lease_ttl": 10.0}

    def __init__(self, config, state_dir, log):
        self.config = dict(self.DEFAULTS, **(config or {}))
        self.state_dir = self.config["state_dir"] or state_dir
        self.host_netns = self.config["host_netns"] or None
        self.log = log
        self.relay = None
        self.lock = threading.Lock()   # the one view: every use of self.relay holds it
        self._dirty = set()            # keys an event named, for the next pass
        self._unknown = set()          # names of deleted links not in the name map
        self._full = False
        self._wake = None
        self._tasks = []
        self._thread = None
        self._stopping = threading.Event()
        self._events = None
        self._busy = None              # the pass running on the executor, if any
        self.objects = {}              # key -> {"status", "attempts", "error", "next"}
        self.stats = {"events": 0, "ignored": 0, "reconciles": 0, "resyncs": 0,
                      "enobufs": 0, "changes": 0, "errors": 0, "retries": 0,
                      "last_error": ""}
        self._names = {}               # kernel name -> key (replaced whole, never edited)
        self._routes = {}              # destination -> key
        self._neighs = {}              # a peer's neighbour address or FDB MAC -> its key
        self.clusternets = None        # agent.ClusterNetworks, with cluster_networks
        self._cn_busy = None

    # ---- the node's contract ------------------------------------------------------

    def routes(self):
        from aiohttp import web

        async def status(request):
            return web.json_response(self.status())

        async def graph(request):
            loop = asyncio.get_running_loop()
            doc = await loop.run_in_executor(None, self._locked, self.relay.show)
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
        await self._loop.run_in_executor(None, self._locked, self._refresh_names)
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="relay-netlink", daemon=True)
        self._thread.start()
        # converge only once subscribed: a change between the first compare and the
        # subscription would otherwise go unseen until the periodic one
        await self._loop.run_in_executor(None, self._subscribed.wait, 10)
        self._full = True       # converge once at start
        self._wake.set()
        self._tasks = [asyncio.create_task(self._reconciler()),
                       asyncio.create_task(self._periodic())]
        from .agent import held_here
        if self.config["cluster_networks"] or held_here(self.state_dir):
            # (held but no longer configured: joined only to leave them)
            self._tasks.append(asyncio.create_task(self._cluster_networks()))

    async def _cluster_networks(self):
        """Join the cluster networks (agent.ClusterNetworks: lease, device,
        peers); those that fail (etcd away, no WireGuard) are tried again
        with backoff, and status says why."""
        import os

        from .agent import ClusterNetworks
        c = self.config
        opts = {"etcd": c["cluster_etcd"] or None, "cluster-dir": c["cluster_dir"] or
                os.path.join(os.path.dirname(self.state_dir.rstrip("/")), "cluster")}
        self.clusternets = ClusterNetworks(
            c["cluster_networks"], self.state_dir, c["instance"] or None, opts,
            c["cluster_vtep"] or None, float(c["cluster_lease_ttl"]), log=self.log,
            reconciler=lambda: self._loop.call_soon_threadsafe(self._mark_refresh))
        delay = BACKOFF_FIRST * 2
        while True:
            self._cn_busy = self._loop.run_in_executor(None, self.clusternets.start)
            try:
                await asyncio.shield(self._cn_busy)
            finally:
                self._cn_busy = None
            self._mark_refresh()
            if not self.clusternets.errors:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

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
            # a pass cannot be cancelled midway: let it finish before its sockets close
            try:
                await self._busy
            except Exception:  # noqa: BLE001 - logged by the reconciler already
                pass
        if self.clusternets is not None:
            if self._cn_busy is not None:
                try:
                    await self._cn_busy
                except Exception:  # noqa: BLE001 - recorded in its errors
                    pass
            # a stop keeps the subnets, devices and peers' entries: a restart changes
            # nothing for the peers (after the grace they drop a node that stays away)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.clusternets.stop(release=False))
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.relay is not None:
            with self.lock:
                self.relay.close()

    def status(self):
        failing = {k: {"error": o["error"], "attempts": o["attempts"]}
                   for k, o in list(self.objects.items()) if o["status"] == "error"}
        out = dict(self.stats, watching=len(self._names), dirty=len(self._dirty),
                   failing=failing)
        if self.clusternets is not None:
            out["cluster_networks"] = self.clusternets.status()
        return out

    def _locked(self, fn, *args):
        with self.lock:
            return fn(*args)

    # ---- events (the listener thread: reads the name map, never Relay) ----------------

    def _refresh_names(self):
        """Kernel names of Relay's objects -> their keys, from what was applied
        (under the lock; the maps are replaced whole, so the listener reads
        either the old or the new one)."""
        a = self.relay.applied()
        names = {rec["host"]: key for key, rec in a["attachments"].items()}
        names.update({rec["bridge"]: f"net:{n}" for n, rec in a["networks"].items()})
        self._names = names
        routes = {r["destination"]: key for key, r in a["routes"].items()}
        neighs = {}
        for key, p in a["peers"].items():   # a cluster network's: FDB, neighbour, route
            routes[p["subnet"]] = key
            neighs[p["subnet"].split("/")[0]] = neighs[p["mac"]] = key
        self._routes, self._neighs = routes, neighs

    def _listen(self):
        from .kernel import Events, netns_path
        while not self._stopping.is_set():
            events = None
            try:
                events = Events(netns_path(self.host_netns), int(self.config["rcvbuf"]),
                                neighbours=bool(self.config["cluster_networks"]))
                events.sock.settimeout(0.5)    # to see _stopping
                self._events = events
                self._subscribed.set()
                while not self._stopping.is_set():
                    try:
                        batch = events.get()
                    except TimeoutError:
                        continue
                    for ev in batch:
                        self._on_event(*ev)
            except OSError as e:
                if self._stopping.is_set():
                    return
                if e.errno == errno.ENOBUFS:
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
                if events is not None:
                    events.close()

    def _on_event(self, what, new, d):
        self.stats["events"] += 1
        key = unknown = None
        if what == "link":
            name = d["ifname"]
            key = self._names.get(name)
            if not new and self.clusternets is not None and name:
                self.clusternets.device_gone(name)   # an overlay device: its agent remakes it
            if key is None and not new and name:
                unknown = name      # made since by a CLI or a CNI call?
            if key and new and d["flags"] & 1 and (
                    key.startswith("net:") or d["master"] is not None):
                key = None   # up, and a veth still on its bridge: nothing to repair
        elif what == "addr" and not new:
            k = self._names.get(d["label"])
            key = k if k and k.startswith("net:") else None
        elif what == "route" and not new and d["dst"] is not None:
            key = self._routes.get(f"{d['dst']}/{d['dst_len']}")
        elif what == "neigh":
            key = self._neighs.get(d["mac"] if d["family"] == 7 else d["dst"])
        if key is None and unknown is None:
            self.stats["ignored"] += 1
            return
        self._loop.call_soon_threadsafe(self._mark, key, unknown)

    def _mark(self, key, unknown=None):
        if key is not None:
            self._dirty.add(key)
        if unknown is not None:
            self._unknown.add(unknown)
        self._wake.set()

    def _mark_refresh(self):
        """The peers changed (an agent's edit): the next pass reads the names again."""
        self._unknown.add("")
        self._wake.set()

    def _mark_full(self):
        self._full = True
        self._wake.set()

    # ---- reconciling (the loop decides, a pass on the executor does) -------------------

    def _due(self, now):
        """Keys whose retry time has come ("*": the full pass), and the time of
        the next retry."""
        due, nxt = set(), None
        for key, o in list(self.objects.items()):
            if o["status"] != "error":
                continue
            if o["next"] <= now:
                due.add(key)
            else:
                nxt = o["next"] if nxt is None else min(nxt, o["next"])
        return due, nxt

    async def _reconciler(self):
        loop = asyncio.get_running_loop()
        while True:
            _, nxt = self._due(time.monotonic())
            timeout = None if nxt is None else max(0.0, nxt - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0.02)   # let a burst of events gather
            self._wake.clear()
            due, _ = self._due(time.monotonic())
            full, keys, unknown = self._full or "*" in due, self._dirty | due, self._unknown
            keys.discard("*")
            self._full, self._dirty, self._unknown = False, set(), set()
            if not (full or keys or unknown):
                continue
            self.stats["retries"] += len(due)
            self._busy = loop.run_in_executor(None, self._pass, full, keys, unknown)
            try:
                await asyncio.shield(self._busy)
            except Exception as e:  # noqa: BLE001 - a pass records its own errors
                self.stats["errors"] += 1
                self.stats["last_error"] = str(e)
            finally:
                self._busy = None

    def _pass(self, full, keys, unknown):
        """One pass, under the lock: the names of links deleted since the
        last refresh, then apply (full, or checking KEYS); a failure is
        retried key by key and recorded per key."""
        with self.lock:
            if unknown:
                self._refresh_names()
                keys = keys | {self._names[n] for n in unknown if n in self._names}
            if not (full or keys):
                return
            try:
                self._apply(full, keys)
                for key in keys:
                    self.objects.pop(key, None)
                self.objects.pop("*", None)
            except Exception as e:  # noqa: BLE001 - recorded, retried
                self._failed("*" if full else None, keys, e)
            finally:
                self._refresh_names()

    def _apply(self, full, keys):
        changes = self.relay.apply(full=full, check=keys)
        self.stats["resyncs" if full else "reconciles"] += 1
        self.stats["changes"] += len(changes)
        if changes:
            self.log("relay: " + ", ".join(str(c) for c in changes))

    def _failed(self, whole, keys, err):
        """A pass failed with ERR: the keys that fail alone get their own
        status and backoff; a full pass that fails is retried whole."""
        self.stats["errors"] += 1
        self.stats["last_error"] = str(err)
        self.log(f"relay: reconcile failed: {err}")
        failing = {}
        for key in sorted(keys):
            try:
                self._apply(False, {key})
                self.objects.pop(key, None)
            except Exception as e:  # noqa: BLE001 - this key's own failure
                failing[key] = e
        if whole is not None:     # "*": the full pass, due again at its backoff
            failing.setdefault(whole, err)
        now = time.monotonic()
        for key, e in failing.items():
            o = self.objects.get(key) or {"status": "error", "attempts": 0}
            o["attempts"] += 1
            o.update(status="error", error=str(e),
                     next=now + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (o["attempts"] - 1)))
            self.objects[key] = o

    async def _periodic(self):
        while True:
            await asyncio.sleep(float(self.config["resync_interval"]))
            self._mark_full()
