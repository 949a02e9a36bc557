"""The node's configuration: /etc/emergence/node.toml, each key also a flag.

One section a part ([node] for the process itself, then one per service,
named by its `Service.name`); a key's type is its default's.  Flags are
`--SECTION-KEY VALUE` and win over the file.  Unknown sections and keys are
errors that name the place, so a typo never silently falls back to a default.
"""

from .. import nodefile
from ..errors import EmergenceError

DEFAULT_FILE = nodefile.DEFAULT_FILE
NODE_DEFAULTS = {
    "listen": "127.0.0.1:7480",            # the HTTP listener of the parts' services
    "run_dir": "/run/emergence/node",      # pid file, control and planner sockets (root-only)
    "state_dir": "/var/lib/emergence",     # each service gets state_dir/<part>
    "planner": True,                       # serve the C front-end's warm path
    "planner_spares": 3,                   # warm workers ahead of calls (up to 4x after bursts)
    "services": ["relay", "share", "overwatch", "place", "cluster"],  # those installed start
    "readers": [],                         # networks that may read ([] = whoever connects)
    "tls_cert": "",                        # serve HTTPS with this certificate (PEM)...
    "tls_key": "",                         # ...and its key (0600)
    "client_ca": "",                       # accept client certificates of this CA for writes
    # the listener's limits on slow and idle clients (emergence/listener.py)
    "header_timeout": 10.0,                # seconds from a request's first byte to its headers
    "idle_timeout": 60.0,                  # seconds a connection may hold no request
    "min_body_rate": 1024,                 # bytes/s a body must arrive at, over...
    "body_rate_window": 10.0,              # ...this many seconds
    "uploads_per_client": 16,              # uploads in flight at once from one address
}
# keys that were, and what replaced them: one line, not "unknown key"
RETIRED = {("place", "token"): "the placement settings now need the node token "
           "(<[node] state_dir>/node.token, or a client certificate); remove [place] token"}
SERVICE_PARTS = ("relay", "share", "overwatch", "place", "cluster")


def service_classes(names=SERVICE_PARTS):
    """The installed parts' Service classes, by part (a part without one is skipped)."""
    found = {}
    for part in names:
        try:
            mod = __import__(f"emergence.{part}.service", fromlist=["Service"])
        except ModuleNotFoundError as e:
            if e.name and (e.name == f"emergence.{part}" or e.name.startswith(
                    f"emergence.{part}.service")):
                continue
            raise
        found[part] = mod.Service
    return found


def defaults():
    out = {"node": dict(NODE_DEFAULTS)}
    for cls in service_classes().values():
        out[cls.name] = dict(getattr(cls, "DEFAULTS", {}))
    return out


def flag_names(table):
    """{flag: (section, key)} for every key: --node-listen, --overwatch-interval, ..."""
    return {f"{sec}-{key}".replace("_", "-"): (sec, key)
            for sec, keys in table.items() for key in keys}


def load(path=None, flags=None):
    """The effective configuration: defaults, then the file, then FLAGS
    ({flag-name: value}).  A missing default file is fine; a missing given one is not."""
    table = defaults()
    file, data = nodefile.read(path)
    for (sec, key), why in RETIRED.items():
        if isinstance(data.get(sec), dict) and key in data[sec]:
            raise EmergenceError(f"{file}: [{sec}] {key} is no more: {why}")
        if f"{sec}-{key}" in (flags or {}):
            raise EmergenceError(f"--{sec}-{key} is no more (a secret in argv is seen by "
                                 f"every user in ps): {why}")
    for sec, keys in data.items():
        if sec not in table:
            raise EmergenceError(f"{file}: unknown section [{sec}]; known: "
                                 + ", ".join(sorted(table)))
        table[sec] = nodefile.section(file, sec, table[sec], keys)
    names = flag_names(table)
    for flag, value in (flags or {}).items():
        sec, key = names[flag]
        table[sec][key] = nodefile.coerce(f"--{flag}", table[sec][key], value, True)
    return table
