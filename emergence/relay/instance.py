"""Which Relay a state directory is: its instance name, from which the names
of its kernel objects derive (the nft table, default bridge names, the hash
of veth names, the bridges' alias mark), so two Relays on one host -- two
state directories -- never touch each other's objects.

The name is kept in STATE/instance, written on first use:
  - `--instance NAME` (or $EMERGENCE_RELAY_INSTANCE, node.toml `[relay] instance`);
  - else "" (the default instance: table `inet emergence`, bridges rel-NAME,
    as before instances existed) for the default state directory and for a
    state directory that already holds Relay's state (it was made that way);
  - else a name derived from the state directory's real path.
A later call naming another instance for the same directory is refused:
renaming would orphan the objects the old names made.
"""

import os

from ..errors import ConfigError, EmergenceError
from .sha import sha256

FILE = "instance"
TABLE = "emergence"
LEGACY = ("graph.snap", "graph.log", "graph.json", "applied.snap", "applied.log",
          "applied.json")


def check_name(where, v):
    if not isinstance(v, str) or not v or len(v) > 32 or not v[0].isalpha() \
            or not all(c.isascii() and (c.isalnum() or c in "-_") for c in v):
        raise ConfigError(f"{where}: {v!r}: an instance name is 1-32 letters, digits, - or _, "
                          "starting with a letter")
    return v


def resolve(state_dir, wanted=None, default_state=None):
    """The instance name of STATE_DIR ("" for the default instance)."""
    wanted = wanted if wanted is not None else os.environ.get("EMERGENCE_RELAY_INSTANCE") or None
    if wanted is not None:
        check_name("--instance", wanted)
    path = os.path.join(state_dir, FILE)
    try:
        with open(path) as f:
            have = f.read().strip()
    except FileNotFoundError:
        have = None
    if have is not None:
        if wanted is not None and wanted != have:
            raise EmergenceError(f"--instance {wanted}: state directory {state_dir} belongs to "
                                 f"instance {have or '(default)'!s}; use another --state")
        return have
    if wanted is not None:
        name = wanted
    elif (default_state and os.path.realpath(state_dir) == os.path.realpath(default_state)) \
            or any(os.path.exists(os.path.join(state_dir, n)) for n in LEGACY):
        name = ""
    else:
        name = "s" + sha256(os.path.realpath(state_dir).encode()).hexdigest()[:8]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
              "w") as f:
        f.write(name + "\n")
    try:
        os.link(tmp, path)          # the first writer wins; a racing one reads it
    except FileExistsError:
        os.unlink(tmp)
        return resolve(state_dir, wanted, default_state)
    os.unlink(tmp)
    return name


def table(instance):
    """The nft table (family inet) of INSTANCE."""
    return f"{TABLE}-{instance}" if instance else TABLE


def mark(instance, key):
    """What a bridge's alias says after kernel.ALIAS_PREFIX: whose it is."""
    return f"{instance}/{key}" if instance else key

