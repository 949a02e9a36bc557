"""NAT, port forwards and isolation as one nftables table per instance,
`inet emergence` for the default one, `inet emergence-NAME` for another.

Why nftables: one table that Emergence owns outright and replaces atomically
(add, delete, define again, all in one `nft -f` transaction), so it never
edits rules it did not write and no half-applied state is visible.  iptables
would mean editing shared chains rule by rule.  Why the `nft` executable and
not libnftables' Python binding: Debian ships the binding only for its own
python3 (python3-nftables), not on PyPI, and a transaction happens once per
apply, off the per-attachment path, so one exec per apply costs little.

The ruleset's digest is kept as the table's comment: a full compare reads
one line to know whether the kernel still holds what was applied.
"""

from .sha import sha256

TABLE = "emergence"   # the default instance's (instance.table)


def ruleset(graph, dead=()):
    """The table's body for GRAPH (attachments carry their addresses), without
    the attachments DEAD.  Attachments are looked at only when some port is
    forwarded, and then only to find the forwarded containers'."""
    post, fwd, pre = [], [], []
    published = {pf.network for pf in graph.forwards.values()}
    nets = sorted(graph.networks.values(), key=lambda n: n.name)
    for net in nets:
        br = net.bridge
        if net.nat:
            for s in net.subnets:
                fam = "ip" if s.version == 4 else "ip6"
                # a cluster network's peers see the container's own address
                peers = f"{fam} daddr != {net.cluster_subnet} " if net.cluster_subnet else ""
                post.append(f'{fam} saddr {s} {peers}oifname != "{br}" masquerade')
        # port forwards from loopback reach the bridge with a 127/8 source
        post.append(f'ip saddr 127.0.0.0/8 oifname "{br}" masquerade')
        if net.name in published:
            # hairpin: a container of the bridge to a published port that leads
            # back into it; the reply must return through the host, to be un-NAT'd
            for s in net.subnets:
                fam = "ip" if s.version == 4 else "ip6"
                post.append(f'{fam} saddr {s} oifname "{br}" ct status dnat masquerade')
    for a in nets:
        for b in nets:
            if a is not b and (a.isolated or b.isolated):
                fwd.append(f'iifname "{a.bridge}" oifname "{b.bridge}" drop')
    wanted = {(pf.network, pf.container) for pf in graph.forwards.values()}
    by_container = {}
    for key, att in graph.attachments.items() if wanted else ():
        nc = (att.network, att.container)
        if nc in wanted and key not in dead and (nc not in by_container
                                                 or key < by_container[nc].key):
            by_container[nc] = att
    for pf in sorted(graph.forwards.values(), key=lambda x: x.key):
        att = by_container.get((pf.network, pf.container))
        if att is None:
            continue
        for addr in att.addresses:
            fam = "ip" if addr.version == 4 else "ip6"
            if pf.host_address is not None and pf.host_address.version != addr.version:
                continue
            match = f"{fam} daddr {pf.host_address} " if pf.host_address else \
                f"meta nfproto {'ipv4' if addr.version == 4 else 'ipv6'} fib daddr type local "
            to = f"{addr}:{pf.container_port}" if addr.version == 4 else \
                f"[{addr}]:{pf.container_port}"
            pre.append(f"{match}{pf.proto} dport {pf.host_port} dnat {fam} to {to}")
    body = []
    if pre:
        body.append("chain prerouting {\n type nat hook prerouting priority dstnat; "
                    "policy accept;\n" + "".join(f" {r}\n" for r in pre) + "}")
        body.append("chain output {\n type nat hook output priority -100; policy accept;\n"
                    + "".join(f" {r}\n" for r in pre) + "}")
    if post:
        body.append("chain postrouting {\n type nat hook postrouting priority srcnat; "
                    "policy accept;\n" + "".join(f" {r}\n" for r in post) + "}")
    if fwd:
        body.append("chain forward {\n type filter hook forward priority filter; "
                    "policy accept;\n" + "".join(f" {r}\n" for r in fwd) + "}")
    return "\n".join(body)


def digest(body):
    return sha256(body.encode()).hexdigest()[:16]


def script(body, table=TABLE):
    """One transaction: make sure the table exists, drop it, define it anew
    (or leave it dropped when there is nothing to put in it).  Only TABLE:
    another instance's table is never named."""
    out = f"table inet {table}\ndelete table inet {table}\n"
    if body:
        out += f'table inet {table} {{\ncomment "relay:{digest(body)}"\n{body}\n}}\n'
    return out


def installed_digest(kernel, table=TABLE):
    """The digest the kernel's table carries ('' when there is no table)."""
    out = kernel.nft_read(["list", "table", "inet", table])
    if not out:
        return ""
    for line in out.splitlines():
        line = line.strip()
        if line.startswith('comment "relay:'):
            return line.split(":", 1)[1].rstrip('"')
    return "?"
