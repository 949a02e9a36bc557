"""A node's cluster directory, `<state_dir>/cluster/` (0700):

  ca.pem            the cluster CA certificate (every node)
  ca.key            the CA's private key (0600; only where `cluster init` ran)
  node.pem          this node's certificate (name and roles in its SANs)
  node.key          its Ed25519 key (0600): TLS to etcd, and signing tasks
  etcd.password     this node's etcd user's password (0600)
  etcd-root.password  etcd's root user (0600; CA host only)
  cluster.json      etcd endpoints, key prefix, this node's name and roles
  tokens.json       join tokens not yet used (0600; CA host only)
"""

import json
import os

from ..errors import EmergenceError

DEFAULT_DIR = "/var/lib/emergence/cluster"


def default_dir():
    return os.environ.get("EMERGENCE_CLUSTER_DIR") or DEFAULT_DIR


def make_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write(path, data, mode=0o600):
    """Write DATA (bytes or str) atomically with MODE from the first byte."""
    if isinstance(data, str):
        data = data.encode()
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise EmergenceError(f"no {what} at {path}; run `emergence cluster init` on the first "
                             "node or `emergence cluster join --token-file FILE` on this one")
    except OSError as e:
        raise EmergenceError(f"cannot read {what} {path}: {e.strerror}")


class Material:
    """What a node holds to act in the cluster: paths, and the parts loaded."""

    def __init__(self, path):
        self.dir = path
        self.ca = os.path.join(path, "ca.pem")
        self.ca_key = os.path.join(path, "ca.key")
        self.cert = os.path.join(path, "node.pem")
        self.key = os.path.join(path, "node.key")
        self.password_file = os.path.join(path, "etcd.password")
        self.root_password_file = os.path.join(path, "etcd-root.password")
        self.info_file = os.path.join(path, "cluster.json")
        self.tokens = os.path.join(path, "tokens.json")
        self._info = None

    def exists(self):
        return all(os.path.exists(p) for p in (self.ca, self.cert, self.key,
                                                self.password_file))

    def is_ca(self):
        return os.path.exists(self.ca_key)

    def check(self):
        """One clear line if a part is missing, else self."""
        for p, what in ((self.ca, "cluster CA certificate"), (self.cert, "node certificate"),
                        (self.key, "node key"), (self.password_file, "etcd password")):
            if not os.path.exists(p):
                read(p, what)
        return self

    @property
    def info(self):
        if self._info is None:
            try:
                self._info = json.loads(read(self.info_file, "cluster description"))
            except ValueError:
                raise EmergenceError(f"{self.info_file} is not JSON; join again")
        return self._info

    def save_info(self, **info):
        write(self.info_file, json.dumps(info, indent=1, sort_keys=True) + "\n", 0o644)
        self._info = info

    def user(self):
        """(etcd user, password) of this node."""
        return self.info["name"], read(self.password_file, "etcd password").decode().strip()

    def root_user(self):
        return "root", read(self.root_password_file, "etcd root password").decode().strip()

    def ca_cert(self):
        from .pki import load_cert
        return load_cert(read(self.ca, "cluster CA certificate"))

    def node_cert_pem(self):
        return read(self.cert, "node certificate").decode()

    def node_key(self):
        from .pki import load_key
        return load_key(read(self.key, "node key"))
