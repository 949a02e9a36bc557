"""The desired network as a graph of plain values: networks, attachments, port
forwards and routes, each with a stable key, loaded from TOML or JSON and
checked before anything touches the kernel.

Keys (stable across edits, used to diff and to name kernel objects):
  net:NAME                       a network (one bridge)
  att:NETWORK/CONTAINER/IFNAME   a container's interface on a network
  pf:PROTO/HOSTADDR/HOSTPORT     a port forward
  route:DESTINATION              a static route in the host's netns

Every node records its owner: the absolute path of the graph file that
declared it, `cli` (`net create`, `net attach`), `cni` (a network a CNI
configuration declared), `cni:ID` or `run:ID` (a container's attachment and
forwards).  `net apply FILE` changes only FILE's nodes (owners.py).  State
written before owners existed loads as `cli` (attachments by their origin).
"""

import ipaddress
import os

from ..errors import ConfigError
from . import fields
from .fields import MAX_IFNAME
from .fields import bad as _bad
from .sha import sha256

NET_FIELDS = {"bridge", "subnets", "gateway", "mtu", "nat", "isolated", "veth_prefix",
              "allow_overlap", "owner", "cluster_subnet"}
ATT_FIELDS = {"network", "container", "netns", "ifname", "address", "mac", "origin", "owner"}
PF_FIELDS = {"network", "container", "host_address", "host_port", "container_port", "proto",
             "owner"}
ROUTE_FIELDS = {"destination", "via", "network", "owner"}
CLI = "cli"


def default_bridge(name, instance=""):
    """rel-NAME for the default instance (as before instances existed); for
    another, r + 4 hex digits of its name, so two instances' bridges differ."""
    if not instance:
        return ("rel-" + name)[:MAX_IFNAME]
    tag = sha256(instance.encode()).hexdigest()[:4]
    return f"r{tag}-{name}"[:MAX_IFNAME]


def legacy_owner(origin, container):
    """The owner of an attachment recorded before owners existed."""
    return {"cni": f"cni:{container}", "hook": f"run:{container}"}.get(origin, CLI)


def _fields(where, d, allowed):
    if not isinstance(d, dict):
        _bad(where, "must be a table/object")
    extra = sorted(set(d) - allowed)
    if extra:
        _bad(f"{where}.{extra[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")


_ifname = fields.ifname
_int = fields.integer


class Network:
    __slots__ = ("name", "bridge", "subnets", "gateways", "mtu", "nat", "isolated",
                 "veth_prefix", "owner", "allow_overlap", "cluster_subnet")

    def __init__(self, name, bridge, subnets, gateways=None, mtu=1500, nat=True,
                 isolated=True, veth_prefix="ev", owner=CLI, allow_overlap=False,
                 cluster_subnet=None):
        self.name = name
        self.bridge = bridge
        self.subnets = [ipaddress.ip_network(s) for s in subnets]
        # gateway of each subnet: the given one, else the subnet's first host
        given = [ipaddress.ip_address(g) for g in (gateways or [])]
        self.gateways = []
        for s in self.subnets:
            mine = [g for g in given if g in s]
            self.gateways.append(mine[0] if mine else next(s.hosts()))
        self.mtu = mtu
        self.nat = nat
        self.isolated = isolated
        self.veth_prefix = veth_prefix
        self.owner = owner
        self.allow_overlap = allow_overlap
        # a node subnet of a cluster network (relay/agent.py): traffic to the
        # rest of the cluster network goes over the overlay, not masqueraded
        self.cluster_subnet = ipaddress.ip_network(cluster_subnet) if cluster_subnet else None

    @property
    def key(self):
        return f"net:{self.name}"

    def subnet_for(self, addr):
        for s, g in zip(self.subnets, self.gateways):
            if addr.version == s.version and addr in s:
                return s, g
        return None, None

    def to_dict(self):
        return {"bridge": self.bridge, "subnets": [str(s) for s in self.subnets],
                "gateway": [str(g) for g in self.gateways], "mtu": self.mtu, "nat": self.nat,
                "isolated": self.isolated, "veth_prefix": self.veth_prefix,
                "owner": self.owner, **({"allow_overlap": True} if self.allow_overlap else {}),
                **({"cluster_subnet": str(self.cluster_subnet)} if self.cluster_subnet else {})}

    def __eq__(self, other):
        return isinstance(other, Network) and self.to_dict() == other.to_dict() \
            and self.name == other.name


