"""`emergence-cni`: Relay networks for podman, containerd and any CNI 1.1
runtime (ADD, DEL, CHECK, GC, STATUS, VERSION).

The network configuration names a Relay network; when it also carries the
network's fields (bridge, subnets, ...) the network is created on first use:

  {"cniVersion": "1.1.0", "name": "relaynet", "type": "emergence-cni",
   "network": "red", "bridge": "rlred", "subnets": ["10.88.0.0/24"],
   "stateDir": "/var/lib/emergence/relay"}

Port mappings come in `runtimeConfig.portMappings` (the portMappings
capability).  Errors are the spec's error object on stdout and exit 1.
Start-up is kept small (a cold call is a fresh Python process): JSON goes
through `fastjson` (not `json`, which pulls in `re` and `enum`), the engine
loads only for the commands that use it, and Relay speaks rtnetlink itself
(nlmsg.py), so no netlink library is imported at all.
"""

import os
import sys

from .. import fastjson as json

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
NET_KEYS = ("bridge", "subnets", "gateway", "mtu", "nat", "isolated", "veth_prefix",
            "allow_overlap")
# CNI 1.1's error codes (SPEC.md, "Error")
INCOMPATIBLE, UNKNOWN_CONTAINER, BAD_ENV, IO, UNDECODABLE, BAD_CONFIG = 1, 3, 4, 5, 6, 7
TRY_AGAIN, INTERNAL = 11, 999


