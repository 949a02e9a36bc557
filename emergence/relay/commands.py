"""The `net` verb: Relay's networks, graph files, attach/detach and GC.
Handlers import the engine (and pyroute2) only when called."""

import os
import sys

from ..command import FLAG, JSON, MULTI, VALUE, Option, UsageError, Verb
from ..errors import EmergenceError
from ..place.commands import COMMON as CLUSTER_OPTIONS

TITLE = "Networks (Relay: bridges, veths, IPAM, NAT, port forwards)"

SUBCOMMANDS = """\
  create NAME --subnet CIDR [--subnet CIDR] [--bridge BR] [--gateway IP] [--mtu N]
                [--no-nat] [--no-isolate] [--veth-prefix P] [--allow-overlap]
  rm NAME [--force]             remove a network (--force: also with containers attached)
  ls                            list networks
  inspect NAME                  a network, its attachments and addresses
  apply FILE [--full] [--prune-all] [--force] [--allow-overlap]
                                make FILE's networks what FILE (TOML or JSON) declares
  diff FILE [--full] [--json] [--prune-all]   what apply would change
  show                          the whole graph and what is applied
  gc                            release attachments whose netns is gone
  attach NET CONTAINER NETNS [--ip IP] [--ifname IF] [-p HOST:CONT[/PROTO]]
  detach NET CONTAINER [--ifname IF]
  hook attach|detach            as an OCI hook: the container's state on stdin

Cluster networks (across nodes, in the cluster's etcd; VXLAN between nodes):
  create NAME --cluster --subnet CIDR --node-prefix N [--vni N] [--port N] [--grace S]
                [--mtu N] [--encrypt wireguard]   a network each node leases a /N of
  agent NAME --cluster [--vtep IP] [--lease-ttl S]
                                lease this node's subnet, keep the overlay (foreground)
  leave NAME --cluster          release this node's subnet
  nodes NAME --cluster          node, subnet, VTEP, encryption, last seen
  inspect NAME --cluster        the network, its nodes, this node's MTU and how it was derived
  rm NAME --cluster             remove a network no node holds"""

OPTIONS = {
    "state": Option(VALUE, "Relay's state directory (default /var/lib/emergence/relay, "
                           "or $EMERGENCE_RELAY_STATE)", "DIR"),
    "instance": Option(VALUE, "this Relay's instance name, recorded in its state directory "
                              "(nft table emergence-NAME; default: derived from the state "
                              "directory; the default one's is `emergence`)", "NAME"),
    "force": Option(FLAG, "rm, apply: remove networks even with containers attached"),
    "prune-all": Option(FLAG, "apply: FILE replaces every declared network, route and "
                              "attachment, not only those FILE declared before"),
    "allow-overlap": Option(FLAG, "create, apply: allow subnets and routes that overlap the "
                                  "host's addresses or routes"),
    "subnet": Option(MULTI, "a subnet of the network (create)", "CIDR"),
    "bridge": Option(VALUE, "the bridge's name (create; default rel-NAME, for another "
                               "instance than the default rXXXX-NAME)", "BR"),
    "gateway": Option(MULTI, "the gateway (create; default the subnet's first address)", "IP"),
    "mtu": Option(VALUE, "MTU (create)", "N"),
    "no-nat": Option(FLAG, "no egress masquerade (create)"),
    "no-isolate": Option(FLAG, "allow forwarding to other networks (create)"),
    "veth-prefix": Option(VALUE, "host veth name prefix (create; default ev)", "P"),
    "full": Option(FLAG, "also compare with the kernel, not only with what was applied"),
    "ip": Option(MULTI, "a fixed address (attach)", "IP"),
    "ifname": Option(VALUE, "the interface in the container (default eth0)", "IF"),
    "publish": Option(MULTI, "forward HOST port to CONTAINER port (attach)",
                      "HOST:CONT[/PROTO]", aliases=("p",)),
    "json": JSON,
    "cluster": Option(FLAG, "a cluster network, in the cluster's etcd (create, agent, leave, "
                            "nodes, inspect, rm)"),
    "node-prefix": Option(VALUE, "the prefix length of each node's subnet (create --cluster)",
                          "N"),
    "vni": Option(VALUE, "VXLAN network id (create --cluster; default from the name)", "N"),
    "port": Option(VALUE, "UDP port (create --cluster; default 4789, with --encrypt 51820)", "N"),
    "grace": Option(VALUE, "seconds a gone node keeps its subnet (create --cluster; default "
                           "86400)", "S"),
    "encrypt": Option(VALUE, "carry a cluster network over kernel WireGuard (create "
                             "--cluster)", "wireguard"),
    "vtep": Option(VALUE, "this node's underlay address (agent; default the one etcd is "
                          "reached from)", "IP"),
    "lease-ttl": Option(VALUE, "seconds of the node's etcd lease (agent; default 10)", "S"),
    "name": Option(VALUE, "this node's name (with --insecure; else its certificate's)",
                   "NAME"),
    **CLUSTER_OPTIONS,
}


def _relay(opts):
    from .engine import Relay
    return Relay(opts.get("state"), instance=opts.get("instance"))


def _need(args, n, usage):
    if len(args) != n:
        raise UsageError(f"usage: emergence net {usage}")
    return args


