"""Subnet safety: a new Relay subnet or static route must not cover what the
host already routes -- an address of one of its interfaces, or a route of its
main table -- or the host's own traffic would go into a bridge (a subnet
overlapping the uplink's breaks the host's routing).  The host is only read
(two netlink dumps, when a network or route is added or remade, never on an
attach).  Relay's own bridges are left out; another instance's are not, so
two Relays never share a subnet.  `--allow-overlap` skips the check.
"""

import ipaddress


def host_networks(kernel, ours):
    """[(ip_network, what)] the host's netns holds: interface addresses (with
    their prefix) and main-table unicast routes, except default routes and
    those on the interfaces named in OURS (three dumps over Relay's own
    rtnetlink socket, nlmsg.py)."""
    from . import nlmsg
    sock = kernel.host
    names = {d["index"]: d["ifname"] for d in (
        nlmsg.decode_link(b) for b in sock.request(nlmsg.link_dump, want=nlmsg.RTM_NEWLINK))}
    out = []
    for body in sock.request(nlmsg.addr_dump, want=nlmsg.RTM_NEWADDR):
        d = nlmsg.decode_addr(body)
        name = names.get(d["index"], str(d["index"]))
        if name in ours or d["address"] is None:
            continue
        addr, plen = d["address"], d["prefixlen"]
        net = ipaddress.ip_interface(f"{addr}/{plen}").network
        out.append((net, f"address {addr}/{plen} of host interface {name}"))
    for family in (nlmsg.AF_INET, nlmsg.AF_INET6):
        for body in sock.request(nlmsg.route_dump, family, want=nlmsg.RTM_NEWROUTE):
            d = nlmsg.decode_route(body)
            if d["table"] != nlmsg.RT_TABLE_MAIN or d["type"] != nlmsg.RTN_UNICAST \
                    or d["dst_len"] == 0:
                continue
            oif = names.get(d["oif"])
            if oif in ours:
                continue
            dst = ipaddress.ip_network(f"{d['dst']}/{d['dst_len']}", strict=False)
            via = d["gateway"]
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
