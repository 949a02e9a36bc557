"""`emergence net hook attach|detach`: Relay as OCI hooks.

The runtime never imports Relay.  When a container's config.json carries the
annotation `org.emergence.relay.net` (which `emergence run --net` sets), the
runtime adds two hooks that run this command: createRuntime (the container's
netns exists, its process has not started) attaches it, poststop detaches it.
The hook reads the container's state (id, pid, bundle, annotations) on stdin.

  org.emergence.relay.net      NAME[:ip=IP][,NAME...]    networks, eth0, eth1, ...
  org.emergence.relay.publish  [IP:]HOST:CONT[/PROTO][,...]  forwards on the first network
"""

import json
import os
import sys

from ..errors import EmergenceError

ANN_NET = "org.emergence.relay.net"
ANN_PUBLISH = "org.emergence.relay.publish"


def parse_nets(value):
    """[(network, [addresses])] from NAME[:ip=IP[:ip=IP]][,NAME...]."""
    out = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, *opts = item.split(":ip=")
        if not name:
            raise EmergenceError(f"{ANN_NET}: {item!r} names no network")
        out.append((name, [o for o in opts if o]))
    return out


def _annotations(state):
    ann = state.get("annotations")
    if ann:
        return ann
    try:
        with open(os.path.join(state.get("bundle", ""), "config.json")) as f:
            return json.load(f).get("annotations", {})
    except (OSError, ValueError):
        return {}


def run_hook(what, state_dir=None, instance=None):
    from .commands import parse_publish
    from .engine import Relay
    try:
        state = json.load(sys.stdin)
    except ValueError:
        raise EmergenceError("net hook: the container's state JSON was expected on stdin")
    ann = _annotations(state)
    nets = parse_nets(ann.get(ANN_NET, ""))
    cid = state.get("id")
    if not nets or not cid:
        return 0
    from . import fields
    fields.container("net hook: the container's id", cid)
    for net, _ in nets:
        fields.name(f"{ANN_NET}", net)
    relay = Relay(state_dir, instance=instance)
    try:
        if what == "attach":
            pid = state.get("pid")
            netns = f"/proc/{pid}/ns/net"
            if not pid or os.stat(netns).st_ino == os.stat("/proc/self/ns/net").st_ino:
                raise EmergenceError(f"container {cid} shares the host's network namespace; "
                                     "add a network namespace to linux.namespaces to use --net")
            for i, (net, ips) in enumerate(nets):
                fwd = [parse_publish(p, net, cid) for p in
                       filter(None, ann.get(ANN_PUBLISH, "").split(","))] if i == 0 else []
                relay.attach(net, cid, netns, f"eth{i}", ips, forwards=fwd, origin="hook",
                             owner=f"run:{cid}")
        elif what == "detach":
            for net, _ in nets:
                relay.detach(net, cid)
        else:
            raise EmergenceError(f"net hook: {what!r} must be attach or detach")
    finally:
        relay.close()
    return 0
