"""Making a cluster: `cluster init` (a CA, this node's certificate, a TLS
etcd with RBAC) and `cluster issue` (a certificate bundle for another node,
made on the CA host and carried over by hand)."""

import json
import os
import socket
import sys

from ..errors import EmergenceError
from . import files, pki, rbac

DEFAULT_PREFIX = "/emergence/"


def _addresses(also_listen):
    return ["127.0.0.1", "::1", "localhost", socket.gethostname()] + list(also_listen)


def make_ca_and_node(material, name, roles=("command", "worker"), also_listen=()):
    """The CA (kept if there is one) and this node's certificate and key."""
    files.make_dir(material.dir)
    if material.is_ca():
        ca_key = pki.load_key(files.read(material.ca_key, "CA key"))
        ca_cert = material.ca_cert()
    else:
        ca_key, ca_cert = pki.make_ca()
        files.write(material.ca_key, pki.key_pem(ca_key))
        files.write(material.ca, pki.cert_pem(ca_cert), 0o644)
    key = pki.new_key()
    cert = pki.issue(ca_key, ca_cert, key.public_key(), name, roles,
                     _addresses(also_listen))
    files.write(material.key, pki.key_pem(key))
    files.write(material.cert, pki.cert_pem(cert), 0o644)
    return ca_key, ca_cert


def init(cluster_dir, data_dir, name=None, prefix=DEFAULT_PREFIX, client_port=None,
         peer_port=None, log=None, detach=False, also_listen=()):
    """Start a TLS etcd with RBAC for a new cluster (or restart this one's):
    returns (process, https URL, Material)."""
    procs, urls, m = init_members(cluster_dir, data_dir, 1, name, prefix, client_port,
                                  peer_port, log, detach, also_listen)
    return procs[0], urls[0], m


def member_layout(data_dir, members, client_port=None, peer_port=None):
    """Names, data dirs and ports of MEMBERS etcd members on this host: one is
    `emergence` in DATA_DIR; several are emergence-1.. in DATA_DIR/member-N,
    on CLIENT_PORT, +2, +4.. with each peer port one above (2379/2380,
    2381/2382, ..), or ports the kernel picks."""
    if members == 1:
        return ["emergence"], [data_dir], [client_port], [peer_port]
    names = [f"emergence-{i + 1}" for i in range(members)]
    dirs = [os.path.join(data_dir, f"member-{i + 1}") for i in range(members)]
    clients = [client_port + 2 * i if client_port else None for i in range(members)]
    peers = [client_port + 2 * i + 1 if client_port else None for i in range(members)]
    return names, dirs, clients, peers


def init_members(cluster_dir, data_dir, members=3, name=None, prefix=DEFAULT_PREFIX,
                 client_port=None, peer_port=None, log=None, detach=False, also_listen=()):
    """`init` with MEMBERS etcd members on this host (each its own process,
    data dir and ports, all with this node's certificate and the cluster
    CA): returns ([process], [https URL], Material); cluster.json lists every
    member, so clients fail over from one to the next."""
    from . import etcd
    from .client import Admin
    if not isinstance(members, int) or not 1 <= members <= 9 or members % 2 == 0:
        raise EmergenceError(f"--members {members}: use 1, 3, 5, 7 or 9 (an odd number "
                             "keeps a majority when one fails)")
    m = files.Material(cluster_dir)
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    fresh = not (m.is_ca() and os.path.exists(m.root_password_file))
    if fresh:
        name = pki.check_name(name or socket.gethostname())
        make_ca_and_node(m, name, also_listen=also_listen)
        files.write(m.password_file, rbac.new_password() + "\n")
        files.write(m.root_password_file, rbac.new_password() + "\n")
    names, dirs, clients, peers = member_layout(data_dir, members, client_port, peer_port)
    procs, urls = etcd.start_members(dirs, names, clients, peers, log=log, detach=detach,
                                     also_listen=also_listen, material=m)
    try:
        if fresh:
            m.save_info(endpoints=urls, prefix=prefix, name=name,
                        roles=["command", "worker"])
            admin = Admin(urls, m, user=(None, None))  # auth is not on yet: no login
            rbac.setup(admin, prefix, m.root_user()[1])
            root = Admin(urls, m, user=m.root_user())
            rbac.add_node(root, prefix, name, ["command", "worker"], m.user()[1])
        elif m.info.get("endpoints") != urls:
            m.save_info(**dict(m.info, endpoints=urls))
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    return procs, urls, m


def issue(cluster_dir, name, roles, addresses=()):
    """A bundle (JSON: certificate, key, CA, etcd password, endpoints,
    prefix) for node NAME, registered in etcd; the CA host only."""
    from .client import Admin
    m = files.Material(cluster_dir)
    if not m.is_ca():
        raise EmergenceError(f"no CA key in {cluster_dir}: issue certificates on the node "
                             "that ran `emergence cluster init`")
    roles = pki.check_roles(roles)
    name = pki.check_name(name)
    ca_key = pki.load_key(files.read(m.ca_key, "CA key"))
    ca_cert = m.ca_cert()
    key = pki.new_key()
    cert = pki.issue(ca_key, ca_cert, key.public_key(), name, roles, addresses)
    password = rbac.new_password()
    info = m.info
    rbac.add_node(Admin(info["endpoints"], m, user=m.root_user()), info["prefix"],
                  name, roles, password)
    return {"name": name, "roles": roles, "cert": pki.cert_pem(cert).decode(),
            "key": pki.key_pem(key).decode(), "ca": pki.cert_pem(ca_cert).decode(),
            "etcd_password": password, "endpoints": info["endpoints"],
            "prefix": info["prefix"]}


def install(cluster_dir, bundle, key_pem=None):
    """Write a bundle (from issue() or the join route) as this node's
    cluster directory."""
    m = files.Material(cluster_dir)
    files.make_dir(m.dir)
    files.write(m.ca, bundle["ca"], 0o644)
    files.write(m.cert, bundle["cert"], 0o644)
    files.write(m.key, key_pem or bundle["key"])
    files.write(m.password_file, bundle["etcd_password"] + "\n")
    m.save_info(endpoints=bundle["endpoints"], prefix=bundle["prefix"], name=bundle["name"],
                roles=bundle["roles"])
    return m


def read_bundle(path):
    try:
        with open(path) as f:
            b = json.load(f)
    except OSError as e:
        raise EmergenceError(f"--bundle {path}: {e.strerror}")
    except ValueError:
        raise EmergenceError(f"--bundle {path}: not a bundle from `emergence cluster issue`")
    need = ("name", "roles", "cert", "key", "ca", "etcd_password", "endpoints", "prefix")
    if not isinstance(b, dict) or any(k not in b for k in need):
        raise EmergenceError(f"--bundle {path}: not a bundle from `emergence cluster issue`")
    return b


def warn_insecure():
    from .client import INSECURE_WARNING
    sys.stderr.write(INSECURE_WARNING + "\n")
