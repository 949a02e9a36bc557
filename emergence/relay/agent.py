"""The overlay agent: one per node and cluster network.  It leases the node
subnet (leases.py), makes the local Relay network and the VXLAN device
(overlay.py), then follows its peers from an etcd watch -- a change under
`netlease/` or `netclaim/NET/` wakes it; it reads the peers once and edits
only the differences into Relay's graph as `peer:NET/NODE` nodes
(peers.py), which Relay's engine applies: three kernel operations a peer.
Inside `emergence node` (`[relay] cluster_networks`, ClusterNetworks) the
node's reconciler puts back what someone deletes; alone (`net agent`) the
agent listens for those deletions itself and asks the same engine.
Between events it renews its alive key, refreshes `seen` and reclaims the
claims of nodes gone longer than the grace.

`net agent`'s SIGTERM is a clean leave: the subnet is released (peers drop
their entries at once) and the device removed.  A node's stop, and any
SIGKILL, keep everything: the next start takes the same subnet back and
the peers change nothing.
"""

import json
import os
import signal
import threading
import time

from ..errors import EmergenceError
from . import leases
from .overlay import VXLAN_OVERHEAD, Dataplane, derive_mtu, device_mac


def status_path(state_dir, net):
    return os.path.join(state_dir, f"overlay-{net}.json")