class Attachment:
    __slots__ = ("network", "container", "netns", "ifname", "addresses", "mac", "origin",
                 "owner")

    def __init__(self, network, container, netns, ifname="eth0", addresses=(), mac=None,
                 origin="file", owner=None):
        self.network = network
        self.container = container
        self.netns = netns
        self.ifname = ifname
        self.addresses = [ipaddress.ip_address(a) for a in addresses]
        self.mac = mac
        self.origin = origin
        self.owner = owner or legacy_owner(origin, container)

    @classmethod
    def from_state(cls, d):
        """From a dict Relay wrote itself (checked when it was written): no
        field checks, as loading thousands of them is on the CNI plugin's path."""
        a = cls.__new__(cls)
        a.network, a.container, a.netns = d["network"], d["container"], d["netns"]
        a.ifname, a.mac, a.origin = d.get("ifname", "eth0"), d.get("mac"), d.get("origin", "file")
        a.owner = d.get("owner") or legacy_owner(a.origin, a.container)
        a.addresses = [(ipaddress.IPv6Address if ":" in x else ipaddress.IPv4Address)(x)
                       for x in d.get("address", ())]
        return a

    @property
    def key(self):
        return f"att:{self.network}/{self.container}/{self.ifname}"

    def host_ifname(self, prefix, instance=""):
        """The host end's name: the prefix and a hash of the key (fits
        IFNAMSIZ); another instance's keys are hashed with its name."""
        digest = sha256(((instance + "/") if instance else "").encode()
                                + self.key.encode()).hexdigest()
        return (prefix + digest)[:MAX_IFNAME]

    def to_dict(self):
        d = {"network": self.network, "container": self.container, "netns": self.netns,
             "ifname": self.ifname, "origin": self.origin, "owner": self.owner}
        if self.addresses:
            d["address"] = [str(a) for a in self.addresses]
        if self.mac:
            d["mac"] = self.mac
        return d

    def __eq__(self, other):
        return isinstance(other, Attachment) and self.to_dict() == other.to_dict()


class PortForward:
    __slots__ = ("network", "container", "host_address", "host_port", "container_port",
                 "proto", "owner")

    def __init__(self, network, container, host_port, container_port, proto="tcp",
                 host_address=None, owner=CLI):
        self.network = network
        self.container = container
        self.host_address = ipaddress.ip_address(host_address) if host_address else None
        self.host_port = host_port
        self.container_port = container_port
        self.proto = proto
        self.owner = owner

    @property
    def key(self):
        return f"pf:{self.proto}/{self.host_address or '*'}/{self.host_port}"

    def to_dict(self):
        d = {"network": self.network, "container": self.container,
             "host_port": self.host_port, "container_port": self.container_port,
             "proto": self.proto, "owner": self.owner}
        if self.host_address:
            d["host_address"] = str(self.host_address)
        return d

    def __eq__(self, other):
        return isinstance(other, PortForward) and self.to_dict() == other.to_dict()


class Route:
    __slots__ = ("destination", "via", "network", "owner")

    def __init__(self, destination, via, network=None, owner=CLI):
        self.destination = ipaddress.ip_network(destination)
        self.via = ipaddress.ip_address(via)
        self.network = network
        self.owner = owner

    @property
    def key(self):
        return f"route:{self.destination}"

    def to_dict(self):
        d = {"destination": str(self.destination), "via": str(self.via), "owner": self.owner}
        if self.network:
            d["network"] = self.network
        return d

    def __eq__(self, other):
        return isinstance(other, Route) and self.to_dict() == other.to_dict()


