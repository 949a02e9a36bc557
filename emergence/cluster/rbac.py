"""etcd's users and roles for one cluster prefix P (default /emergence/):

  root                      etcd's root: only the CA host holds its password
  emergence-command         read and write everything under P
  emergence-reader          read everything under P
  emergence-worker-NAME     read everything under P; write only
                              P/members/NAME, P/telemetry/NAME, P/holdings/NAME
                              and P/netlease/NAME/ (its own; the last holds its
                              cluster-network subnets, relay/leases.py),
                              P/netclaim/ (subnet claims: as with ack/, a worker
                              can forge one and so block a subnet, but never
                              take a node's traffic, which follows netlease/),
                              P/assign/NAME/ (deleting what it finished),
                              P/logs/NAME/ (the live output of the stages it
                              runs: pipeline/logstream.py; the runner reads
                              only the assigned host's),
                              P/ack/ and P/results/ (keyed by task: etcd's
                              prefix permissions cannot narrow these to a
                              host, so a worker can forge another's ack or
                              result, but never a task, an assignment, a
                              setting or the leader)
Each node is one etcd user, named as the node, with the roles its
certificate states.  Key layout: place/state.py (net/, netclaim/ and
netlease/: relay/leases.py).
"""

import base64
import secrets

from ..errors import EmergenceError

COMMAND, READER = "emergence-command", "emergence-reader"


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def _end(prefix):
    """The range end that covers every key starting with PREFIX."""
    b = bytearray(prefix.encode())
    b[-1] += 1
    return bytes(b).decode()


def worker_role(name):
    return f"emergence-worker-{name}"


def _perm(admin, role, kind, key, end=None):
    perm = {"permType": kind, "key": _b64(key)}
    if end:
        perm["range_end"] = _b64(end)
    admin.call("auth/role/grant", {"name": role, "perm": perm})


def new_password():
    return secrets.token_hex(24)


def setup(admin, prefix, root_password):
    """Make root and the shared roles, then enable auth (ADMIN before auth)."""
    exists = ("already exists",)
    admin.call("auth/user/add", {"name": "root", "password": root_password}, ok_if=exists)
    admin.call("auth/user/grant", {"user": "root", "role": "root"})
    for role, kind in ((COMMAND, "READWRITE"), (READER, "READ")):
        admin.call("auth/role/add", {"name": role}, ok_if=exists)
        _perm(admin, role, kind, prefix, _end(prefix))
    admin.call("auth/enable", {})


def add_node(admin, prefix, name, roles, password):
    """Make etcd user NAME with PASSWORD and the roles for ROLES."""
    r = admin.call("auth/user/add", {"name": name, "password": password},
                   ok_if=("already exists",))
    if r is None:
        raise EmergenceError(f"a node named {name!r} is already in the cluster; pick "
                             "another --name")
    if "command" in roles:
        admin.call("auth/user/grant", {"user": name, "role": COMMAND})
    if "reader" in roles:
        admin.call("auth/user/grant", {"user": name, "role": READER})
    if "worker" in roles:
        role = worker_role(name)
        admin.call("auth/role/add", {"name": role}, ok_if=("already exists",))
        _perm(admin, role, "READ", prefix, _end(prefix))
        for key in (f"members/{name}", f"telemetry/{name}", f"holdings/{name}"):
            _perm(admin, role, "READWRITE", prefix + key)
        for sub in (f"assign/{name}/", "ack/", "results/", f"netlease/{name}/", "netclaim/",
                    f"logs/{name}/"):
            _perm(admin, role, "READWRITE", prefix + sub, _end(prefix + sub))
        admin.call("auth/user/grant", {"user": name, "role": role})