def parse_publish(spec, network, container):
    """HOST:CONTAINER[/PROTO] (or IP:HOST:CONTAINER) as a PortForward."""
    from .graph import forward_from_dict
    port, _, proto = spec.partition("/")
    parts = port.rsplit(":", 2)
    if len(parts) < 2:
        raise UsageError(f"-p {spec}: use HOST:CONTAINER[/tcp|udp]")
    d = {"network": network, "container": container, "proto": proto or "tcp"}
    try:
        d["host_port"], d["container_port"] = int(parts[-2]), int(parts[-1])
    except ValueError:
        raise UsageError(f"-p {spec}: ports must be numbers") from None
    if len(parts) == 3 and parts[0]:
        d["host_address"] = parts[0].strip("[]")
    return forward_from_dict(d, f"-p {spec}")


def _print_changes(changes, as_json):
    if as_json:
        from .. import fastjson
        sys.stdout.write(fastjson.dumps([c.to_dict() for c in changes]) + "\n")
    else:
        for c in changes:
            sys.stdout.write(f"{c}\n")
        if not changes:
            sys.stdout.write("no changes\n")


def _net(ctx, opts, args):
    if not args:
        raise UsageError("usage: emergence net SUBCOMMAND ...; see `emergence net --help`")
    sub, rest = args[0], args[1:]
    if opts.get("cluster") or sub in ("agent", "leave", "nodes"):
        from .clusternet import run
        return run(opts, sub, rest)
    from .. import fastjson
    if sub == "create":
        from .engine import network_from_options
        (name,) = _need(rest, 1, "create NAME --subnet CIDR ...")
        if not opts.get("subnet"):
            raise UsageError("net create: --subnet CIDR is required")
        r = _relay(opts)
        net = network_from_options(name, opts, r.instance)
        r.create_network(net)
        sys.stdout.write(f"{name}\n")
    elif sub == "rm":
        (name,) = _need(rest, 1, "rm NAME")
        _relay(opts).remove_network(name, force=opts.get("force", False))
    elif sub == "ls":
        g = _relay(opts).desired()
        rows = [{"name": n, "bridge": net.bridge, "subnets": [str(s) for s in net.subnets],
                 "owner": net.owner,
                 "attachments": sum(1 for a in g.attachments.values() if a.network == n)}
                for n, net in sorted(g.networks.items())]
        if opts.get("json"):
            sys.stdout.write(fastjson.dumps(rows) + "\n")
        else:
            sys.stdout.write(f"{'NAME':16} {'BRIDGE':16} {'ATTACHED':>8}  SUBNETS\n")
            for r in rows:
                sys.stdout.write(f"{r['name']:16} {r['bridge']:16} {r['attachments']:>8}  "
                                 f"{' '.join(r['subnets'])}\n")
    elif sub == "inspect":
        (name,) = _need(rest, 1, "inspect NAME")
        g = _relay(opts).desired()
        if name not in g.networks:
            raise EmergenceError(f"no network {name!r}; see `emergence net ls`")
        doc = dict(g.networks[name].to_dict(), name=name,
                   attachments=[a.to_dict() for a in g.attachments.values()
                                if a.network == name],
                   port_forwards=[p.to_dict() for p in g.forwards.values()
                                  if p.network == name])
        sys.stdout.write(fastjson.dumps(doc, indent=2) + "\n")
    elif sub in ("apply", "diff"):
        from .graph import load
        from .owners import declare
        (path,) = _need(rest, 1, f"{sub} FILE")
        r = _relay(opts)
        new = load(path, r.instance)
        owner = os.path.abspath(path)
        if opts.get("allow-overlap"):
            for net in new.networks.values():
                net.allow_overlap = True
        how = {"prune_all": opts.get("prune-all", False), "force": opts.get("force", False)}
        if sub == "apply":
            changes = r.apply_file(new, owner, allow_overlap=opts.get("allow-overlap", False),
                                   **how)
            if opts.get("full"):
                changes += r.apply(full=True)
        else:
            changes = r.diff(declare(r.desired(), new, owner, **how),
                             full=opts.get("full", False))
        _print_changes(changes, opts.get("json"))
    elif sub == "show":
        sys.stdout.write(fastjson.dumps(_relay(opts).show(), indent=2) + "\n")
    elif sub == "gc":
        changes = _relay(opts).gc()
        _print_changes(changes, opts.get("json"))
    elif sub == "attach":
        net, container, netns = _need(rest, 3, "attach NET CONTAINER NETNS [--ip IP]")
        fwd = [parse_publish(p, net, container) for p in opts.get("publish", [])]
        from .graph import attachment_from_dict
        attachment_from_dict({"network": net, "container": container, "netns": netns,
                              "ifname": opts.get("ifname") or "eth0",
                              "address": opts.get("ip", [])}, "net attach")
        att = _relay(opts).attach(net, container, netns, opts.get("ifname") or "eth0",
                                  opts.get("ip", []), forwards=fwd, owner="cli")
        sys.stdout.write(fastjson.dumps(att.to_dict()) + "\n" if opts.get("json")
                         else " ".join(map(str, att.addresses)) + "\n")
    elif sub == "detach":
        net, container = _need(rest, 2, "detach NET CONTAINER")
        from . import fields
        fields.name("net detach", net)
        fields.container("net detach", container)
        if opts.get("ifname"):
            fields.ifname("--ifname", opts["ifname"])
        _relay(opts).detach(net, container, opts.get("ifname"))
    elif sub == "hook":
        from .hooks import run_hook
        (what,) = _need(rest, 1, "hook attach|detach")
        return run_hook(what, opts.get("state"), opts.get("instance"))
    else:
        raise UsageError(f"unknown net subcommand {sub!r}; see `emergence net --help`")
    return 0


VERBS = [
    Verb("net", "container networks as a declarative graph (create, apply, diff, gc, ...)",
         "SUBCOMMAND [options] ...\n\n" + SUBCOMMANDS, OPTIONS, _net),
]
