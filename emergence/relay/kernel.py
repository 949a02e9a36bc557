"""The kernel side, over plain rtnetlink sockets (nlmsg.py encodes and
decodes): one socket for the host's netns and one per container netns
touched, targeted requests only (a link is fetched by name with
RTM_GETLINK, never found in a dump of every interface), and every change
recorded so tests and the bench can count them.

A socket in another netns is made on this thread: setns there, create it,
setns back (a socket keeps the netns it was made in) -- microseconds, where
forking a helper into it costs ~11 ms.  Where only an interface's index,
flags or MAC are needed, an ioctl on a datagram socket of that netns
answers without decoding a whole RTM_NEWLINK.

Nothing here imports a netlink library, `socket` (whose enums pull in
`enum`) or `ctypes` (setns goes through `_ctypes` directly): a cold CNI
call, a fresh Python process, pays for what it uses and no more.

`ops` lists the changes made (("veth.add", name), ...); `lookups` counts the
read requests.  Both are the measure of incrementality.
"""

import _socket
import errno
import os
import struct

from . import nlmsg

ENODEV, EEXIST, ENOENT, ESRCH = errno.ENODEV, errno.EEXIST, errno.ENOENT, errno.ESRCH
ALIAS_PREFIX = "emergence-relay:"
MAX_MTU = 65535  # a bridge's (ETH_MAX_MTU), and the most relay.fields.mtu takes
SIOCGIFFLAGS, SIOCGIFHWADDR, SIOCGIFINDEX = 0x8913, 0x8927, 0x8933
CLONE_NEWNET = 0x40000000


class NetlinkError(OSError):
    """The kernel refused a request; CODE is the errno."""

    def __init__(self, code, msg=None):
        super().__init__(code, msg or os.strerror(code))

    @property
    def code(self):
        return self.errno


_setns_call = None


def _setns_fd(fd):
    """setns(FD, CLONE_NEWNET) through _ctypes' bare function pointer: the
    `ctypes` package builds dozens of classes on import (~4 ms a cold call)
    for this one libc call (os.setns arrives with Python 3.12)."""
    (_setns_call or _setns_function())(fd)


def _setns_function():
    """The call _setns_fd makes, built once (in a planner, before it forks:
    its workers then build no classes for it)."""
    global _setns_call
    if _setns_call is None:
        setns = getattr(os, "setns", None)
        if setns is not None:
            _setns_call = lambda fd: setns(fd, CLONE_NEWNET)   # noqa: E731
        else:
            import _ctypes

            class CInt(_ctypes._SimpleCData):
                _type_ = "i"

            class Func(_ctypes.CFuncPtr):
                _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
                _restype_ = CInt
                _argtypes_ = (CInt, CInt)
            fn = Func(_ctypes.dlsym(_ctypes.dlopen(None), "setns"))

            def call(fd):
                if fn(fd, CLONE_NEWNET) != 0:
                    e = _ctypes.get_errno()
                    raise OSError(e, os.strerror(e))
            _setns_call = call
    return _setns_call


def _setns(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


def made_in(path, make):
    """MAKE() called with this thread in the netns at PATH, then back: for
    sockets, which stay in the netns they were made in."""
    if path is None:
        return make()
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(path)
        try:
            return make()
        finally:
            _setns_fd(here)
    finally:
        os.close(here)


def _netlink(groups=0, rcvbuf=None):
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, 0)
    try:
        if rcvbuf:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, groups))     # NETLINK_ROUTE
    except BaseException:
        sock.close()
        raise
    return sock


class Rtnl:
    """A plain rtnetlink socket: nlmsg.py encodes each request, this carries
    it and reads the kernel's answer -- ~0.1 ms a request, ~0.02 ms to open."""

    def __init__(self, path):
        self.sock = made_in(path, _netlink)
        self.seq = 0

    def request(self, encode, *args, want=None):
        """Send the request ENCODE(seq, *ARGS) makes (an nlmsg function); wait
        for its ack, or (WANT: a message type) return the bodies of the
        messages of that type that answer it (a reply, or a dump's parts)."""
        self.seq += 1
        return self.exchange(encode(self.seq, *args), want)

    def exchange(self, data, want=None):
        """Send one encoded request and read the kernel's answer to it."""
        self.sock.send(data)
        out = []
        while True:
            for kind, flags, seq, body in nlmsg.messages(self.sock.recv(65536)):
                if seq != self.seq:
                    continue
                if kind == nlmsg.NLMSG_ERROR:
                    err = struct.unpack_from("i", body)[0]
                    if err:
                        raise NetlinkError(-err)
                    return out
                if kind == nlmsg.NLMSG_DONE:
                    return out
                if kind == want:
                    out.append(body)
                    if not flags & nlmsg.NLM_F_MULTI:
                        return out

    def close(self):
        self.sock.close()


