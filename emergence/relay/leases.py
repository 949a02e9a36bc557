"""Cluster networks and node-subnet leases in the cluster's etcd.

A cluster network spans nodes: each node leases one node subnet of it, keyed
by the node's identity (its etcd user, which its certificate names), so
containers on different nodes have distinct addresses and each node routes a
peer's whole subnet to that peer.  Keys under the cluster prefix:

  net/NET               the network: subnet, node prefix, VNI, port, grace
                        (written by `net create --cluster`, a command node)
  netclaim/NET/SUBNET   the node that holds SUBNET ("10.1.2.0-24"); made in
                        one transaction with the node's record, so honest
                        nodes never pick one subnet twice
  netlease/NODE/NET     NODE's record: subnet, VTEP, the VXLAN device's MAC;
                        no etcd lease, so a node that restarts finds its
                        subnet and gets it back; written only when it changes
  netlease/NODE/NET/seen   when NODE was last up (refreshed while it runs)
  netlease/NODE/NET/alive  on NODE's etcd lease: gone when NODE dies

Who holds a subnet is decided from records alone, which only their node can
write (etcd RBAC: a worker writes `netlease/NAME/`): a record counts while
its node is alive or was seen within the network's grace (default 24 h), and
of two records naming one subnet the older write (lower mod revision) wins.
Claims are shared (any worker may write `netclaim/`, etcd's prefix
permissions cannot narrow it), so a worker can forge one and block a subnet
for honest allocators, but cannot take another node's traffic: its own
record naming that subnet is younger and loses.  A killed node keeps its
record: its peers keep their entries and it gets the same subnet back.
`release` (node leave, the agent's clean stop) drops claim and liveness at
once; after the grace peers drop a dead node by themselves, and `reclaim`
(any node) frees its claim for others.
"""

import base64
import ipaddress
import json
import time
import zlib

from ..errors import EmergenceError

DEFAULT_GRACE = 24 * 3600.0
DEFAULT_PORT = 4789


def _b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _dumps(v):
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def subnet_key(subnet):
    return str(subnet).replace("/", "-")


def key_subnet(key):
    return ipaddress.ip_network(key.replace("-", "/"))


def default_vni(name):
    """A VNI derived from the name (stable, 1..2^24-1)."""
    return zlib.crc32(name.encode()) % 0xFFFFFE + 1


def create_network(cluster, name, subnet, node_prefix, vni=None, port=None,
                   grace=DEFAULT_GRACE, mtu=None, encrypt=None):
    """Store cluster network NAME; one line if it exists or the numbers are wrong."""
    from . import fields
    fields.name("net create", name)
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError:
        raise EmergenceError(f"--subnet {subnet}: not a CIDR with host bits zero, "
                             "e.g. 10.50.0.0/16") from None
    if net.version != 4:
        raise EmergenceError("--subnet: cluster networks are IPv4 for now (VXLAN over IPv4)")
    try:
        node_prefix = int(node_prefix)
    except (TypeError, ValueError):
        raise EmergenceError(f"--node-prefix {node_prefix!r}: a prefix length, e.g. 24")
    if not net.prefixlen < node_prefix <= 30:
        raise EmergenceError(f"--node-prefix {node_prefix}: between /{net.prefixlen + 1} and "
                             f"/30 for {net}")
    if encrypt not in (None, "wireguard"):
        raise EmergenceError(f"--encrypt {encrypt}: the one kind is wireguard")
    if port is None:
        port = 51820 if encrypt else DEFAULT_PORT
    if not 0 < int(port) < 65536:
        raise EmergenceError(f"--port {port}: a UDP port, 1 to 65535")
    vni = default_vni(name) if vni is None else int(vni)
    if not 1 <= vni < 1 << 24:
        raise EmergenceError(f"--vni {vni}: 1 to 16777215")
    if not 0 < float(grace):
        raise EmergenceError(f"--grace {grace}: seconds, more than 0")
    doc = {"subnet": str(net), "node_prefix": node_prefix, "vni": vni, "port": int(port),
           "grace": float(grace), "encrypt": encrypt, "created": time.time()}
    if mtu is not None:
        doc["mtu"] = int(mtu)
    if not cluster.create(doc, "net", name):
        raise EmergenceError(f"cluster network {name!r} exists; see `emergence net inspect "
                             f"{name} --cluster`")
    return doc