class StateNodes(dict):
    """{key: node} that also holds nodes still as the dicts Relay's journal
    keeps, decoded on first access.  A CNI call loads the whole graph but looks
    at one attachment or two: decoding every one (their addresses) cost ~10 ms
    a call at 1,000 attachments.  Keys, `in` and `len` never decode;
    `values`/`items` decode all.  (`dict(t)` would copy the raw dicts: copy
    with `dict(t.items())`.)"""

    def __init__(self, decode):
        super().__init__()
        self.decode = decode

    def put_state(self, k, d):
        dict.__setitem__(self, k, d)

    def __getitem__(self, k):
        v = dict.__getitem__(self, k)
        if type(v) is dict:
            v = self.decode(v)
            dict.__setitem__(self, k, v)
        return v

    def get(self, k, default=None):
        return self[k] if k in self else default

    def pop(self, k, *default):
        v = dict.pop(self, k, *default)
        return self.decode(v) if type(v) is dict else v

    def _decode_all(self):
        for k in [k for k, v in dict.items(self) if type(v) is dict]:
            self[k]

    def values(self):
        self._decode_all()
        return dict.values(self)

    def items(self):
        self._decode_all()
        return dict.items(self)


class Graph:
    """Networks, attachments, port forwards and routes, each a dict by key."""

    def __init__(self):
        self.networks = {}
        self.attachments = StateNodes(Attachment.from_state)
        self.forwards = {}
        self.routes = {}
        self.peers = {}       # peer:NET/NODE, a cluster network's peers (peers.py)

    def copy(self):
        return Graph.from_dict(self.to_dict(), trusted=True)

    # ---- edits (each checks the whole graph still holds) -------------------------

    def add_network(self, net):
        if net.name in self.networks:
            raise ConfigError(f"network {net.name!r} already exists; remove it first "
                              "(`emergence net rm`)")
        for other in self.networks.values():
            for s in net.subnets:
                for o in other.subnets:
                    if s.version == o.version and s.overlaps(o):
                        raise ConfigError(f"networks.{net.name}.subnets: {s} overlaps {o} of "
                                          f"network {other.name!r}; choose a disjoint subnet")
        self.networks[net.name] = net
        self._check_or_undo(lambda: self.networks.pop(net.name))

    def add_attachment(self, att):
        if att.key in self.attachments:
            raise ConfigError(f"{att.key} already exists")
        self.attachments[att.key] = att
        self._check_or_undo(lambda: self.attachments.pop(att.key), {att.key})

    def add_forward(self, pf):
        if pf.key in self.forwards:
            raise ConfigError(f"port forwards: {pf.proto} port {pf.host_port} is already "
                              "forwarded; choose another host port")
        self.forwards[pf.key] = pf
        self._check_or_undo(lambda: self.forwards.pop(pf.key), {pf.key})

    def _check_or_undo(self, undo, keys=None):
        try:
            validate(self, keys)
        except ConfigError:
            undo()
            raise

    # ---- nodes by key ----------------------------------------------------------

    def _table(self, key):
        kind = key.split(":", 1)[0]
        return {"net": self.networks, "att": self.attachments, "pf": self.forwards,
                "route": self.routes, "peer": self.peers}[kind], \
            (key[4:] if kind == "net" else key)

    def get(self, key):
        """The node with KEY, or None."""
        table, k = self._table(key)
        return table.get(k)

    def items(self):
        """(key, node) of every node."""
        for table in (self.networks, self.attachments, self.forwards, self.routes,
                      self.peers):
            for node in table.values():
                yield node.key, node

    def set_item(self, key, d):
        """Set (D a node's dict) or remove (D None) the node KEY, unchecked
        beyond its own fields: for state Relay wrote itself."""
        table, k = self._table(key)
        if d is None:
            table.pop(k, None)
        elif table is self.networks:
            table[k] = network_from_dict(k, d, key, trusted=True)
        elif table is self.attachments:
            table.put_state(k, d)  # decoded when looked at
        elif table is self.forwards:
            table[k] = forward_from_dict(d, key, trusted=True)
        elif table is self.peers:
            from .peers import peer_from_dict
            table[k] = peer_from_dict(d, key, trusted=True)
        else:
            table[k] = route_from_dict(d, key, trusted=True)

    @classmethod
    def from_items(cls, items):
        """A graph from {key: node dict} (Relay's own journal), networks first."""
        g = cls()
        # attachments, the many, go in as they are (decoded when looked at)
        for k, d in items.items():
            if d is not None and k.startswith("att:"):
                g.attachments.put_state(k, d)
        for key in sorted((k for k in items if not k.startswith("att:")),
                          key=lambda k: not k.startswith("net:")):
            g.set_item(key, items[key])
        return g

    # ---- (de)serialisation -----------------------------------------------------

    def to_dict(self):
        doc = {"networks": {n: net.to_dict() for n, net in sorted(self.networks.items())},
               "attachments": [a.to_dict() for _, a in sorted(self.attachments.items())],
               "port_forwards": [p.to_dict() for _, p in sorted(self.forwards.items())],
               "routes": [r.to_dict() for _, r in sorted(self.routes.items())]}
        if self.peers:      # only cluster networks have them
            doc["peers"] = [p.to_dict() for _, p in sorted(self.peers.items())]
        return doc

    @classmethod
    def from_dict(cls, doc, where="graph", instance="", owner=None, trusted=False):
        """A graph from a document; OWNER (a file's path) owns every node.
        TRUSTED: Relay's own state, whose values may predate today's checks
        (a name, a prefix length): loaded, not refused."""
        _fields(where, doc, {"networks", "attachments", "port_forwards", "routes", "peers"})
        g = cls()
        nets = doc.get("networks", {})
        if not isinstance(nets, dict):
            _bad(f"{where}.networks", "must be a table of networks by name")
        for name, d in nets.items():
            g_net = network_from_dict(name, d, f"networks.{name}", instance, trusted)
            g.networks[name] = g_net
        for i, d in enumerate(_list(doc, "attachments")):
            a = attachment_from_dict(d, f"attachments[{i}]", trusted)
            if a.key in g.attachments:
                _bad(f"attachments[{i}]", f"{a.key} is declared twice")
            g.attachments[a.key] = a
        for i, d in enumerate(_list(doc, "port_forwards")):
            p = forward_from_dict(d, f"port_forwards[{i}]", trusted)
            if p.key in g.forwards:
                _bad(f"port_forwards[{i}].host_port",
                     f"{p.proto} port {p.host_port} is already forwarded")
            g.forwards[p.key] = p
        for i, d in enumerate(_list(doc, "routes")):
            r = route_from_dict(d, f"routes[{i}]", trusted)
            g.routes[r.key] = r
        if doc.get("peers"):
            from .peers import peer_from_dict
            for i, d in enumerate(_list(doc, "peers")):
                p = peer_from_dict(d, f"peers[{i}]", trusted)
                g.peers[p.key] = p
        if owner is not None:
            for _, node in g.items():
                node.owner = owner
            for a in g.attachments.values():
                a.origin = "file"
        if not trusted:
            validate(g)
        return g


