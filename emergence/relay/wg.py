"""`--encrypt wireguard`: a cluster network carried by kernel WireGuard
instead of plain VXLAN.  One WireGuard device per network; per peer one
WireGuard peer (its public key, its VTEP as the endpoint, its node subnet as
the allowed IPs) and one route — two kernel operations per join.  The
private key is made on the node (X25519, `cryptography`), kept in
STATE/overlay-NET.wg.key (0600, never sent anywhere); the public key goes
into the node's own record in etcd, which only that node may write.
"""

import base64
import hashlib
import os

from ..errors import EmergenceError
from .overlay import Dataplane, gateway_of

WIREGUARD_OVERHEAD = 80     # outer IPv6-sized 40 + UDP 8 + WireGuard 32 (IPv4 needs 60)
DEFAULT_WG_PORT = 51820


def key_path(state_dir, net):
    return os.path.join(state_dir, f"overlay-{net}.wg.key")


def keypair(state_dir, net):
    """(private, public) base64 keys; the private one made once, 0600."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    path = key_path(state_dir, net)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise EmergenceError(f"{path} is readable by others (mode "
                                 f"{st.st_mode & 0o777:o}); chmod 600 it or remove it")
        with open(path) as f:
            private = f.read().strip()
        key = X25519PrivateKey.from_private_bytes(base64.b64decode(private))
    except FileNotFoundError:
        key = X25519PrivateKey.generate()
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        private = base64.b64encode(raw).decode()
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        os.replace(tmp, path)
    except ValueError:
        raise EmergenceError(f"{path} is not a WireGuard private key; remove it") from None
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    return private, base64.b64encode(public).decode()


NO_WIREGUARD = ("this kernel has no WireGuard (`ip link add type wireguard`: Unknown device "
                "type); load the module (modprobe wireguard) or use a VXLAN network (without "
                "--encrypt)")


def require_wireguard(ipr=None):
    """One line unless this kernel can make a WireGuard device: a probe device
    is made and deleted at once.  Without the right to make links (not
    root) nothing can be told, and nothing is said."""
    from pyroute2 import IPRoute
    ipr = ipr or IPRoute()
    name = f"ewgprobe{os.getpid() % 10000000}"[:15]
    try:
        ipr.link("add", ifname=name, kind="wireguard")
    except Exception as e:
        code = getattr(e, "code", 0)
        if type(e).__name__ == "NetlinkError" and code in (95, 22, 19):
            raise EmergenceError(NO_WIREGUARD) from None
        if code in (1, 13):     # EPERM, EACCES: not ours to probe
            return
        raise
    try:
        ipr.link("del", ifname=name)
    except Exception:  # noqa: BLE001 - gone already
        pass


def valid_public(key):
    try:
        return isinstance(key, str) and len(base64.b64decode(key, validate=True)) == 32
    except ValueError:
        return False


class WireguardPlane(Dataplane):
    """The WireGuard device of network NET and its peers (same interface as
    Dataplane: peers are (subnet, endpoint, public key))."""

    def __init__(self, net, port, vtep, subnet, private_key, ipr=None):
        super().__init__(net, 0, port, vtep, subnet, None, ipr)
        self.ifname = "ewg-" + hashlib.sha256(net.encode()).hexdigest()[:10]
        self.private_key = private_key
        self._wg = None

    def wg(self):
        if self._wg is None:
            from pyroute2 import WireGuard
            self._wg = WireGuard()
        return self._wg

    def ensure(self, mtu):
        found = self.ipr.link_lookup(ifname=self.ifname)
        if not found:
            try:
                self.ipr.link("add", ifname=self.ifname, kind="wireguard")
            except Exception as e:
                if type(e).__name__ == "NetlinkError" and getattr(e, "code", 0) in (95, 22):
                    raise EmergenceError(NO_WIREGUARD) from None
                raise
            self.ops.append(("link-add", self.ifname))
            found = self.ipr.link_lookup(ifname=self.ifname)
        self.index = found[0]
        self.wg().set(self.ifname, listen_port=self.port, private_key=self.private_key)
        self.ipr.link("set", index=self.index, mtu=mtu, state="up")
        gw = gateway_of(self.subnet)
        have = {a.get_attr("IFA_ADDRESS")
                for a in self.ipr.get_addr(index=self.index, family=2)}
        if gw not in have:
            self.ipr.addr("add", index=self.index, address=gw, prefixlen=32)
        self.known = set()
        return self.index

    def _read_peers(self):
        routes = {f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
                  for r in self.ipr.get_routes(family=2, oif=self.index) if r["dst_len"]}
        self.known = {v for v in self.peers.values() if v[0] in routes}

    def add_peer(self, node, subnet, vtep, public):
        self.wg().set(self.ifname, peer={"public_key": public, "endpoint_addr": vtep,
                                         "endpoint_port": self.port,
                                         "allowed_ips": [str(subnet)],
                                         "replace_allowed_ips": True})
        self.ops.append(("wg-peer-add", node))
        self.ipr.route("replace", dst=str(subnet), oif=self.index)
        self.ops.append(("route-add", node))
        self.peers[node] = (str(subnet), vtep, public)

    def remove_peer(self, node):
        subnet, vtep, public = self.peers.pop(node)
        try:
            self.ipr.route("del", dst=subnet, oif=self.index)
        except Exception as e:
            if getattr(e, "code", None) not in (2, 3, 19):
                raise
        self.ops.append(("route-del", node))
        self.wg().set(self.ifname, peer={"public_key": public, "remove": True})
        self.ops.append(("wg-peer-del", node))