def get_network(cluster, name):
    doc = cluster.get("net", name)
    if doc is None:
        raise EmergenceError(f"no cluster network {name!r}; make it with `emergence net "
                             f"create {name} --cluster --subnet CIDR --node-prefix N`")
    return doc


def _records(cluster):
    """{rest of key under netlease/: (value, mod revision)}."""
    base = cluster.key("netlease") + "/"
    out = {}
    for v, meta in cluster.client.get_prefix(base):
        try:
            out[meta["key"].decode()[len(base):]] = (json.loads(v), int(meta["mod_revision"]))
        except (ValueError, KeyError):
            continue
    return out


def _valid(rec, within, prefix):
    """REC's subnet if REC is well formed: a node subnet of the network (never
    a wider route, a default route or another network's), an IPv4 VTEP and a
    unicast MAC; else None (a worker's record is not trusted to be sane)."""
    import re
    try:
        subnet = ipaddress.ip_network(rec.get("subnet"))
        ipaddress.IPv4Address(rec.get("vtep"))
    except (TypeError, ValueError):
        return None
    mac = rec.get("mac")
    if subnet.version != 4 or subnet.prefixlen != prefix or not subnet.subnet_of(within) \
            or not isinstance(mac, str) \
            or not re.fullmatch(r"[0-9a-f][02468ace](:[0-9a-f]{2}){5}", mac):
        return None
    return str(subnet)


def _wg_public_ok(key):
    from .wg import valid_public
    return valid_public(key)


def holders(cluster, name, doc=None, now=None):
    """{node: record} of the nodes that hold a subnet of NAME: alive or seen
    within the grace, and for each subnet the oldest such record."""
    doc = doc or get_network(cluster, name)
    grace = float(doc.get("grace", DEFAULT_GRACE))
    now = time.time() if now is None else now
    within = ipaddress.ip_network(doc["subnet"])
    recs = _records(cluster)
    best = {}
    for key, (rec, rev) in recs.items():
        node, _, rest = key.partition("/")
        if rest != name or not isinstance(rec, dict) or rec.get("node") != node:
            continue
        alive = f"{node}/{name}/alive" in recs
        seen = recs.get(f"{node}/{name}/seen", ({}, 0))[0]
        seen = float(seen.get("seen", 0)) if isinstance(seen, dict) else 0.0
        if not alive and now - seen >= grace:
            continue
        subnet = _valid(rec, within, int(doc["node_prefix"]))
        if subnet is None or (doc.get("encrypt") == "wireguard"
                              and not _wg_public_ok(rec.get("wg_public"))):
            continue
        if subnet not in best or rev < best[subnet][0]:
            best[subnet] = (rev, node, dict(rec, subnet=subnet, alive=alive, seen=seen))
    return {node: rec for _, node, rec in best.values()}


def held_by(cluster, name, node):
    """NODE's own record of NAME (a subnet it held before), or None."""
    rec = cluster.get("netlease", node, name)
    return rec if isinstance(rec, dict) and rec.get("subnet") else None


def peers(cluster, name, doc=None):
    return holders(cluster, name, doc)


