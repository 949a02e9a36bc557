"""Relay networks reached through OCI hooks: `run --net`/`-p`, or the same as
annotations, become hooks that run `emergence net hook attach|detach`.  The
runtime imports no network code; it knows only the annotations' names and
its own executable."""

import os

from ..errors import ConfigError

RELAY_NET = "org.emergence.relay.net"
RELAY_PUBLISH = "org.emergence.relay.publish"


def add_network_hooks(config, nets=(), publish=()):
    """`run --net NAME[:ip=IP]` / `-p HOST:CONT[/PROTO]`, or the same as the
    annotations org.emergence.relay.net/.publish (so engines can ask), become
    two OCI hooks running `emergence net hook attach|detach`: createRuntime
    (netns made, process not started) and poststop.  The runtime imports no
    network code; it only knows the annotation's name and its own executable."""
    if nets or publish:
        ann = config.setdefault("annotations", {})
        if nets:
            ann[RELAY_NET] = ",".join(nets)
        if publish:
            ann[RELAY_PUBLISH] = ",".join(publish)
    ann = config.get("annotations") or {}
    if not ann.get(RELAY_NET):
        if ann.get(RELAY_PUBLISH):
            raise ConfigError("-p (org.emergence.relay.publish) needs --net NAME "
                              "(org.emergence.relay.net)")
        return
    if not any(n.get("type") == "network" and not n.get("path")
               for n in config.get("linux", {}).get("namespaces", [])):
        raise ConfigError("--net needs a new network namespace: add {\"type\": \"network\"} "
                          "to linux.namespaces")
    import shutil  # only a networked container pays for these imports
    import sys
    exe = os.path.abspath(sys.argv[0])
    if os.path.basename(exe) == "emergence-py":   # the cold path: its front-end is beside it
        exe = os.path.join(os.path.dirname(exe), "emergence")
    if os.path.basename(exe) != "emergence" or not os.access(exe, os.X_OK):
        exe = shutil.which("emergence")
    if not exe:
        raise ConfigError("--net: the `emergence` executable is not on PATH for the hooks")
    env = [f"PATH={os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"]
    if os.environ.get("EMERGENCE_RELAY_STATE"):
        env.append(f"EMERGENCE_RELAY_STATE={os.environ['EMERGENCE_RELAY_STATE']}")
    hooks = config.setdefault("hooks", {})
    for kind, what in (("createRuntime", "attach"), ("poststop", "detach")):
        hooks.setdefault(kind, []).append({"path": exe, "args": [exe, "net", "hook", what],
                                           "env": env, "timeout": 30})
