"""Load and validate a bundle's config.json before anything is touched.

The rules mirror the runtime-spec JSON schema (config-schema.json and
config-linux.json) for every field a Linux runtime reads, written out here so
that `create` needs no JSON-schema engine on its hot path; tests check that
this validator agrees with the schema.  Semantic checks (absolute paths,
known capability names, rootfs present...) follow.  Every problem is one
line naming the field.
"""

import os

from .. import fastjson
from ..errors import ConfigError, cut, debug_note, shown, warn
from .capabilities import KINDS as CAP_KINDS

# ---- a tiny schema language -------------------------------------------------
# A schema is a callable check(value, where) -> None raising ConfigError.


def _fail(where, msg):
    where = cut(where)  # a key can be as long, or as odd, as a value
    raise ConfigError(f"config.json: {where}: {msg}")


def _int_range(lo, hi, what):
    def check(v, where):
        if isinstance(v, bool) or not isinstance(v, int):
            _fail(where, f"must be {what}, got {_kind(v)}")
        if not lo <= v <= hi:
            _fail(where, f"must be {what}, got {v}")
    return check


def _kind(v):
    if v is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(v), type(v).__name__)


INT32 = _int_range(-2**31, 2**31 - 1, "a 32-bit integer")
INT64 = _int_range(-2**63, 2**63 - 1, "a 64-bit integer")
UINT16 = _int_range(0, 2**16 - 1, "an integer in 0..65535")
UINT32 = _int_range(0, 2**32 - 1, "an unsigned 32-bit integer")
UINT64 = _int_range(0, 2**64 - 1, "an unsigned 64-bit integer")
# A device's fileMode may carry the file-type bits (podman writes 8630 = 0o20666
# for a character device): runc and crun accept them; the permission bits are used.
FILEMODE = _int_range(0, 0o177777, "a file mode in 0..65535 (decimal)")


def INTEGER(v, where):
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(where, f"must be an integer, got {_kind(v)}")


def STRING(v, where):
    if not isinstance(v, str):
        _fail(where, f"must be a string, got {_kind(v)}")
    if "\0" in v:
        _fail(where, "must not contain a NUL byte (no Linux interface takes one)")


def BOOL(v, where):
    if not isinstance(v, bool):
        _fail(where, f"must be true or false, got {_kind(v)}")


def pattern(test, hint):
    """A string check by predicate (the schema's regexes, without importing `re`)."""
    def check(v, where):
        STRING(v, where)
        if not test(v):
            _fail(where, f"{shown(v)} is not {hint}")
    return check


def _page_size(v):
    return (len(v) >= 3 and v[-1] == "B" and v[-2] in "KMG" and v[0] in "123456789"
            and v[:-2].isdigit() and v[:-2].isascii())


def _rlimit_name(v):
    rest = v[len("RLIMIT_"):]
    return v.startswith("RLIMIT_") and rest.isascii() and rest.isalpha() and rest.isupper()


def _cpu_list(v):
    return all(ch in "0123456789, -" for ch in v)


def enum(*values):
    def check(v, where):
        STRING(v, where)
        if v not in values:
            _fail(where, f"{shown(v)} is not one of {', '.join(values)}")
    return check


def array(item, min_items=0):
    def check(v, where):
        if not isinstance(v, list):
            _fail(where, f"must be an array, got {_kind(v)}")
        if len(v) < min_items:
            _fail(where, f"must have at least {min_items} item(s)")
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")
    return check


def mapping(value):
    def check(v, where):
        if not isinstance(v, dict):
            _fail(where, f"must be an object, got {_kind(v)}")
        for k, x in v.items():
            if k == "":
                _fail(where, "keys must not be empty")
            value(x, f"{where}.{k}")
    return check


def obj(fields, required=()):
    def check(v, where):
        if not isinstance(v, dict):
            _fail(where, f"must be an object, got {_kind(v)}")
        for name in required:
            if name not in v:
                _fail(where, f"missing required field {name!r}")
        for name, x in v.items():
            sub = fields.get(name)
            if sub is not None:
                sub(x, f"{where}.{name}" if where else name)
    return check


