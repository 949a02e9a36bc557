"""The cluster's state in etcd, one key per fact, so every command node sees
the same thing and any of them can carry on when another dies.

Client: etcd3gw (OpenStack's client for etcd's gRPC-gateway JSON API, on
`requests`).  The `etcd3` package is unmaintained and breaks with current
protobuf; aetcd is asyncio-only, and our nodes are plain threads; etcd3gw is
kept up (released 2026), has no protobuf or gRPC dependency, and speaks to
Debian's etcd 3.4 as it is.

Keys under PREFIX (default /emergence/):
  members/NAME        a worker's description, on its lease (gone when it dies)
  commanders/NAME     a command node's, on its lease (a node may be both)
  telemetry/NAME      its latest load, on the same lease
  holdings/NAME       the layers its image store holds (locality.py), same lease
  leader              the leading command node's name, on its lease
  config/KEY          cluster settings (s_green, scheduler, cost)
  tasks/ID            the submitted spec (never changed)
  status/ID           state, host, attempt, history: written by the leader only
  assign/HOST/ID      the current attempt sent to HOST
  ack/ID/ATTEMPT      the host that started it
  results/ID          the first result; created once, never overwritten
  logs/HOST/ID/ATTEMPT/SEQ  a running stage's output, by its host (on a lease;
                      pipeline/logstream.py)
  unresponsive/HOST   when and why the leader stopped trusting HOST
  probe/HOST          the leader's request for fresh load figures
  estimates/IMAGE     the per-image EWMA of demand (demand.py)
Writes by the leader are transactions guarded by `leader == me`, so a deposed
leader that has not noticed yet cannot change anything.
"""

import json
import time

from ..errors import EmergenceError

DEFAULT_ENDPOINT = "https://127.0.0.1:2379"
DEFAULT_PREFIX = "/emergence/"


def _b64(s):
    import base64
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _reachable(method):
    """etcd away, or refusing, is one line for people (the nodes catch it and
    retry)."""
    import functools

    @functools.wraps(method)
    def call(self, *args, **kw):
        from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception
        try:
            return method(self, *args, **kw)
        except (ConnectionFailedError, ConnectionTimeoutError) as e:
            if "SSL" in str(e) or "certificate" in str(e):
                raise EmergenceError(f"etcd at {self.endpoint} and this node do not trust "
                                     "each other's certificates (another cluster's CA, or "
                                     "none); join this cluster first")
            raise EmergenceError(f"cannot reach etcd at {self.endpoint}; start one with "
                                 "`emergence cluster init` or pass --etcd URL")
        except Etcd3Exception as e:
            if "permission denied" not in f"{e} {getattr(e, 'detail_text', '')}":
                raise
            parts = args[1:] if method.__name__ in ("put", "create") else args
            where = self.key(*[p for p in parts if isinstance(p, str)])
            raise Refused(f"etcd refused: this node's roles do not allow {method.__name__} "
                          f"of {where}")
    return call


class Refused(EmergenceError):
    """etcd's RBAC said no (this node's role may not touch that key)."""


class Cluster:
    """A connection to the cluster's etcd, with the operations the nodes need.
    MATERIAL (emergence.cluster.files.Material) is this node's certificate,
    key and etcd user; without it only INSECURE plain http is possible."""

    def __init__(self, endpoint=DEFAULT_ENDPOINT, prefix=DEFAULT_PREFIX, timeout=3.0,
                 material=None, insecure=False):
        from ..cluster.client import connect, endpoints
        self.endpoint = ",".join(endpoints(endpoint))  # several: failed over in order
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.material, self.insecure = material, insecure
        self.client = connect(endpoint, material, insecure, timeout)
        self._ca = None

    def ca_cert(self):
        """The cluster CA a worker checks task signatures against (None: insecure)."""
        if self._ca is None and self.material is not None:
            self._ca = self.material.ca_cert()
        return self._ca

    def key(self, *parts):
        return self.prefix + "/".join(parts)

    # -- plain reads and writes ------------------------------------------------
    @_reachable
    def get(self, *parts):
        vals = self.client.get(self.key(*parts))
        return json.loads(vals[0]) if vals else None

    @_reachable
    def put(self, value, *parts, lease=None):
        self.client.put(self.key(*parts), _dumps(value), lease=lease)

    @_reachable
    def create(self, value, *parts, lease=None):
        """Put only if the key does not exist; True if this call created it."""
        return self.client.create(self.key(*parts), _dumps(value), lease=lease)

    @_reachable
    def delete(self, *parts):
        self.client.delete(self.key(*parts))

    @_reachable
    def items(self, *parts):
        """{rest of key: value} under a prefix."""
        base = self.key(*parts) + "/"
        kvs = self.client.get_prefix(base)
        return {meta["key"].decode()[len(base):]: json.loads(v) for v, meta in kvs}

    @_reachable
    def snapshot(self):
        """Everything under the prefix at one revision, as {section: {rest: value}}."""
        out = {}
        for v, meta in self.client.get_prefix(self.prefix):
            section, _, rest = meta["key"].decode()[len(self.prefix):].partition("/")
            try:
                value = json.loads(v)
            except ValueError:
                value = v.decode()
            if rest:
                out.setdefault(section, {})[rest] = value
            else:
                out[section] = value
        return out

    @_reachable
    def lease(self, ttl):
        return self.client.lease(ttl=max(1, int(round(ttl))))

    # -- transactions ------------------------------------------------------------
    @_reachable
    def guarded(self, leader, puts=(), deletes=()):
        """Apply PUTS [(value, key parts…)] and DELETES [key parts] atomically,
        only while LEADER holds the leader key.  False if it no longer does."""
        ops = [{"request_put": {"key": _b64(self.key(*parts)), "value": _b64(_dumps(v))}}
               for v, *parts in puts]
        ops += [{"request_delete_range": {"key": _b64(self.key(*parts))}}
                for parts in deletes]
        txn = {"compare": [{"key": _b64(self.key("leader")), "result": "EQUAL",
                            "target": "VALUE", "value": _b64(_dumps(leader))}],
               "success": ops, "failure": []}
        return bool(self.client.transaction(txn).get("succeeded"))

    def campaign(self, name, lease):
        """Become leader if nobody is; True if NAME leads now."""
        if self.create(name, "leader", lease=lease):
            return True
        return self.get("leader") == name

    def first_result(self, task_id, result):
        """Record RESULT for TASK_ID unless one is there: True if it was first."""
        return self.create(result, "results", task_id)


def now():
    """Wall-clock seconds: deadlines are stored in etcd and read by whichever
    command node leads next, so they cannot be monotonic (clocks must agree)."""
    return time.time()
