"""Subnet safety: a new Relay subnet or static route must not cover what the
host already routes -- an address of one of its interfaces, or a route of its
main table -- or the host's own traffic would go into a bridge (a subnet
overlapping the uplink's breaks the host's routing).  The host is only read
(two netlink dumps, when a network or route is added or remade, never on an
attach).  Relay's own bridges are left out; another instance's are not, so
two Relays never share a subnet.  `--allow-overlap` skips the check.
"""

import ipaddress

RTN_UNICAST = 1


def host_networks(kernel, ours):
    """[(ip_network, what)] the host's netns holds: interface addresses (with
    their prefix) and main-table unicast routes, except default routes and
    those on the interfaces named in OURS."""
    ipr = kernel.host
    names = {m["index"]: m.get("IFLA_IFNAME") for m in ipr.link("dump")}
    out = []
    for m in ipr.addr("dump"):
        name = names.get(m["index"], str(m["index"]))
        if name in ours:
            continue
        addr = m.get("IFA_ADDRESS") or m.get("IFA_LOCAL")
        if addr is None:
            continue
        net = ipaddress.ip_interface(f"{addr}/{m['prefixlen']}").network
        out.append((net, f"address {addr}/{m['prefixlen']} of host interface {name}"))
    for family in (2, 10):
        for m in ipr.route("dump", family=family, table=254):
            if m["type"] != RTN_UNICAST or m["dst_len"] == 0:
                continue
            oif = names.get(m.get("RTA_OIF"))
            if oif in ours:
                continue
            dst = ipaddress.ip_network(f"{m.get('RTA_DST')}/{m['dst_len']}", strict=False)
            via = m.get("RTA_GATEWAY")
            out.append((dst, f"route {dst}" + (f" via {via}" if via else "")
                        + (f" dev {oif}" if oif else "") + " of the host"))
    kernel.lookups += 3
    return out


def collision(subnet, host):
    """What of HOST (host_networks) SUBNET overlaps, or None."""
    for net, what in host:
        if net.version == subnet.version and net.overlaps(subnet):
            return what
    return None
