"""The node's configuration: /etc/emergence/node.toml, each key also a flag.

One section a part ([node] for the process itself, then one per service,
named by its `Service.name`); a key's type is its default's.  Flags are
`--SECTION-KEY VALUE` and win over the file.  Unknown sections and keys are
errors that name the place, so a typo never silently falls back to a default.
"""

import os

from ..errors import EmergenceError

DEFAULT_FILE = "/etc/emergence/node.toml"
NODE_DEFAULTS = {
    "listen": "127.0.0.1:7480",            # the HTTP listener of the parts' services
    "run_dir": "/run/emergence/node",      # pid file, control and planner sockets (root-only)
    "state_dir": "/var/lib/emergence",     # each service gets state_dir/<part>
    "planner": True,                       # serve the C front-end's warm path
    "planner_spares": 3,                   # workers forked and warmed ahead of calls
    "services": ["relay", "share", "overwatch", "place"],  # those installed are started
}
SERVICE_PARTS = ("relay", "share", "overwatch", "place")


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


def _coerce(where, default, value, from_flag):
    if isinstance(default, bool):
        if from_flag and isinstance(value, str):
            if value.lower() in ("true", "1", "yes", "on"):
                return True
            if value.lower() in ("false", "0", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise EmergenceError(f"{where}: expected true or false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if from_flag and isinstance(value, str):
            try:
                value = type(default)(value)
            except ValueError:
                raise EmergenceError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return type(default)(value) if isinstance(default, float) else value
        raise EmergenceError(f"{where}: expected a number, got {value!r}")
    if isinstance(default, list):
        if from_flag and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return value
        raise EmergenceError(f"{where}: expected a list, got {value!r}")
    if isinstance(default, dict):
        if isinstance(value, dict):
            return value
        raise EmergenceError(f"{where}: expected a table, got {value!r}")
    if default is None or isinstance(value, str):
        return value
    raise EmergenceError(f"{where}: expected a string, got {value!r}")


def load(path=None, flags=None):
    """The effective configuration: defaults, then the file, then FLAGS
    ({flag-name: value}).  A missing default file is fine; a missing given one is not."""
    table = defaults()
    file = path or DEFAULT_FILE
    data = {}
    if path or os.path.exists(file):
        import tomllib
        try:
            with open(file, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise EmergenceError(f"--config {file}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise EmergenceError(f"{file}: not valid TOML: {e}") from None
    for sec, keys in data.items():
        if sec not in table:
            raise EmergenceError(f"{file}: unknown section [{sec}]; known: "
                                 + ", ".join(sorted(table)))
        if not isinstance(keys, dict):
            raise EmergenceError(f"{file}: {sec} must be a [section]")
        for key, value in keys.items():
            if key not in table[sec]:
                raise EmergenceError(f"{file}: [{sec}] has no key {key!r}; known: "
                                     + ", ".join(sorted(table[sec])))
            table[sec][key] = _coerce(f"{file}: [{sec}] {key}", table[sec][key], value, False)
    names = flag_names(table)
    for flag, value in (flags or {}).items():
        sec, key = names[flag]
        table[sec][key] = _coerce(f"--{flag}", table[sec][key], value, True)
    return table