class CNIError(Exception):
    def __init__(self, code, msg, details=""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def _env(name, required=True):
    v = os.environ.get(name, "")
    if required and not v:
        raise CNIError(BAD_ENV, f"missing environment variable {name}", f"{name} must be set")
    if v:
        _check_env(name, v)
    return v


def _check_env(name, v):
    """CNI_CONTAINERID, CNI_IFNAME and CNI_NETNS as the spec and the kernel
    take them; a bad one is error 4 naming the variable, before any change."""
    from ..errors import ConfigError
    from . import fields
    try:
        if name == "CNI_CONTAINERID":
            fields.container(name, v)
        elif name == "CNI_IFNAME":
            fields.ifname(name, v)
        elif name == "CNI_NETNS" and not v.startswith("/"):
            fields.bad(name, f"{v!r} must be an absolute path")
    except ConfigError as e:
        raise CNIError(BAD_ENV, f"invalid environment variable {name}", str(e)) from None


def check_conf(command, conf):
    """The configuration's fields Relay reads, typed and in range, before any
    change: error 7 naming the field (never a traceback later)."""
    from ..errors import ConfigError
    from . import fields
    from .graph import forward_from_dict, network_from_dict
    from .instance import check_name
    try:
        name = conf.get("network") or conf.get("name")
        if not isinstance(name, str) or not name:
            fields.bad("network", "`network` (or `name`) must be a string")
        fields.name("network", name)
        state = conf.get("stateDir")
        if state is not None and (not isinstance(state, str) or not state.startswith("/")):
            fields.bad("stateDir", f"{state!r} must be an absolute path")
        if conf.get("instance") is not None:
            check_name("instance", conf["instance"])
        if "subnets" in conf:
            network_from_dict(name, {k: conf[k] for k in NET_KEYS if k in conf},
                              f"CNI config {name}")
        for k in ("runtimeConfig", "prevResult"):
            if conf.get(k) is not None and not isinstance(conf[k], dict):
                fields.bad(k, "must be an object")
        rc = conf.get("runtimeConfig") or {}
        pms = rc.get("portMappings") or []
        if not isinstance(pms, list):
            fields.bad("runtimeConfig.portMappings", "must be a list")
        cid = os.environ.get("CNI_CONTAINERID") or "c"
        for i, pm in enumerate(pms):
            _forward(pm, name, cid, f"runtimeConfig.portMappings[{i}]", forward_from_dict)
        ips = rc.get("ips") or []
        if not isinstance(ips, list):
            fields.bad("runtimeConfig.ips", "must be a list of addresses")
        for i, ip in enumerate(ips):
            addr, slash, plen = (ip if isinstance(ip, str) else "").partition("/")
            fields.address(f"runtimeConfig.ips[{i}]", addr if isinstance(ip, str) else ip)
            if slash:
                fields.integer(f"runtimeConfig.ips[{i}]", int(plen) if plen.isdigit() else plen,
                               0, 128)
        valid = conf.get("cni.dev/valid-attachments", [])
        if not isinstance(valid, list) or not all(isinstance(a, dict) for a in valid):
            fields.bad("cni.dev/valid-attachments", "must be a list of objects")
    except ConfigError as e:
        raise CNIError(BAD_CONFIG, "invalid network config", str(e)) from None


def _forward(pm, net, cid, where, forward_from_dict):
    from . import fields
    if not isinstance(pm, dict):
        fields.bad(where, "must be an object")
    d = {"network": net, "container": cid, "host_port": pm.get("hostPort"),
         "container_port": pm.get("containerPort"), "proto": pm.get("protocol") or "tcp"}
    if pm.get("hostIP"):
        d["host_address"] = pm["hostIP"]
    for k, v in (("hostPort", d["host_port"]), ("containerPort", d["container_port"])):
        if v is None:
            fields.bad(f"{where}.{k}", "is required")
    return forward_from_dict(d, where)


def _relay(conf):
    """The Relay of CONF's state directory: the one this planner worker's
    prefault loaded, if any (the call then reads only the journals' tails),
    else a fresh one."""
    _one_shot()
    from .engine import Relay, default_state
    state = os.path.abspath(conf.get("stateDir") or default_state())
    _remember(state)
    warm = _warm.get(state)
    if warm is not None and conf.get("instance") is None:
        # left in _warm: freeing its parsed journals when the call returns took
        # ~0.7 ms at 1,000 attachments, work a worker about to exit need not do
        return warm
    if warm is not None:
        del _warm[state]
        warm.close()
    return Relay(state, instance=conf.get("instance"))


_warm = {}        # state dir -> a Relay this worker's prefault loaded (the warm path)
_scratch = None   # the planner's scratch directory, in its workers
RECENT = 4        # state directories a worker loads ahead of a call


def _recent_path():
    return os.path.join(_scratch, "relay", "recent")


def _remember(state):
    """On the warm path: STATE first in the scratch's list of recent state
    directories, which the next workers load ahead of their calls."""
    if _scratch is None:
        return
    try:
        with open(_recent_path()) as f:
            recent = f.read().split("\n")
    except OSError:
        recent = []
    if recent and recent[0] == state:
        return
    recent = [state] + [s for s in recent if s and s != state][:RECENT - 1]
    tmp = f"{_recent_path()}.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write("\n".join(recent))
        os.rename(tmp, _recent_path())
    except OSError:
        pass      # a hint for the next workers, never a reason to fail a call


def _preload():
    """Load the journals (graph, applied, each network's addresses) of the
    recent state directories, so that a call finds them parsed and reads
    only what was appended since: its cost stays flat with the number of
    attachments (parsing them whole took ~4 ms at 1,000)."""
    from .engine import Relay
    try:
        with open(_recent_path()) as f:
            recent = f.read().split("\n")[:RECENT]
    except OSError:
        return
    for state in recent:
        if not state or state in _warm or not os.path.isdir(state):
            continue
        relay = Relay(state)
        try:
            for name in list(relay.applied()["networks"]):
                relay.ipam.holders(name)
        except Exception:  # noqa: BLE001 - a hint only: the call loads it itself
            continue
        finally:
            relay.close()
        _warm[state] = relay


def _one_shot():
    """A CNI call is a process of its own (cold, or a planner worker that
    exits after it): the cyclic GC has nothing to find in its short life,
    and its collections, each walking the journals' freshly parsed
    containers, cost 3-5x the parsing at 1,000 attachments."""
    import gc
    gc.disable()


def _network(relay, conf, made=None):
    """The Relay network this configuration names, created if it declares one
    (then MADE, a list, gets its name: a failed ADD removes it again)."""
    from ..errors import EmergenceError
    from .graph import network_from_dict
    name = conf.get("network") or conf.get("name")
    net = relay.network(name)
    if net is not None:
        return net
    decl = {k: conf[k] for k in NET_KEYS if k in conf}
    if "subnets" not in decl:
        raise CNIError(BAD_CONFIG, "invalid network config",
                       f"no Relay network {name!r}; create it with `emergence net create` "
                       "or give `subnets` in the configuration")
    try:
        decl["owner"] = "cni"
        net = network_from_dict(name, decl, f"CNI config {name}", relay.instance)
        relay.create_network(net)
        if made is not None:
            made.append(name)
    except EmergenceError as e:
        if relay.network(name) is None:  # not a race with another ADD
            raise CNIError(BAD_CONFIG, "invalid network config", str(e))
    return relay.network(name)


def _forwards(conf, net, cid):
    from .graph import forward_from_dict
    return [_forward(pm, net, cid, f"runtimeConfig.portMappings[{i}]", forward_from_dict)
            for i, pm in enumerate((conf.get("runtimeConfig") or {}).get("portMappings")
                                   or [])]


def add(conf):
    cid, netns, ifname = _env("CNI_CONTAINERID"), _env("CNI_NETNS"), _env("CNI_IFNAME")
    if not os.path.exists(netns):
        raise CNIError(3, "container unknown", f"CNI_NETNS {netns} does not exist")
    relay = _relay(conf)
    made, existed = [], True
    try:
        net = _network(relay, conf, made)
        ips = [a for a in (conf.get("runtimeConfig") or {}).get("ips") or []]
        existed = relay.attachment(f"att:{net.name}/{cid}/{ifname}") is not None
        att = relay.attach(net.name, cid, netns, ifname, [i.split("/")[0] for i in ips],
                           forwards=_forwards(conf, net.name, cid), origin="cni",
                           owner=f"cni:{cid}")
        host = att.host_ifname(net.veth_prefix, relay.instance)
        k = relay.kernel
        host_mac, inner_mac = k.mac(host), k.mac(ifname, netns)
        k.forget_ns(netns)
    except BaseException:
        _undo_add(relay, conf, cid, ifname, made, existed)
        raise
    finally:
        relay.close()
    prev = conf.get("prevResult") or {}
    base = len(prev.get("interfaces", []))
    result = {"cniVersion": conf.get("cniVersion", "1.1.0"),
              "interfaces": prev.get("interfaces", []) + [
                  {"name": host, "mac": host_mac or "", "mtu": net.mtu},
                  {"name": ifname, "mac": inner_mac or "", "mtu": net.mtu,
                   "sandbox": netns}],
              "ips": list(prev.get("ips", [])), "routes": list(prev.get("routes", [])),
              "dns": prev.get("dns", {})}
    for a in att.addresses:
        s, gw = net.subnet_for(a)
        result["ips"].append({"address": f"{a}/{s.prefixlen}", "gateway": str(gw),
                              "interface": base + 1})
        result["routes"].append({"dst": "0.0.0.0/0" if a.version == 4 else "::/0",
                                 "gw": str(gw)})
    return result


def _undo_add(relay, conf, cid, ifname, made, existed):
    """A failed ADD leaves nothing: its record, lease and veth, and the
    network it created (bridge, nft rules) while nothing else is attached."""
    name = conf.get("network") or conf.get("name")
    try:
        if not existed:
            relay.detach(name, cid, ifname)
        if made:
            relay.remove_network(name)
    except Exception:  # noqa: BLE001 - the ADD's own error is the one to report
        pass


def delete(conf, answer=None):
    """DEL.  ANSWER (the warm path's): called with 0 once the detach is
    committed -- graph written, address freed -- and before the veth is
    deleted, so the runtime goes on while the kernel takes its ~20 ms (a
    veth's deletion waits for an RCU grace period).  Relay's lock stays held
    until the veth is gone, so no later edit sees it half done."""
    cid, ifname = _env("CNI_CONTAINERID"), _env("CNI_IFNAME")
    relay = _relay(conf)
    try:
        name = conf.get("network") or conf.get("name")
        if relay.network(name) is not None:
            relay.detach(name, cid, ifname,
                         committed=None if answer is None else lambda: answer(0))
    finally:
        relay.close()


def check(conf):
    cid, netns, ifname = _env("CNI_CONTAINERID"), _env("CNI_NETNS"), _env("CNI_IFNAME")
    relay = _relay(conf)
    try:
        name = conf.get("network") or conf.get("name")
        key = f"att:{name}/{cid}/{ifname}"
        att = relay.attachment(key)
        if att is None or att.netns != netns:
            raise CNIError(3, "container unknown", f"{key} is not attached in {netns}")
        rec = relay.applied()["attachments"].get(key)
        why = "not applied" if rec is None else \
            relay._observe_attachment(relay.network(name), att, rec)
        if why:
            raise CNIError(100, "attachment differs from Relay's graph", f"{key}: {why}")
    finally:
        relay.close()


def gc(conf):
    valid = {(a.get("containerID"), a.get("ifname"))
             for a in conf.get("cni.dev/valid-attachments", [])}
    relay = _relay(conf)
    try:
        name = conf.get("network") or conf.get("name")
        g = relay.desired()
        stale = [a for a in g.attachments.values()
                 if a.network == name and a.origin == "cni"
                 and (a.container, a.ifname) not in valid]
        for a in stale:
            relay.detach(name, a.container, a.ifname)
        relay.gc()
    finally:
        relay.close()


def status(conf):
    # ready when the state directory is usable and the network has room
    from .ipam import IPAM
    state = conf.get("stateDir") or os.environ.get("EMERGENCE_RELAY_STATE") or \
        "/var/lib/emergence/relay"
    try:
        os.makedirs(state, mode=0o700, exist_ok=True)
        IPAM(state)
    except OSError as e:
        raise CNIError(50, "plugin not available", f"state directory {state}: {e.strerror}")


WARM = "warm-up"  # the scratch network of warm_up and prefault


def warm_up(scratch):
    """In the node's planner, once: a Relay state under SCRATCH holding one
    network, written as a journal only (nothing in the kernel), for the
    rehearsals of `prefault`."""
    from .graph import Network
    from .journal import Journal
    state = os.path.join(scratch, "relay")
    os.makedirs(state, mode=0o700, exist_ok=True)
    graph = Journal(os.path.join(state, "graph"))
    graph.refresh()
    graph.commit({f"net:{WARM}": Network(WARM, "rl-warm-up", ["10.255.255.0/24"]).to_dict()},
                 sync=False)


def prefault(scratch):
    """In each forked worker of the planner, before it takes a call: the Python
    side of an ADD and a DEL on warm_up's state -- load, IPAM allocate and
    release, the attachment, its checks, its JSON -- and no kernel work, so
    the call's copy-on-write faults are paid before a caller waits (in A/B
    runs on this VM: a DEL 0.6-1.7 ms sooner, an ADD up to 0.8).  Then the
    state directories recent calls used are loaded (see _preload)."""
    global _scratch
    _scratch = scratch
    try:
        _rehearse(scratch)
    finally:
        _preload()


def _rehearse(scratch):
    from .engine import Relay
    from .graph import Attachment
    relay = Relay(os.path.join(scratch, "relay"))
    try:
        net = relay.network(WARM)
        if net is None:
            return
        relay.applied()
        key = f"att:{WARM}/{os.getpid()}/eth0"
        addresses = relay.ipam.allocate(WARM, net.subnets, net.gateways, key)
        relay.ipam.release(WARM, key)
        att = Attachment(WARM, str(os.getpid()), "/nonexistent", "eth0", addresses, None, "cni")
        att.host_ifname(net.veth_prefix)
        relay.desired().add_attachment(att)  # a copy: the checks, nothing kept
        json.dumps({"interfaces": [att.to_dict()], "ips": [str(a) for a in att.addresses]})
    finally:
        relay.close()


def main(argv=None, stdin=None, stdout=None, answer=None):
    """Run one CNI call; returns the exit code.  ANSWER(code), when given,
    lets DEL tell its caller it is done before the kernel work ends."""
    stdout = stdout or sys.stdout
    version = "1.1.0"
    try:
        command = _env("CNI_COMMAND")
        raw = (stdin or sys.stdin).read()
        if command == "VERSION":
            try:
                version = json.loads(raw).get("cniVersion", version) if raw.strip() else version
            except ValueError:
                pass
            stdout.write(json.dumps({"cniVersion": version, "supportedVersions": SUPPORTED})
                         + "\n")
            return 0
        try:
            conf = json.loads(raw)
        except ValueError as e:
            raise CNIError(6, "failed to decode network configuration", str(e))
        if not isinstance(conf, dict):
            raise CNIError(6, "failed to decode network configuration", "not an object")
        version = conf.get("cniVersion", version)
        if version not in SUPPORTED:
            bad, version = version, "1.1.0"
            raise CNIError(INCOMPATIBLE, "incompatible CNI version",
                           f"cniVersion {bad!r} is not one of {', '.join(SUPPORTED)}")
        if command in ("ADD", "DEL", "CHECK"):
            for name in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"):
                _env(name, required=name != "CNI_NETNS" or command != "DEL")
        if command != "VERSION":
            check_conf(command, conf)
        from ..errors import ConfigError, EmergenceError
        try:
            if command == "ADD":
                stdout.write(json.dumps(add(conf)) + "\n")
            elif command == "DEL":
                delete(conf, answer)
            elif command == "CHECK":
                check(conf)
            elif command == "GC":
                gc(conf)
            elif command == "STATUS":
                status(conf)
            else:
                raise CNIError(4, "invalid CNI_COMMAND", f"CNI_COMMAND={command!r} is not "
                               "ADD, DEL, CHECK, GC, STATUS or VERSION")
        except ConfigError as e:
            raise CNIError(BAD_CONFIG, "invalid network config", str(e))
        except EmergenceError as e:
            raise CNIError(100, "relay refused the request", str(e))
        return 0
    except CNIError as e:
        return _error(stdout, version, e.code, e.msg, e.details)
    except OSError as e:
        return _error(stdout, version, *_os_error(e))
    except Exception as e:  # noqa: BLE001 - a runtime reads JSON, never a traceback
        code = getattr(e, "code", None)    # pyroute2's NetlinkError: an errno
        if isinstance(code, int) and code in TRANSIENT:
            return _error(stdout, version, TRY_AGAIN, "try again later",
                          f"{os.strerror(code)}: the kernel is busy; retry")
        return _error(stdout, version, INTERNAL, "internal error",
                      f"{type(e).__name__}: {e}"[:500])


TRANSIENT = {11, 16, 4, 105}    # EAGAIN, EBUSY, EINTR, ENOBUFS


def _os_error(e):
    if e.errno in TRANSIENT:
        return TRY_AGAIN, "try again later", f"{e.strerror}: retry"
    return IO, "I/O failure", f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")


def _error(stdout, version, code, msg, details):
    stdout.write(json.dumps({"cniVersion": version, "code": code, "msg": msg,
                             "details": details}) + "\n")
    return 1


def _answer_and_go_on(code):
    """The cold path's early answer (DEL): the detach is committed, so this
    process exits with CODE for its caller now, and a child it forks --
    holding Relay's lock and sockets, its stdio on /dev/null -- deletes the
    veth (~20 ms of the kernel's, an RCU grace period), as the warm path's
    worker does after its answer.  A child killed midway leaves `applied`
    behind the graph, which the next apply (or the reconciler) converges."""
    sys.stdout.flush()
    if os.fork():
        os._exit(code)
    os.setsid()      # not in the caller's process group: its signals are not ours
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def cold_main():
    """`emergence-cni-py`, the plugin run as its own process (no node).  It
    ends with os._exit once its output is flushed: everything it wrote is
    already in the kernel's hands (journals by pwrite, the lock with the fd),
    and the interpreter's teardown of its modules cost ~1 ms of a ~15 ms call."""
    code = main(answer=_answer_and_go_on if os.environ.get("CNI_COMMAND") == "DEL" else None)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1     # a reader that went away: as a normal exit would say
    os._exit(code)


if __name__ == "__main__":
    sys.exit(cold_main())