class Events:
    """The rtnetlink events of a netns (links, addresses, routes), decoded:
    ("link", new, fields), ("addr", new, fields), ("route", new, fields).
    recv raises OSError(ENOBUFS) when the kernel dropped some."""

    KINDS = {nlmsg.RTM_NEWLINK: ("link", True), nlmsg.RTM_DELLINK: ("link", False),
             nlmsg.RTM_NEWADDR: ("addr", True), nlmsg.RTM_DELADDR: ("addr", False),
             nlmsg.RTM_NEWROUTE: ("route", True), nlmsg.RTM_DELROUTE: ("route", False),
             nlmsg.RTM_DELNEIGH: ("neigh", False)}  # a peer's neighbour or FDB entry
    DECODE = {"link": nlmsg.decode_link, "addr": nlmsg.decode_addr,
              "route": nlmsg.decode_route}

    def __init__(self, path=None, rcvbuf=None, neighbours=False):
        """NEIGHBOURS: also the deletions of neighbour and FDB entries (a
        cluster network's peers, peers.py); off, their group is not joined."""
        groups = nlmsg.EVENT_GROUPS | (nlmsg.RTMGRP_NEIGH if neighbours else 0)
        self.sock = made_in(path, lambda: _netlink(groups, rcvbuf))
        if neighbours:
            from .peers import decode_neigh
            self.DECODE = dict(self.DECODE, neigh=decode_neigh)

    def get(self):
        out = []
        for kind, _, _, body in nlmsg.messages(self.sock.recv(1 << 17)):
            what = self.KINDS.get(kind)
            if what is not None:
                out.append((what[0], what[1], self.DECODE[what[0]](body)))
        return out

    def close(self):
        self.sock.close()


class Sockets:
    """A netns's rtnetlink socket and ioctl socket, each made when first used."""

    def __init__(self, path):
        self.path = path
        self._ioc = self._raw = None

    @property
    def raw(self):
        if self._raw is None:
            self._raw = Rtnl(self.path)
        return self._raw

    nl = raw

    @property
    def ioc(self):
        if self._ioc is None:
            self._ioc = made_in(self.path, lambda: _socket.socket(
                _socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC))
        return self._ioc

    def close(self):
        for s in (self._ioc, self._raw):
            if s is not None:
                s.close()
        self._ioc = self._raw = None


NO_SUCH_INDEX = 0x7FFFFFF0
TOO_LONG = "emergence-warm-up"   # > IFNAMSIZ - 1


def warm_up(scratch=None):
    """In the node's planner, before it forks the workers that run
    `emergence-cni`: every kind of request once, refused (see prefault), and
    the setns call built."""
    _setns_function()
    prefault()


def prefault(scratch=None):
    """The requests of an attach and a detach, and the reads of a check, each
    refused by the kernel (a name too long, no such interface) or reading
    nothing of note: run once per forked worker of the planner, so the
    call's copy-on-write faults and first encodings are paid before a caller
    waits (~0.5 ms)."""
    from ipaddress import ip_address, ip_network
    k = Kernel()
    try:
        raw = k._host_sockets().raw
        for request in (
                lambda: k.veth_add(TOO_LONG, NO_SUCH_INDEX, 1500, "", "/proc/self/ns/net",
                                   TOO_LONG, "02:00:00:00:00:01"),
                lambda: k.addr_add(NO_SUCH_INDEX, ip_address("127.0.0.2"), 8, raw),
                lambda: k.link_set(NO_SUCH_INDEX, raw, state="up"),
                lambda: k.link_set(NO_SUCH_INDEX, raw, mtu=1500),
                lambda: k.route_add(raw, ip_address("127.0.0.2")),
                lambda: k.get_link(TOO_LONG),
                lambda: k.host_route(ip_network("127.255.255.0/24")),
                lambda: k.link_del("emergence-nx")):
            try:
                request()
            except OSError:
                pass
    finally:
        k.close()


def netns_path(ns):
    """A netns given as a name (in /var/run/netns) or a path."""
    if ns is None or "/" in ns:
        return ns
    return os.path.join("/var/run/netns", ns)


