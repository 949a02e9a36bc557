"""The node's config file, /etc/emergence/node.toml: read and typed here, so
the node (node/config.py, every section) and the verbs that work without it
(pull, peers, run --image: [share] alone) apply the same checks.  One section
a part; a key's type is its default's; an unknown key is an error naming it.
"""

import os

from .errors import EmergenceError

DEFAULT_FILE = "/etc/emergence/node.toml"


def read(path=None):
    """(file, {section: {key: value}}) of PATH, or of the default file if it
    exists.  A missing default file is fine; a missing given one is not."""
    file = path or DEFAULT_FILE
    if not path and not os.path.exists(file):
        return file, {}
    import tomllib
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise EmergenceError(f"--config {file}: no such file") from None
    except OSError as e:
        raise EmergenceError(f"{file}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise EmergenceError(f"{file}: not valid TOML: {e}") from None
    return file, data


def section(file, name, defaults, values):
    """DEFAULTS updated by VALUES, the [NAME] table of FILE, each typed."""
    if not isinstance(values, dict):
        raise EmergenceError(f"{file}: {name} must be a [section]")
    out = dict(defaults)
    for key, value in values.items():
        if key not in out:
            raise EmergenceError(f"{file}: [{name}] has no key {key!r}; known: "
                                 + ", ".join(sorted(out)))
        out[key] = coerce(f"{file}: [{name}] {key}", out[key], value, False)
    return out


def coerce(where, default, value, from_flag):
    """VALUE as the type of DEFAULT (a flag's string is parsed), or one line
    naming WHERE and what was expected."""
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
