"""The kernel side, in-process through pyroute2: one netlink socket for the
host's netns and one per container netns touched, targeted requests only
(a link is fetched by name with RTM_GETLINK, never found in a dump of every
interface), and every request recorded so tests and the bench can count them.

A socket in another netns is made on this thread: setns there, create it,
setns back (a socket keeps the netns it was made in) -- ~1 ms, where
pyroute2's own `netns=` forks a helper (~11 ms).  Where only an interface's
index or up flag is needed, an ioctl on a datagram socket of that netns
answers in microseconds, without decoding a whole RTM_NEWLINK.  The writes
of an attach and a detach go over a plain socket, encoded by nlmsg.py.

`ops` lists the changes made (("veth.add", name), ...); `lookups` counts the
read requests.  Both are the measure of incrementality.
"""

import errno
import os
import socket
import struct
import subprocess
import threading

from . import nlmsg

ENODEV, EEXIST, ENOENT, ESRCH = errno.ENODEV, errno.EEXIST, errno.ENOENT, errno.ESRCH
ALIAS_PREFIX = "emergence-relay:"


SIOCGIFFLAGS, SIOCGIFHWADDR, SIOCGIFINDEX = 0x8913, 0x8927, 0x8933
_libc = None


def _setns_fd(fd):
    global _libc
    import ctypes
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, 0x40000000) != 0:   # CLONE_NEWNET
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


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


class Rtnl:
    """A plain rtnetlink socket for the writes of an attach and a detach (the
    veth pair, address, link up, default route, deletion): nlmsg.py encodes
    each request, and the socket carries it and reads the ack -- ~0.1 ms a
    request and ~0.02 ms to open, where an IPRoute costs ~0.5 ms a request
    (its asyncio loop) and ~1 ms to make."""

    def __init__(self, path):
        self.sock = made_in(path, lambda: socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0))  # NETLINK_ROUTE
        self.sock.bind((0, 0))
        self.seq = 0

    def request(self, encode, *args):
        """Send the request ENCODE(seq, *ARGS) makes (an nlmsg function) and
        wait for its ack."""
        self.seq += 1
        self.exchange(encode(self.seq, *args))

    def exchange(self, data):
        """Send one encoded request and wait for its ack (the kernel's part)."""
        from pyroute2.netlink.exceptions import NetlinkError
        self.sock.send(data)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("IHHII", data, off)
                if kind == 2 and seq == self.seq:     # NLMSG_ERROR: the ack
                    err = struct.unpack_from("i", data, off + 16)[0]
                    if err:
                        raise NetlinkError(-err, os.strerror(-err))
                    return
                off += max(16, (length + 3) & ~3)

    def close(self):
        self.sock.close()


class Sockets:
    """A netns's netlink sockets (pyroute2's, and a plain one for writes) and
    ioctl socket, each made when first used."""

    def __init__(self, path):
        self.path = path
        self._nl = self._ioc = self._raw = None

    @property
    def raw(self):
        if self._raw is None:
            self._raw = Rtnl(self.path)
        return self._raw

    @property
    def nl(self):
        if self._nl is None:
            from pyroute2 import IPRoute
            self._nl = made_in(self.path, IPRoute)
        return self._nl

    @property
    def ioc(self):
        if self._ioc is None:
            self._ioc = made_in(self.path, lambda: socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC))
        return self._ioc

    def close(self):
        for s in (self._nl, self._ioc, self._raw):
            if s is not None:
                s.close()
        self._nl = self._ioc = self._raw = None


NO_SUCH_INDEX = 0x7FFFFFF0
TOO_LONG = "emergence-warm-up"   # > IFNAMSIZ - 1