def read_status(state_dir, net):
    try:
        with open(status_path(state_dir, net)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Agent:
    def __init__(self, cluster, net, node, vtep, state_dir, instance=None, ttl=10.0,
                 mtu=None, log=None):
        self.cluster, self.net, self.node, self.vtep = cluster, net, node, vtep
        self.log = log or (lambda line: print(line, flush=True))
        self.state_dir, self.instance, self.ttl, self.mtu = state_dir, instance, ttl, mtu
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.watch = None
        self.relay = None
        self.repair_needed = False
        # in the node, its reconciler repairs the peers' entries (service.py) and
        # is told when they change; alone (`net agent`), this agent listens itself
        self.reconciler = None

    def start(self):
        self.lease = leases.NodeLease(self.cluster, self.net, self.node, self.vtep,
                                      mac=device_mac(self.node, self.net), ttl=self.ttl)
        doc = self.lease.doc
        overhead = VXLAN_OVERHEAD
        wireguard = doc.get("encrypt") == "wireguard"
        if wireguard:
            from .wg import WIREGUARD_OVERHEAD, WireguardPlane, keypair, require_wireguard
            self.dp = WireguardPlane(self.net, doc["port"], self.vtep, None, None)
            require_wireguard(self.dp.ipr)      # before anything is made or leased
            overhead = WIREGUARD_OVERHEAD
        else:
            self.dp = Dataplane(self.net, doc["vni"], doc["port"], self.vtep, None,
                                self.lease.mac)
        under, _, under_mtu = self.dp.underlay()    # before leasing: a wrong --vtep holds nothing
        if wireguard:
            self.dp.private_key, self.lease.wg_public = keypair(self.state_dir, self.net)
        held = leases.held_by(self.cluster, self.net, self.node)
        self.subnet = self.dp.subnet = self.lease.acquire()
        leased_at = time.time()
        try:
            return self._make(doc, under, under_mtu, overhead, leased_at)
        except BaseException:
            if held is None:    # a fresh lease: give it back (a restart keeps its own)
                try:
                    self.lease.release()
                except Exception:  # noqa: BLE001 - the first error is the one to show
                    pass
            raise

    def _make(self, doc, under, under_mtu, overhead, leased_at):
        self.mtu_value, how = derive_mtu(under, under_mtu, self.mtu or doc.get("mtu"), overhead)
        device_mtu = self.device_mtu = under_mtu - overhead
        if not 576 <= self.mtu_value <= device_mtu:
            raise EmergenceError(f"MTU {self.mtu_value} does not fit: the overlay carries at "
                                 f"most {device_mtu} ({under} MTU {under_mtu} - "
                                 f"{overhead}) and IPv4 needs 576; drop --mtu")
        self._relay_network()
        try:
            self.dp.ensure(device_mtu)
        except Exception as e:
            if type(e).__name__ != "NetlinkError":
                raise
            raise EmergenceError(f"cannot make the overlay device {self.dp.ifname} on {under}: "
                                 f"{e}; is VXLAN port {doc['port']} free on this host?")
        self.status = {"network": self.net, "node": self.node, "subnet": str(self.subnet),
                       "vtep": self.vtep, "device": self.dp.ifname,
                       "encrypt": doc.get("encrypt"),
                       "mac": self.lease.mac, "mtu": self.mtu_value, "mtu_derived": how,
                       "underlay": under, "underlay_mtu": under_mtu, "vni": doc["vni"],
                       "port": doc["port"], "pid": os.getpid(), "leased_at": leased_at}
        if not self._wireguard():       # after a reboot: the peers' entries again
            self.relay.apply(check=self._peer_keys())
        self._write_status()
        return self.subnet

    def _wireguard(self):
        return self.lease.doc.get("encrypt") == "wireguard"

    def _peer_keys(self):
        prefix = f"peer:{self.net}/"
        return {k for k in self.relay.desired().peers if k.startswith(prefix)}

    def peers(self):
        """{node: (subnet, vtep, mac)} of the peers as the graph (VXLAN) or
        the WireGuard device holds them."""
        if self._wireguard():
            return dict(self.dp.peers)
        return {p.node: (str(p.subnet), p.vtep, p.mac)
                for p in self.relay.desired().peers.values() if p.network == self.net}

    def kernel_ops(self):
        return len(self.dp.ops) + (len(self.relay.kernel.ops) if self.relay else 0)

    def _write_status(self):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        path = status_path(self.state_dir, self.net)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(dict(self.status, peers=sorted(self.peers()),
                           kernel_ops=self.kernel_ops(), updated=time.time()), f, indent=1)
        os.replace(tmp, path)

    def _relay_network(self):
        """The local Relay network: the node subnet on a bridge, the derived MTU."""
        from .engine import Relay
        from .graph import network_from_dict
        if self.relay is None:
            self.relay = Relay(self.state_dir, instance=self.instance)
        relay = self.relay
        have = relay.desired().networks.get(self.net)
        want = {"subnets": [str(self.subnet)], "mtu": self.mtu_value,
                "owner": f"cluster:{self.net}", "allow_overlap": True,
                "cluster_subnet": self.lease.doc["subnet"]}
        if have is not None:
            if have.to_dict().items() >= {k: v for k, v in want.items()
                                          if k != "allow_overlap"}.items():
                return
            relay.remove_network(self.net, force=True)
        relay.create_network(network_from_dict(self.net, want, f"network {self.net}",
                                                relay.instance))

    def wanted(self):
        third = "wg_public" if self.lease.doc.get("encrypt") == "wireguard" else "mac"
        return {n: (r["subnet"], r["vtep"], r.get(third))
                for n, r in leases.peers(self.cluster, self.net).items()
                if n != self.node and r.get("vtep") and r.get(third)}

    def sync(self):
        """Make the peers what etcd says: WireGuard's in its device; VXLAN's
        as nodes of Relay's graph, one edit of the peers that differ (Relay
        applies it: three kernel operations a peer).  Returns the number of
        kernel operations."""
        before = self.peers()
        ops = self.kernel_ops()
        if self._wireguard():
            self.dp.sync(self.wanted())
        else:
            self._edit_peers(self.wanted())
        after = self.peers()
        n = self.kernel_ops() - ops
        if before != after:
            for node in sorted(set(before) | set(after)):
                if before.get(node) != after.get(node):
                    now = after.get(node)
                    self.log(f"{self.net}: peer {node} " + (f"at {now[1]} holds {now[0]}"
                                                            if now else "gone"))
            if self.reconciler is not None:
                self.reconciler()       # the node's reconciler learns the new keys
        if n or before != after:
            self._write_status()
        return n

    def _edit_peers(self, wanted):
        from .peers import Peer
        prefix = f"peer:{self.net}/"
        touched = set()

        def change(g):
            for key in [k for k in g.peers if k.startswith(prefix)]:
                p = g.peers[key]
                if wanted.get(p.node) != (str(p.subnet), p.vtep, p.mac):
                    del g.peers[key]
                    touched.add(key)
            for node, (subnet, vtep, mac) in wanted.items():
                p = Peer(self.net, node, subnet, vtep, mac, self.dp.ifname)
                if g.peers.get(p.key) != p:
                    g.peers[p.key] = p
                    touched.add(p.key)
        self.relay.edit(change, touched=touched)

    def repair(self):
        """Read the peers' entries back from the kernel and put back what is
        missing (Relay's check of those keys); the node's reconciler does this
        on its own events."""
        if self.relay.kernel.index(self.dp.ifname) is None:     # the device itself went
            self.log(f"{self.net}: overlay device {self.dp.ifname} was removed; remaking it")
            self.dp.ensure(self.device_mtu)
            if self._wireguard():
                self.dp.peers.clear()
                self.sync()
        if self._wireguard():
            return self.dp.repair()
        return len(self.relay.apply(check=self._peer_keys()))

    def _kernel_events(self):
        """Wake the loop when a route, neighbour or FDB entry of our device, or
        the device itself, is deleted by someone (the loop repairs); events the
        kernel dropped (ENOBUFS) count as such a deletion.  Without it the
        quarter-grace check still does."""
        import errno

        from .kernel import Events
        events = None
        try:
            events = Events(neighbours=True)
            events.sock.settimeout(0.5)     # to see stopping
            while not self.stopping.is_set():
                try:
                    batch = events.get()
                except TimeoutError:
                    continue
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    batch = None
                if batch is None or any(
                        not new and what in ("link", "route", "neigh")
                        and d["oif" if what == "route" else "index"] == self.dp.index
                        for what, new, d in batch):
                    self.repair_needed = True
                    self.wake.set()
        except Exception as e:
            self.log(f"{self.net}: kernel events off ({e}); repairs every quarter grace")
        finally:
            if events is not None:
                events.close()

    def run(self):
        """Follow the peers until stop(): a kernel change only when the watch
        says something changed; between events, renew the alive key, and
        every quarter grace refresh `seen`, reclaim, drop peers gone longer
        than the grace and repair entries someone removed from the kernel."""
        from ..place.watch import PrefixWatch
        self.watch = PrefixWatch(self.cluster, self.cluster.prefix, self.wake,
                                 sections=("netlease/", f"netclaim/{self.net}/"))
        grace = float(self.lease.doc.get("grace", leases.DEFAULT_GRACE))
        tick = max(0.2, min(self.ttl / 3.0, grace / 4.0))
        touched = time.monotonic()
        self.repair_needed = False
        if self.reconciler is None or self._wireguard():
            threading.Thread(target=self._kernel_events, name="kernel events",
                             daemon=True).start()
        deadline = time.monotonic() + 3.0
        while self.watch.watches == 0 and time.monotonic() < deadline:
            time.sleep(0.02)           # watching before the first read: nothing missed
        self.sync()
        while not self.stopping.is_set():
            woken = self.wake.wait(tick)
            if self.stopping.is_set():
                break
            self.wake.clear()
            try:
                now = time.monotonic()
                touch = now - touched >= min(grace / 4.0, 300.0)
                self.lease.renew(touch=touch)
                if touch:
                    touched = now
                    leases.reclaim(self.cluster, self.net)
                # (in the node its reconciler checks the peers' entries itself)
                if self.repair_needed or (touch and self.reconciler is None):
                    self.repair_needed = False
                    self.repair()
                if woken or touch:
                    self.sync()
            except Exception as e:      # etcd away for a moment: keep the kernel as is
                self.log(f"{self.net}: {e}")
        self.watch.stop()

    def stop(self, release=True):
        self.stopping.set()
        self.wake.set()
        if release:
            self.lease.release()
            if self.relay is not None and not self._wireguard():
                try:
                    self._edit_peers({})     # out of the graph (their entries go with it)
                except Exception as e:  # noqa: BLE001 - the device goes all the same
                    self.log(f"{self.net}: {e}")
            self.dp.remove()
            if self.reconciler is not None:
                self.reconciler()
            try:
                os.unlink(status_path(self.state_dir, self.net))
            except OSError:
                pass
        if self.relay is not None:
            self.relay.close()


def run_agent(cluster, net, node, vtep, state_dir, instance=None, ttl=10.0, mtu=None):
    agent = Agent(cluster, net, node, vtep, state_dir, instance, ttl, mtu)
    subnet = agent.start()
    print(f"{net}: node {node} holds {subnet} (VTEP {vtep}, MTU {agent.mtu_value})",
          flush=True)
    done = threading.Event()

    def on_term(signum, frame):
        done.set()
        agent.stopping.set()
        agent.wake.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    while not done.is_set() and t.is_alive():
        done.wait(0.5)
    agent.stopping.set()
    agent.wake.set()
    t.join(timeout=10)
    agent.stop(release=True)
    return 0


def held_here(state_dir):
    """The cluster networks this node's state says it holds (their status files)."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return []
    return sorted(n[len("overlay-"):-len(".json")] for n in names
                  if n.startswith("overlay-") and n.endswith(".json"))


def leave(cluster, net, node, state_dir, instance=None, log=print):
    """This node leaves cluster network NET, which its state says it held:
    the subnet released (peers drop it at once), its peers out of the graph,
    its device removed, and its local network too unless containers are
    still attached (then `net rm --force` is theirs to decide)."""
    import ipaddress

    from .engine import Relay
    from .overlay import device_name
    st = read_status(state_dir, net) or {}
    try:
        lease = leases.NodeLease(cluster, net, node, None)
        if st.get("subnet"):
            lease.subnet = ipaddress.ip_network(st["subnet"])
        lease.release()
    except EmergenceError as e:     # e.g. the network is gone from the cluster
        log(f"{net}: {e}")
    relay = Relay(state_dir, instance=instance)
    try:
        prefix, touched = f"peer:{net}/", set()

        def drop(g):
            for key in [k for k in g.peers if k.startswith(prefix)]:
                del g.peers[key]
                touched.add(key)
        relay.edit(drop, touched=touched)
        have = relay.network(net)
        if have is not None and have.owner == f"cluster:{net}":
            try:
                relay.remove_network(net)
            except EmergenceError as e:
                log(f"{net}: the local network stays: {e}")
        for ifname in {st.get("device") or device_name(net), device_name(net)}:
            relay.kernel.link_del(ifname)
    finally:
        relay.close()
    try:
        os.unlink(status_path(state_dir, net))
    except OSError:
        pass
    log(f"{net}: left (subnet {st.get('subnet')} released)")


class ClusterNetworks:
    """The agents a node runs for `[relay] cluster_networks = ["NAME", ...]`:
    the node's relay service calls start in a worker thread (it talks to
    etcd) and again, with backoff, while some failed (etcd away, no
    WireGuard: `errors` says why).  The node's stop keeps the subnets, the
    devices and the peers' entries (a restart changes nothing for the peers,
    and containers keep talking meanwhile); a network dropped from the
    configuration is left at the next start (`leave`).
    OPTS are the cluster connection's (`etcd`, `prefix`, `cluster-dir`,
    `insecure`, as on the command line); the VTEP defaults as `net agent`'s.
    RECONCILER() is called when an agent changed its peers in the graph, so
    the node's reconciler watches their kernel entries."""

    def __init__(self, names, state_dir, instance=None, opts=None, vtep=None, ttl=10.0,
                 log=None, reconciler=None):
        self.names, self.state_dir, self.instance = list(names), state_dir, instance
        self.log = log
        self.opts, self.vtep, self.ttl = dict(opts or {}), vtep, ttl
        self.reconciler = reconciler
        self.agents, self.threads = {}, []
        self.errors = {}
        self.lock = threading.Lock()

    def start(self):
        """Start the agents not running yet; returns the statuses of those running."""
        from .clusternet import _cluster, _node, _vtep
        with self.lock:
            try:
                cluster = _cluster(self.opts)
                node = _node(self.opts)
                vtep = self.vtep or _vtep({"vtep": None}, cluster)
            except Exception as e:  # noqa: BLE001 - every network waits for the cluster
                self._failed(self.names, e)
                return [a.status for a in self.agents.values()]
            for name in held_here(self.state_dir):
                if name not in self.names:      # dropped from the configuration: leave
                    try:
                        leave(cluster, name, node, self.state_dir, self.instance,
                              self.log or print)
                    except Exception as e:  # noqa: BLE001 - tried again at the next start
                        self._failed([name], e)
            for name in self.names:
                if name in self.agents:
                    continue
                agent = Agent(cluster, name, node, vtep, self.state_dir, self.instance,
                              self.ttl, log=self.log)
                agent.reconciler = self.reconciler
                try:
                    agent.start()
                except Exception as e:  # noqa: BLE001 - this network's own failure
                    self._failed([name], e)
                    continue
                self.errors.pop(name, None)
                t = threading.Thread(target=agent.run, name=f"overlay {name}", daemon=True)
                t.start()
                self.agents[name] = agent
                self.threads.append(t)
                if self.log:
                    self.log(f"{name}: node {node} holds {agent.subnet} (VTEP {vtep}, "
                             f"MTU {agent.mtu_value})")
            return [a.status for a in self.agents.values()]

    def device_gone(self, ifname):
        """The node's reconciler saw IFNAME deleted: if it is an agent's
        overlay device, that agent remakes it and its peers' entries now."""
        for agent in list(self.agents.values()):
            if agent.dp.ifname == ifname:
                agent.repair_needed = True
                agent.wake.set()

    def _failed(self, names, err):
        line = str(err) if isinstance(err, EmergenceError) else f"{type(err).__name__}: {err}"
        for name in names:
            if self.errors.get(name) != line and self.log:
                self.log(f"{name}: cannot join the cluster network: {line}")
            self.errors[name] = line

    def status(self):
        """{name: what the agent's status file says, or the error}."""
        out = {name: {"error": why} for name, why in self.errors.items()}
        for name, agent in list(self.agents.items()):
            out[name] = {k: agent.status.get(k) for k in ("subnet", "vtep", "device", "mtu",
                                                          "mtu_derived", "encrypt")}
            out[name]["peers"] = sorted(agent.peers())
        return out

    def stop(self, release=True):
        with self.lock:
            agents = list(self.agents.values())
            for agent in agents:
                agent.stopping.set()
                agent.wake.set()
            for t in self.threads:
                t.join(timeout=10)
            for agent in agents:
                try:
                    agent.stop(release=release)
                except Exception as e:  # noqa: BLE001 - stop the others all the same
                    self._failed([agent.net], e)
            self.agents, self.threads = {}, []