def in_netns(path, fn):
    """FN() run in the netns at PATH, on a thread of its own (netns is per
    thread), so the caller's netns never changes."""
    if path is None:
        return fn()
    box = {}

    def body():
        try:
            _setns(path)
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e
    import threading
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def netns_identity(path):
    """(device, inode) of a netns, or None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


class Kernel:
    def __init__(self, host_netns=None):
        self.host_netns = netns_path(host_netns)
        self._host = None
        self._ns = {}
        self.ops = []
        self.lookups = 0

    # ---- sockets ---------------------------------------------------------------

    @property
    def host(self):
        return self._host_sockets().nl

    def _host_sockets(self):
        if self._host is None:
            self._host = Sockets(self.host_netns)
        return self._host

    def _sockets(self, path):
        s = self._ns.get(path)
        if s is None:
            s = self._ns[path] = Sockets(path)
        return s

    def ns(self, path):
        """The netlink socket of the netns at PATH (kept until forget_ns)."""
        return self._sockets(path).nl

    def raw(self, path):
        """The plain rtnetlink socket of the netns at PATH, for addr_add,
        link_set and route_add (kept until forget_ns)."""
        return self._sockets(path).raw

    def forget_ns(self, path):
        s = self._ns.pop(path, None)
        if s is not None:
            s.close()

    def close(self):
        for s in list(self._ns.values()):
            s.close()
        self._ns.clear()
        if self._host is not None:
            self._host.close()
            self._host = None

    # ---- reads (one targeted request each) --------------------------------------

    def _ifreq(self, request, name, netns):
        """An ioctl about interface NAME; None if there is none."""
        sk = self._sockets(netns) if netns else self._host_sockets()
        self.lookups += 1
        import fcntl
        try:
            return fcntl.ioctl(sk.ioc.fileno(), request, struct.pack("16s24x", name.encode()))
        except OSError as e:
            if e.errno == ENODEV:
                return None
            raise

    def index(self, name, netns=None):
        """The index of interface NAME (in the netns at NETNS), or None."""
        r = self._ifreq(SIOCGIFINDEX, name, netns)
        return None if r is None else struct.unpack_from("i", r, 16)[0]

    def mac(self, name, netns=None):
        """The MAC address of interface NAME as aa:bb:..., or None."""
        r = self._ifreq(SIOCGIFHWADDR, name, netns)
        return None if r is None else ":".join(f"{b:02x}" for b in r[18:24])

    def is_up(self, name, netns=None):
        """Whether interface NAME is up; None if there is none."""
        r = self._ifreq(SIOCGIFFLAGS, name, netns)
        return None if r is None else bool(struct.unpack_from("H", r, 16)[0] & 1)

    def get_link(self, name, sock=None):
        """The link called NAME as a dict (index, master, mtu, up, alias, mac,
        kind), or None."""
        self.lookups += 1
        try:
            got = (sock or self.host).request(nlmsg.link_get, name, want=nlmsg.RTM_NEWLINK)
        except NetlinkError as e:
            if e.code in (ENODEV, ENOENT):
                return None
            raise
        if not got:
            return None
        d = nlmsg.decode_link(got[0])
        return {"index": d["index"], "master": d["master"], "mtu": d["mtu"],
                "up": bool(d["flags"] & 1), "alias": d["alias"], "mac": d["mac"],
                "kind": d["kind"]}

    def addresses(self, index, sock=None):
        """{(address, prefixlen)} of link INDEX."""
        self.lookups += 1
        out = set()
        for body in (sock or self.host).request(nlmsg.addr_dump, want=nlmsg.RTM_NEWADDR):
            d = nlmsg.decode_addr(body)
            if d["index"] == index:
                out.add((d["address"], d["prefixlen"]))
        return out

    def _routes(self, sock, family):
        for body in sock.request(nlmsg.route_dump, family, want=nlmsg.RTM_NEWROUTE):
            d = nlmsg.decode_route(body)
            if d["table"] == nlmsg.RT_TABLE_MAIN:
                yield d

    def default_routes(self, sock):
        """The gateways of the default routes in the main table."""
        self.lookups += 1
        return {d["gateway"] for family in (nlmsg.AF_INET, nlmsg.AF_INET6)
                for d in self._routes(sock, family) if d["dst_len"] == 0 and d["gateway"]}

    def host_route(self, dst):
        """The gateway of the route to DST (an ip_network) in the host's main table."""
        self.lookups += 1
        fam = nlmsg.AF_INET if dst.version == 4 else nlmsg.AF_INET6
        for d in self._routes(self.host, fam):
            if d["dst_len"] == dst.prefixlen and d["dst"] == str(dst.network_address):
                return d["gateway"]
        return None

    # ---- changes -----------------------------------------------------------------

    def _op(self, *op):
        self.ops.append(op)

    def bridge_add(self, name, mtu, key):
        """A bridge with a MAC of its own, derived from KEY: without one it
        takes the lowest of its ports', so the gateway's MAC changes when a
        container with a lower one joins (stale neighbour entries in every
        container) and each new port makes the kernel recompute it.

        No multicast snooping: with it, each port coming up re-arms the
        multicast timers of every port (~0.3 ms an attach at 1,000 ports),
        and it buys nothing here: no querier runs, so groups are flooded
        anyway, and containers of an IPv4 network send no multicast of their
        own (see Kernel.veth_add and execute.py).

        Its MTU is set after it is made (made with another): a bridge whose
        MTU was set keeps it, where one only made with it is lowered to its
        smallest port's on every port's add and removal, a walk of all its
        ports (~30 us an attach at 900).  So the network's MTU is the
        bridge's, whatever else is put on it."""
        from .sha import sha256
        mac = "02:" + ":".join(f"{b:02x}" for b in sha256(key.encode()).digest()[:5])
        self._op("bridge.add", name)
        self.host.request(nlmsg.bridge_add, name, mtu + 1 if mtu < MAX_MTU else mtu - 1, mac)
        index = self.get_link(name)["index"]
        # the kernel takes an alias on set, not on create: the mark that it is ours
        self._op("link.set", name, ("ifalias", "mtu"))
        self.host.request(nlmsg.link_set, index, None, mtu, ALIAS_PREFIX + key)
        return index

    def link_set(self, index, sock=None, label="", state=None, mtu=None, ifalias=None):
        kw = {"state": state, "mtu": mtu, "ifalias": ifalias}
        self._op("link.set", label or index, tuple(sorted(k for k, v in kw.items()
                                                          if v is not None)))
        sock = sock or self.host
        if mtu is None and ifalias is None:
            sock.request(nlmsg.link_up, index, state == "up")
        else:
            sock.request(nlmsg.link_set, index, state, mtu, ifalias)

    def link_del(self, name, sock=None):
        """Delete link NAME; False if it was already gone."""
        self._op("link.del", name)
        try:
            (sock or self.host).request(nlmsg.link_del, name)
        except NetlinkError as e:
            if e.code in (ENODEV, ENOENT):
                return False
            raise
        return True

    def addr_add(self, index, addr, prefixlen, sock=None, label=""):
        self._op("addr.add", label or index, str(addr))
        try:
            (sock or self.host).request(nlmsg.addr_add, index, addr, prefixlen)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise

    def veth_add(self, host_name, master, mtu, key, netns, ifname, mac=None):
        """The pair in one request: the host end on the bridge and up, the
        other end created directly in the container's netns.  EEXIST when
        either name is taken."""
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._op("veth.add", host_name, ifname)
            self.host.request(nlmsg.veth_add, host_name, mtu, master, ifname, fd, mtu, mac)
        finally:
            os.close(fd)
        # a bridge port needs no IPv6 of its own: with it, each port kept a
        # multicast route (and, once its peer was up, a link-local address
        # and its route), so every port's change walked routes of all ports
        # (the bridge still forwards IPv6 between its ports); none where the
        # kernel has no IPv6
        self.sysctl(f"net/ipv6/conf/{host_name}/disable_ipv6", "1", missing_ok=True)

    def no_ipv6_addresses(self, name, sock=None):
        """Link NAME (down yet) makes no IPv6 address of its own; where that
        cannot be had (no IPv6 in this kernel) it just keeps making them."""
        self._op("link.set", name, ("addr_gen_mode",))
        try:
            (sock or self.host).request(nlmsg.link_no_ipv6_addresses, name)
        except NetlinkError:
            pass

    def route_add(self, sock, gateway, dst=None, label=""):
        """The route to DST (None: default) via GATEWAY, created or replaced."""
        self._op("route.add", label, str(dst or "default"), str(gateway))
        try:
            sock.request(nlmsg.route, gateway, dst)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise

    def route_del(self, dst, gateway):
        self._op("route.del", str(dst))
        try:
            self.host.request(nlmsg.route, gateway, dst, True)
        except NetlinkError as e:
            if e.code not in (ESRCH, ENOENT):
                raise

    def sysctl(self, path, value, missing_ok=False):
        """Write /proc/sys/PATH in the host's netns if it differs (MISSING_OK:
        nothing if there is no such setting)."""
        full = os.path.join("/proc/sys", path)

        def rw():
            try:
                with open(full) as f:
                    if f.read().strip() == value:
                        return False
            except FileNotFoundError:
                if missing_ok:
                    return False
                raise
            with open(full, "w") as f:
                f.write(value)
            return True
        if in_netns(self.host_netns, rw):
            self._op("sysctl", path, value)

    def nft(self, script):
        """Run an nft script (one transaction) in the host's netns."""
        self._op("nft.transaction")
        cmd = ["nft", "-f", "-"]
        if self.host_netns:
            cmd = ["nsenter", f"--net={self.host_netns}"] + cmd
        import subprocess
        r = subprocess.run(cmd, input=script.encode(), capture_output=True)
        if r.returncode != 0:
            from ..errors import EmergenceError
            raise EmergenceError("nft refused the ruleset: " + r.stderr.decode().strip()
                                 .splitlines()[0])

    def nft_read(self, args):
        cmd = ["nft"] + args
        if self.host_netns:
            cmd = ["nsenter", f"--net={self.host_netns}"] + cmd
        self.lookups += 1
        import subprocess
        r = subprocess.run(cmd, capture_output=True)
        return r.stdout.decode() if r.returncode == 0 else None
