"""Checks of single values at Relay's edges -- graph files, `net` arguments,
CNI configurations and CNI_* variables -- so bad input is refused in one
line before anything changes (a 19-byte interface name once reached the
kernel after its attachment was recorded).  Each check raises ConfigError
naming WHERE; callers map it to their own error (a CLI line, CNI code 4/7).
"""

import ipaddress

from ..errors import ConfigError

MAX_IFNAME = 15           # IFNAMSIZ - 1, in bytes
MAX_NAME = 64             # network names (also IPAM's file names)
MAX_CONTAINER = 256       # container ids (part of a key, not of a kernel name)
# prefix lengths a Relay subnet may have: a gateway and a container at least,
# and not so wide that it swallows the host's routes (/0 is the default route)
PREFIX = {4: (8, 30), 6: (48, 126)}
MTU_MIN = {4: 576, 6: 1280}


def bad(where, msg):
    raise ConfigError(f"{where}: {msg}")


def ifname(where, v):
    """An interface name the kernel takes: 1-15 bytes, not . or .., no /, :,
    whitespace or control characters (dev_valid_name, plus printable)."""
    if not isinstance(v, str) or not v:
        bad(where, f"{v!r} is not an interface name (a string of 1-{MAX_IFNAME} bytes)")
    n = len(v.encode())
    if n > MAX_IFNAME:
        bad(where, f"{v!r} is {n} bytes; an interface name is at most {MAX_IFNAME}")
    if v in (".", "..") or any(c in "/:" or c.isspace() or not c.isprintable() for c in v):
        bad(where, f"{v!r} is not an interface name (no /, :, spaces or control "
                   "characters; not . or ..)")
    return v


def name(where, v, what="a network's name", limit=MAX_NAME):
    """Letters, digits, - _ and (after the first) ., as CNI container ids are."""
    if not isinstance(v, str) or not v or len(v) > limit or not v[0].isascii() \
            or not v[0].isalnum() or not all(c.isascii() and (c.isalnum() or c in "-_.")
                                             for c in v) or ".." in v:
        bad(where, f"{v!r}: {what} is 1-{limit} letters, digits, -, _ or ., "
                   "starting with a letter or digit")
    return v


def container(where, v):
    return name(where, v, "a container id", MAX_CONTAINER)


def integer(where, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        bad(where, f"{v!r} must be an integer from {lo} to {hi}")
    return v


def port(where, v):
    return integer(where, v, 1, 65535)


def boolean(where, v):
    if not isinstance(v, bool):
        bad(where, f"{v!r} must be true or false")
    return v


def address(where, v):
    if not isinstance(v, str):
        bad(where, f"{v!r} is not an address (a string)")
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        bad(where, f"{v!r} is not an address")


def cidr(where, v):
    """A network in CIDR form, host bits zero."""
    if not isinstance(v, str):
        bad(where, f"{v!r} is not a CIDR (a string, e.g. 10.88.0.0/24)")
    try:
        return ipaddress.ip_network(v)
    except ValueError:
        bad(where, f"{v!r} is not a CIDR with its host bits zero (e.g. 10.88.0.0/24)")


def subnet(where, v):
    """A Relay subnet: never a default route, a sane prefix length."""
    n = cidr(where, v)
    if n.prefixlen == 0:
        bad(where, f"{n} is a default route, not a subnet; choose a private range "
                   "such as 10.88.0.0/24")
    lo, hi = PREFIX[n.version]
    if not lo <= n.prefixlen <= hi:
        bad(where, f"{n}: an IPv{n.version} subnet's prefix length is /{lo} to /{hi}")
    return n


def route_destination(where, v):
    """A static route's destination: never the default route (it would send
    all of the host's traffic into a container)."""
    n = cidr(where, v)
    if n.prefixlen == 0:
        bad(where, f"{n} is the default route; Relay routes only subnets behind a "
                   "container, never the host's default")
    return n


def mtu(where, v, versions=(4,)):
    lo = max(MTU_MIN[x] for x in versions) if versions else MTU_MIN[4]
    return integer(where, v, lo, 65535)
