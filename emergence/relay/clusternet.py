"""`emergence net SUB NAME --cluster`: cluster networks (leases.py, agent.py).

  create NAME --cluster --subnet CIDR --node-prefix N [--vni N] [--port N]
                [--grace S] [--mtu N] [--encrypt wireguard]
                                          store the network in the cluster's etcd
  agent NAME --cluster [--vtep IP]        lease this node's subnet and keep the
                                          overlay (foreground; SIGTERM releases)
  leave NAME --cluster                    release this node's subnet now
  nodes NAME --cluster                    node, subnet, VTEP, encryption, last seen
  inspect NAME --cluster                  the network, its peers, this node's MTU
  rm NAME --cluster                       remove the network (no node may hold it)
"""

import ipaddress
import os
import sys
import time

from ..command import UsageError
from ..errors import EmergenceError

SUBS = ("create", "agent", "leave", "nodes", "inspect", "rm")


def _cluster(opts):
    from ..place.commands import _cluster as connect
    return connect(opts)


def _node(opts):
    if opts.get("name"):
        return opts["name"]
    from ..place.commands import _material
    m = _material(opts)
    if not m.exists():
        raise EmergenceError("this node has not joined a cluster (no certificate in "
                             f"{m.dir}); run `emergence cluster join` first")
    return m.info["name"]


def _vtep(opts, cluster):
    """--vtep, else the address this host reaches etcd from."""
    if opts.get("vtep"):
        try:
            return str(ipaddress.IPv4Address(opts["vtep"]))
        except ValueError:
            raise UsageError(f"--vtep {opts['vtep']}: an IPv4 address of this host") from None
    import socket
    from urllib.parse import urlsplit
    u = urlsplit(cluster.endpoint)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((socket.gethostbyname(u.hostname), u.port or 2379))
        return s.getsockname()[0]
    finally:
        s.close()


def _number(opts, name, kind):
    v = opts.get(name)
    if v is None:
        return None
    try:
        n = kind(v)
    except ValueError:
        raise UsageError(f"--{name} {v!r}: a number") from None
    if n <= 0:
        raise UsageError(f"--{name} {v!r}: more than 0")
    return n


def _state(opts):
    return (opts.get("state") or os.environ.get("EMERGENCE_RELAY_STATE")
            or "/var/lib/emergence/relay")


def run(opts, sub, rest):
    from .. import fastjson
    from . import leases
    if sub not in SUBS:
        raise UsageError(f"net {sub} has no --cluster form; cluster networks: "
                         + ", ".join(SUBS))
    if len(rest) != 1:
        raise UsageError(f"usage: emergence net {sub} NAME --cluster ...")
    (name,) = rest
    from . import fields
    fields.name(f"net {sub}", name)
    c = _cluster(opts)
    if sub == "create":
        subnets = opts.get("subnet") or []
        if len(subnets) != 1 or not opts.get("node-prefix"):
            raise UsageError("net create --cluster: one --subnet CIDR and --node-prefix N")
        if opts.get("encrypt") == "wireguard":
            # this node's kernel at least must carry it: refused before etcd holds anything
            from .wg import require_wireguard
            require_wireguard()
        doc = leases.create_network(c, name, subnets[0], opts["node-prefix"],
                                    vni=_number(opts, "vni", int),
                                    port=_number(opts, "port", int),
                                    grace=_number(opts, "grace", float) or leases.DEFAULT_GRACE,
                                    mtu=_number(opts, "mtu", int), encrypt=opts.get("encrypt"))
        sys.stdout.write(f"{name} {doc['subnet']} /{doc['node_prefix']} vni {doc['vni']}\n")
    elif sub == "agent":
        from .agent import run_agent
        return run_agent(c, name, _node(opts), _vtep(opts, c), _state(opts),
                         opts.get("instance"), _number(opts, "lease-ttl", float) or 10.0,
                         _number(opts, "mtu", int))
    elif sub == "leave":
        lease = leases.NodeLease(c, name, _node(opts), None)
        mine = c.get("netlease", lease.node, name)
        if not isinstance(mine, dict):
            raise EmergenceError(f"this node holds no subnet of {name!r}")
        lease.subnet = ipaddress.ip_network(mine["subnet"])
        lease.release()
        sys.stdout.write(f"released {mine['subnet']}\n")
    elif sub == "rm":
        leases.get_network(c, name)
        held = leases.peers(c, name)
        if held:
            raise EmergenceError(f"cluster network {name!r} is held by "
                                 f"{', '.join(sorted(held))}; they leave first "
                                 f"(`emergence net leave {name} --cluster`)")
        c.delete("net", name)
        c.client.delete_prefix(c.key("netclaim", name) + "/")
        for key in leases._records(c):      # the nodes' records of it (command role)
            node, _, rest = key.partition("/")
            if rest.split("/")[0] == name:
                c.client.delete(c.key("netlease", key))
    elif sub in ("nodes", "inspect"):
        doc = leases.get_network(c, name)
        rows = [{"node": n, "subnet": r["subnet"], "vtep": r.get("vtep"),
                 "encryption": doc.get("encrypt") or "none",
                 "alive": r["alive"], "last_seen": r["seen"]}
                for n, r in sorted(leases.peers(c, name, doc).items())]
        if sub == "inspect":
            from .agent import read_status
            out = dict(doc, name=name, nodes=rows, this_node=read_status(_state(opts), name))
            sys.stdout.write(fastjson.dumps(out, indent=2) + "\n")
        elif opts.get("json"):
            sys.stdout.write(fastjson.dumps(rows) + "\n")
        else:
            sys.stdout.write(f"{'NODE':20} {'SUBNET':18} {'VTEP':15} {'ENCRYPTION':10} "
                             "LAST SEEN\n")
            for r in rows:
                seen = ("now" if r["alive"] else
                        f"{int(time.time() - float(r['last_seen'] or 0))} s ago")
                sys.stdout.write(f"{r['node']:20} {r['subnet']:18} {r['vtep'] or '-':15} "
                                 f"{r['encryption']:10} {seen}\n")
    return 0