class NodeLease:
    """This node's subnet of cluster network NAME."""

    def __init__(self, cluster, name, node, vtep, mac=None, ttl=10.0, wg_public=None):
        self.cluster, self.name, self.node = cluster, name, node
        self.wg_public = wg_public
        self.vtep, self.mac, self.ttl = vtep, mac, ttl
        self.doc = get_network(cluster, name)
        self.subnet = None
        self.etcd_lease = None

    def _txn(self, compare, success):
        from etcd3gw.exceptions import Etcd3Exception

        from ..place.state import Refused
        try:
            return bool(self.cluster.client.transaction(
                {"compare": compare, "success": success, "failure": []}).get("succeeded"))
        except Etcd3Exception as e:
            if "permission denied" not in f"{e} {getattr(e, 'detail_text', '')}":
                raise
            raise Refused(f"etcd refused: this node ({self.node}) may not hold a subnet of "
                          f"{self.name!r}; it needs the worker role") from None

    def _put(self, key, value, lease=None):
        op = {"key": _b64(key), "value": _b64(_dumps(value))}
        if lease is not None:
            op["lease"] = lease.id
        return {"request_put": op}

    def record(self):
        rec = {"node": self.node, "subnet": str(self.subnet), "vtep": self.vtep,
               "mac": self.mac}
        if self.wg_public:
            rec["wg_public"] = self.wg_public
        return rec

    def acquire(self):
        """Take (or take back) a node subnet; returns it."""
        c, name = self.cluster, self.name
        net = ipaddress.ip_network(self.doc["subnet"])
        reclaim(c, name)                # free what the gone and the forgers hold
        mine = c.get("netlease", self.node, name)
        claims = c.items("netclaim", name)
        held = {str(key_subnet(k)): n for k, n in claims.items()}
        order = []
        if isinstance(mine, dict) and mine.get("subnet"):
            order.append(ipaddress.ip_network(mine["subnet"]))
        order += list(net.subnets(new_prefix=self.doc["node_prefix"]))
        for s in order:
            if held.get(str(s), self.node) != self.node:
                continue
            ckey = c.key("netclaim", name, subnet_key(s))
            self.subnet = s
            if held.get(str(s)) == self.node:
                cmp = [{"key": _b64(ckey), "result": "EQUAL", "target": "VALUE",
                        "value": _b64(_dumps(self.node))}]
            else:
                cmp = [{"key": _b64(ckey), "result": "EQUAL", "target": "CREATE",
                        "create_revision": 0}]
            ops = [self._put(ckey, self.node),
                   self._put(c.key("netlease", self.node, name, "seen"), {"seen": time.time()})]
            if mine != self.record():   # unchanged: keep its revision (its seniority)
                ops.append(self._put(c.key("netlease", self.node, name), self.record()))
            if self._txn(cmp, ops):
                self.alive()
                return s
            held = {str(key_subnet(k)): n for k, n in c.items("netclaim", name).items()}
        raise EmergenceError(f"cluster network {name!r} has no free node subnet "
                             f"(/{self.doc['node_prefix']} of {self.doc['subnet']}); "
                             "remove a node or make a network with a longer --node-prefix")

    def alive(self):
        """Put the alive key on a fresh etcd lease (or keep the current one)."""
        if self.etcd_lease is None:
            self.etcd_lease = self.cluster.lease(self.ttl)
        self.cluster.put(True, "netlease", self.node, self.name, "alive",
                         lease=self.etcd_lease)

    def renew(self, touch=False):
        """Keep the alive key; with TOUCH also refresh `seen` in the record."""
        if self.etcd_lease is None or self.etcd_lease.refresh() <= 0:
            self.etcd_lease = None
            self.alive()
        if touch:
            self.cluster.put({"seen": time.time()}, "netlease", self.node, self.name, "seen")

    def release(self):
        """Give the subnet back (node leave, a clean stop): peers drop us now."""
        c = self.cluster
        if self.subnet is not None:
            ckey = c.key("netclaim", self.name, subnet_key(self.subnet))
            self._txn([{"key": _b64(ckey), "result": "EQUAL", "target": "VALUE",
                        "value": _b64(_dumps(self.node))}],
                      [{"request_delete_range": {"key": _b64(ckey)}}])
        c.delete("netlease", self.node, self.name, "alive")
        c.delete("netlease", self.node, self.name, "seen")
        if self.etcd_lease is not None:
            try:
                self.etcd_lease.revoke()
            except Exception:
                pass
            self.etcd_lease = None


def reclaim(cluster, name, now=None):
    """Drop the claims of NAME that no current holder backs (a node gone
    longer than the grace, or a forged claim); returns the subnets freed.
    Any node may run it: each delete is a transaction on the claim's value."""
    doc = get_network(cluster, name)
    held = {r["subnet"]: n for n, r in holders(cluster, name, doc, now).items()}
    freed = []
    for skey, node in cluster.items("netclaim", name).items():
        if held.get(str(key_subnet(skey))) == node:
            continue
        ckey = cluster.key("netclaim", name, skey)
        ok = cluster.client.transaction({
            "compare": [{"key": _b64(ckey), "result": "EQUAL", "target": "VALUE",
                         "value": _b64(_dumps(node))}],
            "success": [{"request_delete_range": {"key": _b64(ckey)}}],
            "failure": []}).get("succeeded")
        if ok:
            freed.append(str(key_subnet(skey)))
    return freed