def _list(doc, name):
    v = doc.get(name, [])
    if not isinstance(v, list):
        _bad(name, "must be a list (an array of tables)")
    return v


def network_from_dict(name, d, where, instance="", trusted=False):
    _fields(where, d, NET_FIELDS)
    if not isinstance(name, str) or not name:
        _bad(where, "a network's name is a string")
    if not trusted:
        fields.name(where, name)
    bridge = _ifname(f"{where}.bridge", d.get("bridge", default_bridge(name, instance)))
    subnets = d.get("subnets")
    if isinstance(subnets, str):
        subnets = [subnets]
    if not subnets or not isinstance(subnets, list):
        _bad(f"{where}.subnets", "is required: a list of CIDRs, e.g. [\"10.88.0.0/24\"]")
    nets = [(fields.cidr if trusted else fields.subnet)(f"{where}.subnets", s) for s in subnets]
    gw = d.get("gateway", [])
    if isinstance(gw, str):
        gw = [gw]
    if not isinstance(gw, list):
        _bad(f"{where}.gateway", "must be an address or a list of addresses")
    for g in gw:
        a = fields.address(f"{where}.gateway", g)
        if not any(a.version == n.version and a in n for n in nets):
            _bad(f"{where}.gateway", f"{g} is outside the subnets {', '.join(map(str, nets))}")
    for k in ("nat", "isolated", "allow_overlap"):
        if k in d:
            fields.boolean(f"{where}.{k}", d[k])
    prefix = d.get("veth_prefix", "ev")
    if not isinstance(prefix, str) or not 1 <= len(prefix) <= 6 or not prefix.isascii() \
            or not prefix.isalnum():
        _bad(f"{where}.veth_prefix", "must be 1-6 letters or digits")
    owner = d.get("owner", CLI)
    if not isinstance(owner, str) or not owner:
        _bad(f"{where}.owner", "must be a string")
    mtu = fields.mtu(f"{where}.mtu", d.get("mtu", 1500), () if trusted else
                     {n.version for n in nets})
    cluster = d.get("cluster_subnet")
    if cluster is not None:
        cluster = fields.cidr(f"{where}.cluster_subnet", cluster)
        if not all(n.version == cluster.version and n.subnet_of(cluster) for n in nets):
            _bad(f"{where}.cluster_subnet", f"{cluster} must hold the network's subnets")
    return Network(name, bridge, nets, gw, mtu, d.get("nat", True), d.get("isolated", True),
                   prefix, owner, d.get("allow_overlap", False), cluster)