def warm_up(scratch=None):
    """Send each kind of request Relay makes once, built so the kernel refuses
    it (no such interface; a name too long, refused before anything is
    made) and nothing changes: pyroute2 compiles its message
    tables on first use (~5 ms), and the node's planner calls this before it
    forks the workers that run `emergence-cni`, so no call pays for it."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    ipr = IPRoute()
    try:
        ipr.link("get", index=1)
        for request in (
                lambda: ipr.link("get", ifname="emergence-nx"),
                lambda: ipr.link("set", index=NO_SUCH_INDEX, state="up", mtu=1500),
                lambda: ipr.addr("add", index=NO_SUCH_INDEX, address="127.0.0.2", prefixlen=8),
                lambda: ipr.route("replace", oif=NO_SUCH_INDEX, gateway="127.0.0.2", family=2),
                lambda: ipr.link("del", ifname="emergence-nx")):
            try:
                request()
            except NetlinkError:
                pass
    finally:
        ipr.close()
    prefault()


def prefault(scratch=None):
    """The requests of an attach and a detach over the plain socket, each
    refused by the kernel (a name too long, no such interface): run once per
    forked worker of the planner, so the call's copy-on-write faults and
    first encodings are paid before a caller waits (~0.5 ms)."""
    from ipaddress import ip_address

    from pyroute2.netlink.exceptions import NetlinkError
    k = Kernel()
    try:
        raw = k._host_sockets().raw
        for request in (
                lambda: k.veth_add(TOO_LONG, NO_SUCH_INDEX, 1500, "", "/proc/self/ns/net",
                                   TOO_LONG, "02:00:00:00:00:01"),
                lambda: k.addr_add(NO_SUCH_INDEX, ip_address("127.0.0.2"), 8, raw),
                lambda: k.link_set(NO_SUCH_INDEX, raw, state="up"),
                lambda: k.route_add(raw, ip_address("127.0.0.2")),
                lambda: k.link_del("emergence-nx")):
            try:
                request()
            except (NetlinkError, OSError):
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
            return fcntl.ioctl(sk.ioc, request, struct.pack("16s24x", name.encode()))
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
        """The link called NAME as a dict (index, master, mtu, up, alias, kind), or None."""
        from pyroute2.netlink.exceptions import NetlinkError
        self.lookups += 1
        try:
            msg = (sock or self.host).link("get", ifname=name)[0]
        except NetlinkError as e:
            if e.code in (ENODEV, ENOENT):
                return None
            raise
        info = msg.get("IFLA_LINKINFO")
        return {"index": msg["index"], "master": msg.get("IFLA_MASTER"),
                "mtu": msg.get("IFLA_MTU"), "up": bool(msg["flags"] & 1),
                "alias": msg.get("IFLA_IFALIAS"), "mac": msg.get("IFLA_ADDRESS"),
                "kind": info.get("IFLA_INFO_KIND") if info else None}

    def addresses(self, index, sock=None):
        self.lookups += 1
        return {(m.get("IFA_ADDRESS"), m["prefixlen"])
                for m in (sock or self.host).addr("dump", index=index)}

    def default_routes(self, sock):
        self.lookups += 1
        out = set()
        for family in (2, 10):
            for m in sock.route("dump", family=family, table=254):
                if m["dst_len"] == 0 and m.get("RTA_GATEWAY"):
                    out.add(m.get("RTA_GATEWAY"))
        return out

    def host_route(self, dst):
        """The gateway of the route to DST (an ip_network) in the host's main table."""
        self.lookups += 1
        fam = 2 if dst.version == 4 else 10
        for m in self.host.route("dump", family=fam, table=254):
            if m["dst_len"] == dst.prefixlen and m.get("RTA_DST") == str(dst.network_address):
                return m.get("RTA_GATEWAY")
        return None

    # ---- changes -----------------------------------------------------------------

    def _op(self, *op):
        self.ops.append(op)

    def bridge_add(self, name, mtu, key):
        self._op("bridge.add", name)
        self.host.link("add", ifname=name, kind="bridge", mtu=mtu, state="up")
        index = self.get_link(name)["index"]
        # the kernel takes an alias on set, not on create: the mark that it is ours
        self._op("link.set", name, ("ifalias",))
        self.host.link("set", index=index, ifalias=ALIAS_PREFIX + key)
        return index

    def link_set(self, index, sock=None, label="", **kw):
        self._op("link.set", label or index, tuple(sorted(kw)))
        if isinstance(sock, Rtnl) and set(kw) == {"state"}:
            sock.request(nlmsg.link_up, index, kw["state"] == "up")
            return
        (sock or self.host).link("set", index=index, **kw)

    def link_del(self, name, sock=None):
        """Delete link NAME; False if it was already gone."""
        from pyroute2.netlink.exceptions import NetlinkError
        self._op("link.del", name)
        try:
            if sock is None:
                self._host_sockets().raw.request(nlmsg.link_del, name)
            else:
                sock.link("del", ifname=name)
        except NetlinkError as e:
            if e.code in (ENODEV, ENOENT):
                return False
            raise
        return True

    def addr_add(self, index, addr, prefixlen, sock=None, label=""):
        from pyroute2.netlink.exceptions import NetlinkError
        self._op("addr.add", label or index, str(addr))
        try:
            if isinstance(sock, Rtnl):
                sock.request(nlmsg.addr_add, index, addr, prefixlen)
            else:
                (sock or self.host).addr("add", index=index, address=str(addr),
                                         prefixlen=prefixlen,
                                         **({"flags": 0x80} if addr.version == 6 else {}))
        except NetlinkError as e:
            if e.code != EEXIST:
                raise

    def veth_add(self, host_name, master, mtu, key, netns, ifname, mac=None):
        """The pair in one request: the host end on the bridge and up, the
        other end created directly in the container's netns.  EEXIST when
        either name is taken.  Sent over the host's plain socket (no IPRoute
        on the attach path)."""
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._op("veth.add", host_name, ifname)
            self._host_sockets().raw.request(nlmsg.veth_add, host_name, mtu, master, ifname,
                                             fd, mtu, mac)
        finally:
            os.close(fd)

    def route_add(self, sock, gateway, dst=None, label=""):
        from pyroute2.netlink.exceptions import NetlinkError
        self._op("route.add", label, str(dst or "default"), str(gateway))
        kw = {"gateway": str(gateway), "family": 2 if gateway.version == 4 else 10}
        if dst is not None:
            kw["dst"] = str(dst)
        try:
            if isinstance(sock, Rtnl) and dst is None:
                sock.request(nlmsg.default_route, gateway)
            else:
                sock.route("replace", **kw)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise

    def route_del(self, dst, gateway):
        from pyroute2.netlink.exceptions import NetlinkError
        self._op("route.del", str(dst))
        try:
            self.host.route("del", dst=str(dst), gateway=str(gateway),
                            family=2 if dst.version == 4 else 10)
        except NetlinkError as e:
            if e.code not in (ESRCH, ENOENT):
                raise

    def sysctl(self, path, value):
        """Write /proc/sys/PATH in the host's netns if it differs."""
        full = os.path.join("/proc/sys", path)

        def rw():
            with open(full) as f:
                if f.read().strip() == value:
                    return False
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
        r = subprocess.run(cmd, capture_output=True)
        return r.stdout.decode() if r.returncode == 0 else None
