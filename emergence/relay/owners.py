"""Ownership: what `net apply FILE` may add, change and prune.

Every node of the graph records its owner (graph.py): a graph file's
absolute path, `cli`, `cni`, `cni:ID` or `run:ID`.  A file applied again
replaces what it owns and nothing else: networks made by `net create`,
attachments made by a CNI ADD or `run --net`, and another file's nodes stay.
A file may take over a node owned by `cli` (state written before owners
existed loads as `cli`) by declaring the same key; a node of another file or
of a container is refused, naming its owner.

Removing a network that containers are attached to would cut them off
without a word: it is refused, naming them, unless forced.
"""

from ..errors import ConfigError
from .graph import Attachment, PortForward

CLI = "cli"
LISTED = 8      # containers named in a refusal before "and N more"


def attached(g, networks):
    """{network: sorted containers attached to it} for NETWORKS, the non-empty."""
    out = {}
    for a in g.attachments.values():
        if a.network in networks:
            out.setdefault(a.network, set()).add(a.container)
    return {n: sorted(c) for n, c in out.items()}


def _named(containers):
    cs = sorted(containers)
    return ", ".join(cs[:LISTED]) + (f" and {len(cs) - LISTED} more" if len(cs) > LISTED
                                     else "")


def refuse_attached(g, networks, what, fix="--force"):
    """ConfigError if containers are attached to any of NETWORKS."""
    busy = attached(g, set(networks))
    if busy:
        name = sorted(busy)[0]
        raise ConfigError(f"{what} network {name!r}: containers are attached to it "
                          f"({_named(busy[name])}); stop or detach them first, or pass {fix}")


def _drop_network(g, name):
    g.networks.pop(name, None)
    for k in [k for k, a in g.attachments.items() if a.network == name]:
        del g.attachments[k]
    for k in [k for k, p in g.forwards.items() if p.network == name]:
        del g.forwards[k]
    for k in [k for k, r in g.routes.items() if r.network == name]:
        del g.routes[k]
    for k in [k for k, p in g.peers.items() if p.network == name]:
        del g.peers[k]


def remove_network(g, name, force=False):
    from ..errors import EmergenceError
    if name not in g.networks:
        raise EmergenceError(f"no network {name!r}; see `emergence net ls`")
    if not force:
        refuse_attached(g, [name], "net rm:")
    _drop_network(g, name)


def declare(g, new, owner, prune_all=False, force=False):
    """G becomes what `net apply` of NEW (a file's graph, every node owned by
    OWNER) makes it.  PRUNE_ALL: the file's nodes replace every declared
    node (networks, routes, forwards and attachments of files and `cli`), as
    `net apply` did before owners; containers' attachments (cni:, run:) stay
    while their network does."""
    for key, _ in new.items():
        old = g.get(key)
        if old is not None and old.owner not in (owner, CLI) and not prune_all:
            raise ConfigError(f"{owner}: {key} belongs to {old.owner}; remove it there, "
                              "rename it here, or apply with --prune-all")

    def mine(node):
        if not prune_all:
            return node.owner == owner
        if isinstance(node, Attachment):        # declared ones, not `attach`'s
            return node.origin == "file"
        if isinstance(node, PortForward):       # those of declared attachments
            return not any(a.container == node.container and a.origin != "file"
                           for a in g.attachments.values() if a.network == node.network)
        return True

    gone = [n for n, net in g.networks.items() if mine(net) and n not in new.networks]
    if not force:
        # the file's own attachments go with its network; others' are refused
        others = {}
        for a in g.attachments.values():
            if a.network in gone and not mine(a):
                others.setdefault(a.network, set()).add(a.container)
        if others:
            name = sorted(others)[0]
            raise ConfigError(f"{owner} no longer declares network {name!r}, but containers "
                              f"are attached to it ({_named(others[name])}); stop or detach "
                              "them first, or apply with --force")
    for n in gone:
        _drop_network(g, n)
    old_atts = {}
    for k in [k for k, a in g.attachments.items() if mine(a)]:
        old_atts[k] = g.attachments.pop(k)
    for k in [k for k, p in g.forwards.items() if mine(p)]:
        del g.forwards[k]
    for k in [k for k, r in g.routes.items() if mine(r)]:
        del g.routes[k]
    g.networks.update(new.networks)
    g.routes.update(new.routes)
    for k, a in new.attachments.items():
        prev = old_atts.get(k) or g.attachments.get(k)
        if not a.addresses and prev is not None:   # keep the address IPAM gave it
            a.addresses = prev.addresses
        g.attachments[k] = a
    g.forwards.update(new.forwards)
    from .graph import validate
    validate(g)
    return g