STRINGS = array(STRING)
ID_MAPPING = obj({"containerID": UINT32, "hostID": UINT32, "size": UINT32},
                 ("containerID", "hostID", "size"))
HOOK = obj({"path": STRING, "args": STRINGS, "env": STRINGS,
            "timeout": _int_range(1, 2**63 - 1, "an integer >= 1")}, ("path",))
HOOKS = array(HOOK)
SECCOMP_ACTION = enum("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                      "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
                      "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY")
SECCOMP_ARCHES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
    "SCMP_ARCH_SH", "SCMP_ARCH_SHEB", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64")
SECCOMP_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                 "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
SYSCALL_ARG = obj({"index": UINT32, "value": UINT64, "valueTwo": UINT64,
                   "op": enum("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                              "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")},
                  ("index", "value", "op"))
SYSCALL = obj({"names": array(STRING, 1), "action": SECCOMP_ACTION, "errnoRet": UINT32,
               "args": array(SYSCALL_ARG)}, ("names", "action"))
BLKIO_DEVICE = {"major": INT64, "minor": INT64}
NAMESPACE_TYPES = ("mount", "pid", "network", "uts", "ipc", "user", "cgroup", "time")
TIME_OFFSET = obj({"secs": INT64, "nanosecs": UINT32})

RESOURCES = obj({
    "unified": mapping(STRING),
    "devices": array(obj({"allow": BOOL, "type": STRING, "major": INT64, "minor": INT64,
                          "access": STRING}, ("allow",))),
    "pids": obj({"limit": INT64}, ("limit",)),
    "blockIO": obj({
        "weight": UINT16, "leafWeight": UINT16,
        "weightDevice": array(obj({**BLKIO_DEVICE, "weight": UINT16, "leafWeight": UINT16},
                                  ("major", "minor"))),
        **{k: array(obj({**BLKIO_DEVICE, "rate": UINT64}, ("major", "minor")))
           for k in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                     "throttleReadIOPSDevice", "throttleWriteIOPSDevice")},
    }),
    "cpu": obj({"cpus": STRING, "mems": STRING, "period": UINT64, "quota": INT64,
                "burst": UINT64, "realtimePeriod": UINT64, "realtimeRuntime": INT64,
                "shares": UINT64, "idle": INT64}),
    "hugepageLimits": array(obj({"pageSize": pattern(_page_size,
                                                     "a page size like 2MB or 1GB"),
                                 "limit": UINT64}, ("pageSize", "limit"))),
    "memory": obj({"kernel": INT64, "kernelTCP": INT64, "limit": INT64, "reservation": INT64,
                   "swap": INT64, "swappiness": UINT64, "disableOOMKiller": BOOL,
                   "useHierarchy": BOOL, "checkBeforeUpdate": BOOL}),
    "network": obj({"classID": UINT32,
                    "priorities": array(obj({"name": STRING, "priority": UINT32},
                                            ("name", "priority")))}),
    "rdma": mapping(obj({"hcaHandles": UINT32, "hcaObjects": UINT32})),
})

LINUX = obj({
    "devices": array(obj({"type": enum("c", "b", "u", "p"), "path": STRING,
                          "fileMode": FILEMODE, "major": INT64, "minor": INT64,
                          "uid": UINT32, "gid": UINT32}, ("type", "path"))),
    "netDevices": mapping(obj({"name": STRING})),
    "uidMappings": array(ID_MAPPING),
    "gidMappings": array(ID_MAPPING),
    "namespaces": array(obj({"type": enum(*NAMESPACE_TYPES), "path": STRING}, ("type",))),
    "resources": RESOURCES,
    "cgroupsPath": STRING,
    "rootfsPropagation": enum("private", "shared", "slave", "unbindable", "rprivate",
                              "rshared", "rslave", "runbindable"),
    "seccomp": obj({"defaultAction": SECCOMP_ACTION, "defaultErrnoRet": UINT32,
                    "flags": array(enum(*SECCOMP_FLAGS)), "listenerPath": STRING,
                    "listenerMetadata": STRING, "architectures": array(enum(*SECCOMP_ARCHES)),
                    "syscalls": array(SYSCALL)}, ("defaultAction",)),
    "sysctl": mapping(STRING),
    "maskedPaths": STRINGS,
    "readonlyPaths": STRINGS,
    "mountLabel": STRING,
    "intelRdt": obj({"closID": STRING, "schemata": STRINGS, "l3CacheSchema": STRING,
                     "memBwSchema": pattern(lambda v: v.startswith("MB:") and "\n" not in v,
                                            "an MB: schema"),
                     "enableMonitoring": BOOL}),
    "personality": obj({"domain": enum("LINUX", "LINUX32"), "flags": STRINGS}),
    "timeOffsets": obj({"boottime": TIME_OFFSET, "monotonic": TIME_OFFSET}),
    "memoryPolicy": obj({"mode": STRING, "nodes": STRING, "flags": STRINGS}, ("mode",)),
})

PROCESS = obj({
    "args": STRINGS,
    "commandLine": STRING,
    "consoleSize": obj({"height": UINT64, "width": UINT64}, ("height", "width")),
    "cwd": STRING,
    "env": STRINGS,
    "terminal": BOOL,
    "user": obj({"uid": UINT32, "gid": UINT32, "umask": UINT32,
                 "additionalGids": array(UINT32), "username": STRING}),
    "capabilities": obj({k: STRINGS for k in CAP_KINDS}),
    "apparmorProfile": STRING,
    "oomScoreAdj": INTEGER,
    "selinuxLabel": STRING,
    "ioPriority": obj({"class": enum("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"),
                       "priority": INT32}, ("class",)),
    "noNewPrivileges": BOOL,
    "scheduler": obj({"policy": enum("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
                                     "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE"),
                      "nice": INT32, "priority": INT32, "flags": STRINGS,
                      "runtime": UINT64, "deadline": UINT64, "period": UINT64}, ("policy",)),
    "rlimits": array(obj({"type": pattern(_rlimit_name, "an RLIMIT_* name"),
                          "soft": UINT64, "hard": UINT64}, ("type", "soft", "hard"))),
    "execCPUAffinity": obj({"initial": pattern(_cpu_list, "a CPU list"),
                            "final": pattern(_cpu_list, "a CPU list")}),
}, ("cwd",))

CONFIG = obj({
    "ociVersion": STRING,
    "hooks": obj({k: HOOKS for k in ("prestart", "createRuntime", "createContainer",
                                     "startContainer", "poststart", "poststop")}),
    "annotations": mapping(STRING),
    "hostname": STRING,
    "domainname": STRING,
    "mounts": array(obj({"source": STRING, "destination": STRING, "options": STRINGS,
                         "type": STRING, "uidMappings": array(ID_MAPPING),
                         "gidMappings": array(ID_MAPPING)}, ("destination",))),
    "root": obj({"path": STRING, "readonly": BOOL}, ("path",)),
    "process": PROCESS,
    "linux": LINUX,
    "freebsd": obj({"jail": obj({"vnet": enum("new", "inherit")})}),
}, ("ociVersion",))


def validate_schema(config):
    """Structural checks, as the runtime-spec JSON schema states them."""
    CONFIG(config, "")


# ---- semantic checks ---------------------------------------------------------

# Sysctls that a namespace makes the container's own (runc's and crun's list);
# any other would change the host.
IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
               "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}
UTS_SYSCTLS = {"kernel.hostname", "kernel.domainname"}


def _own_namespace(kind, namespaces):
    """Does the container get a namespace of KIND that is not the host's?"""
    for ns in namespaces:
        if ns["type"] == kind:
            path = ns.get("path")
            if not path:
                return True
            try:
                return os.stat(path).st_ino != os.stat(f"/proc/self/ns/{NS_PROC[kind]}").st_ino
            except OSError:
                return True  # reported by the namespace checks, by path
    return False


NS_PROC = {"network": "net", "ipc": "ipc", "uts": "uts"}


def _check_sysctl_namespace(key, namespaces):
    name = key.replace("/", ".")
    if name.startswith("net."):
        kind = "network"
    elif name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
        kind = "ipc"
    elif name in UTS_SYSCTLS:
        kind = "uts"
    else:
        _fail(f"linux.sysctl.{key}", "is not isolated by any namespace: setting it would "
              "change the host; remove it")
    if not _own_namespace(kind, namespaces):
        _fail(f"linux.sysctl.{key}", f"needs a new {kind} namespace (it would change the "
              f"host's); add {{\"type\": \"{kind}\"}} to linux.namespaces or remove it")


def _check_uts_sysctls(config, sysctls):
    """kernel.hostname/domainname set what the hostname/domainname fields set:
    a config that asks for two different names is refused, as runc and crun do
    (they refuse kernel.hostname even when it agrees; an agreeing or lone one
    is unambiguous, so it runs here)."""
    for key, value in sysctls.items():
        name = key.replace("/", ".")
        if name in UTS_SYSCTLS:
            field = name.split(".", 1)[1]
            if config.get(field) and value != config[field]:
                _fail(f"linux.sysctl.{key}", f"{shown(value)} contradicts {field} "
                      f"{shown(config[field])}; remove the sysctl or make them agree")


def wants_scheduling(proc, linux):
    """process.scheduler, process.ioPriority or linux.memoryPolicy is set: only
    then is scheduling.py loaded, to check or to plan them (a cold call pays
    each module's load)."""
    return bool(proc.get("scheduler") or proc.get("ioPriority") or linux.get("memoryPolicy"))


def validate_semantics(config, bundle):
    """What the schema cannot say but a Linux runtime needs."""
    root = config.get("root")
    if root is None:
        _fail("root", "missing: a Linux container needs root.path")
    validate_process(config)
    if wants_scheduling(config.get("process") or {}, config.get("linux", {})):
        from .scheduling import check as check_scheduling
        check_scheduling(config)
    for i, m in enumerate(config.get("mounts", ())):
        if not m["destination"].startswith("/"):
            _fail(f"mounts[{i}].destination", f"{shown(m['destination'])} must be an absolute path")
    linux = config.get("linux", {})
    seen = set()
    for i, ns in enumerate(linux.get("namespaces", ())):
        if ns["type"] in seen:
            _fail(f"linux.namespaces[{i}]", f"namespace {shown(ns['type'])} is listed twice")
        seen.add(ns["type"])
        if "path" in ns and not ns["path"].startswith("/"):
            _fail(f"linux.namespaces[{i}].path", f"{shown(ns['path'])} must be an absolute path")
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        _fail("linux.uidMappings", "id mappings need a user namespace in linux.namespaces")
    if "user" in seen and not any(ns["type"] == "user" and "path" in ns
                                  for ns in linux.get("namespaces", ())):
        if bool(linux.get("uidMappings")) != bool(linux.get("gidMappings")):
            _fail("linux.namespaces", "a new user namespace needs both linux.uidMappings and "
                  "gidMappings, or neither (then it maps no ids)")
        user = (config.get("process") or {}).get("user", {})
        if not linux.get("uidMappings") and (user.get("uid") or user.get("gid")
                                             or user.get("additionalGids")):
            # as crun: without mappings only root is mapped (to the runtime's own uid)
            _fail("process.user", "a user namespace without linux.uidMappings maps only root "
                  "(to the runtime's own uid), so the process cannot become this user; add "
                  "uidMappings and gidMappings")
    if "timeOffsets" in linux and "time" not in seen:
        _fail("linux.timeOffsets", "needs a time namespace in linux.namespaces")
    if config.get("hostname") and "uts" not in seen:
        _fail("hostname", "setting a hostname needs a uts namespace in linux.namespaces")
    if config.get("domainname") and "uts" not in seen:
        _fail("domainname", "setting a domainname needs a uts namespace in linux.namespaces")
    for i, d in enumerate(linux.get("devices", ())):
        if not d["path"].startswith("/") or d["path"].rstrip("/") == "":
            _fail(f"linux.devices[{i}].path", f"{shown(d['path'])} must be an absolute path")
        if d["type"] != "p" and ("major" not in d or "minor" not in d):
            _fail(f"linux.devices[{i}]", "a device of type c, b or u needs major and minor")
    if linux.get("seccomp"):
        _check_seccomp_listener(linux["seccomp"])
    _check_uts_sysctls(config, linux.get("sysctl", {}))
    for key in linux.get("sysctl", {}):
        if ".." in key or key.startswith(("/", ".")) or "\0" in key:
            _fail(f"linux.sysctl.{key}", "is not a sysctl name")
        _check_sysctl_namespace(key, linux.get("namespaces", ()))
    for field in ("maskedPaths", "readonlyPaths"):
        for i, p in enumerate(linux.get(field, ())):
            if not p.startswith("/"):
                _fail(f"linux.{field}[{i}]", f"{shown(p)} must be an absolute path")
    if "cgroupsPath" in linux and ".." in linux["cgroupsPath"].split("/"):
        _fail("linux.cgroupsPath", "must not contain '..'")
    rootfs = root_path(config, bundle)
    if not os.path.isdir(rootfs):
        raise ConfigError(f"root.path: rootfs {cut(rootfs)} does not exist or is not a "
                          "directory; create it or fix root.path in config.json")


# Fields emergence cannot honour yet: refusing is better than running a
# container that silently lacks what was asked for.
UNSUPPORTED = [
    (("process", "execCPUAffinity"), "exec CPU affinity is not supported yet"),
    (("linux", "intelRdt"), "Intel RDT is not supported"),
    (("linux", "netDevices"), "moving network devices is not supported yet"),
    (("linux", "resources", "rdma"), "the rdma controller is not supported"),
]


def _check_seccomp_listener(seccomp):
    """SCMP_ACT_NOTIFY needs an agent to answer (listenerPath); as runc, not as the
    default action, which would stop every syscall the runtime makes after the load.
    listenerMetadata without a listenerPath is ignored, as runc and crun do."""
    if seccomp["defaultAction"] == "SCMP_ACT_NOTIFY":
        _fail("linux.seccomp.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action; "
              "give it to the syscalls the agent answers")
    path = seccomp.get("listenerPath")
    if path is not None and not path.startswith("/"):
        _fail("linux.seccomp.listenerPath", f"{shown(path)} must be an absolute path")
    for i, rule in enumerate(seccomp.get("syscalls", ())):
        if rule["action"] == "SCMP_ACT_NOTIFY" and not path:
            _fail(f"linux.seccomp.syscalls[{i}].action", "SCMP_ACT_NOTIFY needs a seccomp "
                  "agent: set linux.seccomp.listenerPath to its socket")


def _get(config, path):
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return None
        config = config[key]
    return config


def _lsm_enabled(name):
    if name == "selinux":
        return os.path.exists("/sys/fs/selinux/enforce")
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def check_supported(config, warn):
    """Refuse what emergence cannot apply; warn about what this host makes moot."""
    for path, why in UNSUPPORTED:
        value = _get(config, path)
        if value:
            raise ConfigError(f"config.json: {'.'.join(path)}: {why}; remove it")
    for path, lsm in ((("process", "selinuxLabel"), "selinux"),
                      (("linux", "mountLabel"), "selinux"),
                      (("process", "apparmorProfile"), "apparmor")):
        if _get(config, path):
            where = ".".join(path)
            if _lsm_enabled(lsm):
                raise ConfigError(f"config.json: {where}: {lsm} labels are not supported yet; "
                                  "remove it")
            if lsm == "apparmor":
                # runc and crun refuse a profile they cannot apply: a container
                # that should be confined must not run unconfined
                raise ConfigError(f"config.json: {where}: AppArmor is not enabled on this "
                                  "host (/sys/module/apparmor/parameters/enabled); remove it")
            warn(f"{where} ignored: {lsm} is not enabled on this host")


def validate_process(config):
    """Checks of `process` that the schema cannot express (shared with exec)."""
    from .capabilities import usable
    process = config.get("process")
    if process is None:
        return  # optional until `start`, which then fails
    args = process.get("args")
    if not args:
        _fail("process.args", "must name the program to run (a non-empty array)")
    if not process["cwd"].startswith("/"):
        _fail("process.cwd", f"{shown(process['cwd'])} must be an absolute path")
    for i, e in enumerate(process.get("env", ())):
        if "=" not in e:
            _fail(f"process.env[{i}]", f"{shown(e)} must have the form NAME=value")
    user = process.get("user", {})
    for field in ("uid", "gid"):
        if field not in user:
            _fail("process.user", f"missing required field {field!r} (required on Linux)")
    if process.get("capabilities"):
        process["capabilities"] = usable(process["capabilities"], "process.capabilities",
                                         warn, debug_note)
    from .planner import RLIMITS
    seen = set()
    for i, rl in enumerate(process.get("rlimits", ())):
        if rl["type"] not in RLIMITS:
            _fail(f"process.rlimits[{i}].type", f"unknown rlimit {shown(rl['type'])}")
        if rl["type"] in seen:
            _fail(f"process.rlimits[{i}].type", f"{rl['type']} is given twice")
        seen.add(rl["type"])
        if rl["soft"] > rl["hard"]:
            _fail(f"process.rlimits[{i}]",
                  f"soft limit {rl['soft']} exceeds hard limit {rl['hard']}")


def root_path(config, bundle):
    path = config["root"]["path"]
    return os.path.normpath(os.path.join(bundle, path))


def load(bundle):
    """Read and fully validate BUNDLE/config.json; return the parsed dict."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"no config.json in bundle {bundle}; "
                          "run `emergence spec` there or pass --bundle") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    config = parse(raw, path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    validate_schema(config)
    validate_semantics(config, bundle)
    check_supported(config, warn)
    return config


# No field of the spec nests more than 7 containers deep; extensions
# (annotations' neighbours) get room, a parser-crashing document does not.
MAX_DEPTH = 64


def parse(raw, path):
    """A JSON document a user hands the runtime (config.json, exec's --process,
    update's --resources) as runc would read it: nested at most MAX_DEPTH levels,
    lone surrogates made U+FFFD.  Errors are one line starting with PATH."""
    try:
        doc = fastjson.loads(raw)
    except ValueError as e:
        if str(e) == fastjson.TOO_DEEP:
            raise ConfigError(_too_deep(path)) from None
        raise ConfigError(f"{path} is not valid JSON: {cut(str(e))}") from None
    deep = fastjson.too_deep(doc, MAX_DEPTH)
    if deep is not None:
        raise ConfigError(_too_deep(path, ".".join(map(str, deep[:4])) + "..."))
    if b"\\ud" in raw or b"\\uD" in raw:
        doc = without_lone_surrogates(doc)
    return doc


def _too_deep(path, where=None):
    return (f"{path}: nested too deeply (limit {MAX_DEPTH} levels)"
            + (f" at {shown(where)}" if where else "") + "; no field of the spec nests that far")


def _fffd(s):
    try:
        s.encode()
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)


def without_lone_surrogates(value):
    """VALUE with each lone UTF-16 surrogate (an escape like \\ud800 that pairs
    with nothing) replaced by U+FFFD, as Go's JSON decoder does: runc and crun
    run such a config, and every string reaches the kernel as UTF-8."""
    if isinstance(value, str):
        return _fffd(value)
    if isinstance(value, list):
        return [without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_fffd(k): without_lone_surrogates(v) for k, v in value.items()}
    return value