def attachment_from_dict(d, where, trusted=False):
    _fields(where, d, ATT_FIELDS)
    for k in ("network", "container", "netns"):
        if not isinstance(d.get(k), str) or not d[k]:
            _bad(f"{where}.{k}", "is required (a string)")
    if not trusted:
        fields.name(f"{where}.network", d["network"])
        fields.container(f"{where}.container", d["container"])
    if not d["netns"].startswith("/") and not trusted:
        _bad(f"{where}.netns", f"{d['netns']!r} must be an absolute path")
    addrs = d.get("address", [])
    if isinstance(addrs, str):
        addrs = [addrs]
    if not isinstance(addrs, list):
        _bad(f"{where}.address", "must be an address or a list of addresses")
    for a in addrs:
        fields.address(f"{where}.address", a)
    mac = d.get("mac")
    if mac is not None and (not isinstance(mac, str) or len(mac.split(":")) != 6
                            or not all(len(x) == 2 and _hex(x) for x in mac.split(":"))):
        _bad(f"{where}.mac", f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    for k in ("origin", "owner"):
        if k in d and not isinstance(d[k], str):
            _bad(f"{where}.{k}", "must be a string")
    return Attachment(d["network"], d["container"], d["netns"],
                      d.get("ifname", "eth0") if trusted else
                      _ifname(f"{where}.ifname", d.get("ifname", "eth0")), addrs, mac,
                      d.get("origin", "file"), d.get("owner"))


def _hex(x):
    try:
        int(x, 16)
        return True
    except ValueError:
        return False


def route_from_dict(d, where, trusted=False):
    _fields(where, d, ROUTE_FIELDS)
    for k in ("destination", "via"):
        if k not in d:
            _bad(f"{where}.{k}", "is required")
    dst = (fields.cidr if trusted else fields.route_destination)(f"{where}.destination",
                                                                 d["destination"])
    via = fields.address(f"{where}.via", d["via"])
    if via.version != dst.version and not trusted:
        _bad(f"{where}.via", f"{via} is not of the destination's family (IPv{dst.version})")
    net = d.get("network")
    if net is not None and not trusted:
        fields.name(f"{where}.network", net)
    return Route(dst, via, net, d.get("owner", CLI))


def forward_from_dict(d, where, trusted=False):
    _fields(where, d, PF_FIELDS)
    for k in ("network", "container"):
        if not isinstance(d.get(k), str):
            _bad(f"{where}.{k}", "is required (a string)")
    if not trusted:
        fields.container(f"{where}.container", d["container"])
    proto = d.get("proto", "tcp")
    if proto not in ("tcp", "udp"):
        _bad(f"{where}.proto", f"{proto!r} must be tcp or udp")
    for k in ("host_port", "container_port"):
        if k not in d:
            _bad(f"{where}.{k}", "is required")
        fields.port(f"{where}.{k}", d[k])
    ha = d.get("host_address")
    if ha is not None:
        fields.address(f"{where}.host_address", ha)
    return PortForward(d["network"], d["container"], d["host_port"], d["container_port"],
                       proto, ha, d.get("owner", CLI))


def validate(g, keys=None):
    """Raise ConfigError (one line naming the bad field) unless G can be built.
    KEYS: only these attachments and forwards were added, to a graph that
    held (an edit checks what it adds, not the whole graph again); an address
    two attachments claim is then refused by IPAM, which holds every one."""
    if keys is not None:
        return _validate_nodes(g, keys)
    seen = []
    bridges = {}
    for name, net in sorted(g.networks.items()):
        if net.bridge in bridges:
            raise ConfigError(f"networks.{name}.bridge: {net.bridge} is already the bridge of "
                              f"network {bridges[net.bridge]!r}")
        bridges[net.bridge] = name
        for s in net.subnets:
            for other, os_ in seen:
                if s.version == os_.version and s.overlaps(os_):
                    raise ConfigError(f"networks.{name}.subnets: {s} overlaps {os_} of network "
                                      f"{other!r}; choose a disjoint subnet")
            seen.append((name, s))
    taken = {}
    by_container = {}
    for key, a in sorted(g.attachments.items()):
        _check_attachment(g, key, a)
        for addr in a.addresses:
            if addr in taken:
                raise ConfigError(f"{key}.address: {addr} is already used by {taken[addr]}")
            taken[addr] = key
        by_container.setdefault((a.network, a.container), a)
    for key, p in sorted(g.forwards.items()):
        if (p.network, p.container) not in by_container:
            raise ConfigError(f"{key}.container: {p.container!r} is not attached to network "
                              f"{p.network!r}")
    for key, r in sorted(g.routes.items()):
        if r.network and r.network not in g.networks:
            raise ConfigError(f"{key}.network: no network {r.network!r}")
        _check_route(g, key, r)
    for key, p in sorted(g.peers.items()):
        if p.network not in g.networks:
            raise ConfigError(f"{key}.network: no network {p.network!r}")


def _check_route(g, key, r):
    """A static route goes via an address of one of Relay's subnets (else it
    would go wherever the host routes, which Relay does not own), and never
    covers a Relay subnet itself."""
    nets = [g.networks[r.network]] if r.network else list(g.networks.values())
    if not any(n.subnet_for(r.via)[0] is not None for n in nets):
        raise ConfigError(f"{key}.via: {r.via} is in no subnet of "
                          + (f"network {r.network!r}" if r.network else "a Relay network")
                          + "; a route goes via a container")
    for n in g.networks.values():
        for s in n.subnets:
            if s.version == r.destination.version and s.overlaps(r.destination):
                raise ConfigError(f"{key}.destination: {r.destination} overlaps {s} of network "
                                  f"{n.name!r}")


def _check_attachment(g, key, a):
    net = g.networks.get(a.network)
    if net is None:
        raise ConfigError(f"{key}.network: no network {a.network!r}; create it first")
    for addr in a.addresses:
        s, gw = net.subnet_for(addr)
        if s is None:
            raise ConfigError(f"{key}.address: {addr} is outside the subnets of network "
                              f"{a.network!r} ({', '.join(map(str, net.subnets))})")
        if addr == gw or addr in (s.network_address, s.broadcast_address):
            raise ConfigError(f"{key}.address: {addr} is the gateway, network or "
                              "broadcast address of its subnet")


def _validate_nodes(g, keys):
    for key in sorted(keys):
        node = g.get(key)
        if isinstance(node, Attachment):
            _check_attachment(g, key, node)
        elif isinstance(node, PortForward):
            prefix = f"att:{node.network}/{node.container}/"
            if not any(k.startswith(prefix) for k in keys) and not any(
                    a.container == node.container and a.network == node.network
                    for a in g.attachments.values()):
                raise ConfigError(f"{key}.container: {node.container!r} is not attached to "
                                  f"network {node.network!r}")
        elif key.startswith("peer:"):
            if node is not None and node.network not in g.networks:
                raise ConfigError(f"{key}.network: no network {node.network!r}")
        elif node is not None:
            raise ValueError(f"validate: {key} is not an attachment or forward")


def load(path, instance=""):
    """A graph from a .toml or .json file, every node owned by the file's
    absolute path."""
    from ..docfile import load as load_doc
    doc = load_doc(path, "toml" if path.endswith(".toml") else "json", ConfigError)
    try:
        return Graph.from_dict(doc, os.path.basename(path), instance, os.path.abspath(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}")
