"""Fuzzing: mutated config.json files and command lines end in success or one
clear error line, never a traceback, an internal error, a hang or a leftover.

Seeds: every run fuzzes with a fixed seed (the same cases in every run: a
regression net) and with one derived from the date (CI explores a new corner
each day); EMERGENCE_FUZZ_SEED=N replaces both, EMERGENCE_FUZZ_SCALE=K runs K
times as many cases (a long sweep).  Case I of seed S is built from
`random.Random(f"{S}:{I}")` alone, and each failure names S, I and the
mutations, so `EMERGENCE_FUZZ_SEED=S` reproduces it.

What runs where (per seed; a run has two seeds, so twice these):
- 500 mutated config.json files go through `check_config`, in-process: the
  functions `create` calls before it claims anything (load and validate,
  seccomp compile, capability check, HOME, cgroup path and settings, the plan
  and its encoding, the hooks' environments).
- 60 of those go through the real binary's cold path: `create`, every third
  one `start`, then `delete -f`, with a private --root and rootfs copy; after
  each, no state dir, cgroup or mount may name the container.
- 300 command lines through the real binary's cold path (the planner is pointed
  at a socket that does not exist), four at a time: half random words (verbs,
  flags, odd values, missing arguments), half plausible commands with one thing
  off, against fresh ids, a running container (exec, update with mutated
  --process/--resources documents, pause, kill... in any order) and an empty
  store.  Verbs that would start daemons, touch the host's network or reach
  the network (node, net, pull, cluster, build...) only ever get --help or an
  unknown option.
"""

import datetime
import json
import os
import random
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import base_config, emergence_command, leftovers

pytestmark = pytest.mark.slow

FIXED_SEED = 25
SCALE = int(os.environ.get("EMERGENCE_FUZZ_SCALE", "1"))  # more cases, for a long sweep
CONFIGS = 500 * SCALE
CLI_CONFIGS = 60 * SCALE
ARGVS = 300 * SCALE
TIMEOUT = 30


def seeds():
    env = os.environ.get("EMERGENCE_FUZZ_SEED")
    if env:
        return [int(env)]
    return [FIXED_SEED, int(datetime.date.today().strftime("%Y%m%d"))]


# ---- values a mutation puts in place ------------------------------------------------

DEEP = "\x00deep\x00"  # replaced in the JSON text by deeply nested arrays
ODD_STRINGS = ["", " ", "\ud800", "\udfff", "\udc80", "a\ud800b", "\0", "a\0b", "\n", "a\nb",
               "é", "\u202e", "\U0001f600", "\ufeff", "../../etc", "/", "//", "/proc/self",
               "=", "a=b", "noequals", "x" * 100_000, "/" + "a" * 5000, "-1", "0x10", "null",
               "SCMP_ACT_BOGUS", "CAP_BOGUS", "RLIMIT_BOGUS", "bogus", " CAP_KILL",
               "cap_kill", "rw,ro", "mode=0777,size=1", "%PID%", "$PID", "\t", "1MB", "MB:0=1"]
NUMBERS = [0, -1, 1, 7, 255, 256, 511, 512, 65535, 65536, 2**31 - 1, 2**31, -2**31 - 1,
           2**32 - 1, 2**32, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64, 10**30,
           -10**30, 1.5, -0.0, 1e308, 0.1]


def odd_value(rng, depth=0):
    r = rng.random()
    if r < 0.3:
        return rng.choice(ODD_STRINGS)
    if r < 0.55:
        return rng.choice(NUMBERS)
    if r < 0.65:
        return rng.choice([None, True, False])
    if r < 0.67:
        return DEEP
    if r < 0.85 or depth > 2:
        return rng.choice([[], {}, [rng.choice(ODD_STRINGS)], {"x": 1}])
    if r < 0.93:
        return [odd_value(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return {rng.choice(ODD_STRINGS + ["k"]): odd_value(rng, depth + 1)}


# Pieces of valid config to graft, so mutations reach the deeper code.
def grafts(rng):
    hook = {"path": "/bin/true", "args": ["true", "x"], "env": ["A=b"], "timeout": 5}
    return [
        (("hooks",), {k: [dict(hook)] for k in rng.sample(
            ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
             "poststop"], 2)}),
        (("linux", "seccomp"), {
            "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{"names": ["mkdirat", "chmod"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1,
                          "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
        (("process", "rlimits"), [{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 64},
                                  {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]),
        (("linux", "devices"), [{"type": "c", "path": "/dev/fuzz", "major": 1, "minor": 3,
                                 "fileMode": 438, "uid": 0, "gid": 0}]),
        (("linux", "sysctl"), {"net.ipv4.ip_forward": "1", "kernel.shmmni": "4096"}),
        (("linux", "resources"), {
            "memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20},
            "pids": {"limit": 64}, "cpu": {"shares": 512, "quota": 50000, "period": 100000,
                                          "cpus": "0", "mems": "0"},
            "blockIO": {"weight": 100}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]}),
        (("mounts",), base_mounts() + [
            {"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "rnoexec", "mode=755"]}]),
        (("process", "capabilities"), {
            "bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL", "CAP_CHOWN"], "inheritable": ["CAP_CHOWN"],
            "ambient": ["CAP_CHOWN"], "extra": ["CAP_KILL"]}),
        (("linux", "uidMappings"), [{"containerID": 0, "hostID": 100000, "size": 65536}]),
        (("linux", "gidMappings"), [{"containerID": 0, "hostID": 100000, "size": 65536}]),
        (("linux", "namespaces"), [{"type": t} for t in
                                   ("pid", "network", "ipc", "uts", "mount", "cgroup", "user")]),
        (("process", "user"), {"uid": 1000, "gid": 1000, "umask": 18,
                               "additionalGids": [5, 6]}),
        (("annotations",), {"org.example.key": "value", "a": "b"}),
        (("domainname",), "example.org"),
        (("linux", "maskedPaths"), ["/proc/kcore", "/sys/firmware"]),
        (("linux", "readonlyPaths"), ["/proc/sys"]),
        (("process", "scheduler"), {"policy": "SCHED_BATCH", "nice": 5}),
        (("process", "ioPriority"), {"class": "IOPRIO_CLASS_BE", "priority": 4}),
        (("process", "oomScoreAdj"), 100),
        (("linux", "personality"), {"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}),
        (("linux", "timeOffsets"), {"monotonic": {"secs": 10, "nanosecs": 0}}),
        (("linux", "rootfsPropagation"), "rslave"),
        (("process", "env"), ["PATH=/bin:/usr/bin", "HOME=/root", "A=1"]),
        (("process", "consoleSize"), {"height": 24, "width": 80}),
        (("mounts",), base_mounts() + [
            {"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["bind", "idmap"],
             "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000}],
             "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000}]}]),
        (("linux", "namespaces"), [{"type": "mount"}, {"type": "pid"},
                                   {"type": "network", "path": "/proc/self/ns/net"}]),
        (("linux", "resources", "unified"), {"pids.max": "10", "memory.max": "max"}),
        (("linux", "cgroupsPath"), "fuzzcg"),
        (("linux", "mountLabel"), "system_u:object_r:container_file_t:s0"),
        (("process", "terminal"), True),
    ]


def base_mounts():
    return json.loads(json.dumps(base_config(["true"])["mounts"]))


# ---- mutating a config ---------------------------------------------------------------

def _nodes(tree, path=()):
    """Every (path, value) in TREE, the root included."""
    out = [(path, tree)]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _nodes(v, path + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _nodes(v, path + (i,))
    return out


def _parent(tree, path):
    for k in path[:-1]:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    for k in path[:-1]:
        if isinstance(tree, dict):
            tree = tree.setdefault(k, {})
            if not isinstance(tree, (dict, list)):
                return False
        else:
            return False
    if isinstance(tree, dict):
        tree[path[-1]] = value
        return True
    return False


def mutate(rng, config):
    """Graft a valid piece (often), then apply 1 or 2 random mutations to CONFIG in
    place (often inside the graft); return their descriptions."""
    done = []
    within = ()
    if rng.random() < 0.6:
        path, value = rng.choice(grafts(rng))
        if _set(config, path, value):
            done.append(f"graft {'.'.join(path)}")
            within = path
    for _ in range(rng.randint(1, 2)):
        nodes = [(p, v) for p, v in _nodes(config) if p]
        if within and rng.random() < 0.7:
            nodes = [(p, v) for p, v in nodes if p[:len(within)] == within] or nodes
        path, old = rng.choice(nodes)
        parent = _parent(config, path)
        key = path[-1]
        where = ".".join(map(str, path))
        r = rng.random()
        if r < 0.15:
            del parent[key]
            done.append(f"delete {where}")
        elif r < 0.3:
            new = odd_value(rng)
            parent[key] = new
            done.append(f"set {where} = {_short(new)}")
        elif isinstance(old, list):
            if old and rng.random() < 0.6:
                old.append(json.loads(json.dumps(rng.choice(old))))
                done.append(f"duplicate an item of {where}")
            else:
                old.append(odd_value(rng))
                done.append(f"append to {where}")
        elif isinstance(old, dict):
            k = rng.choice(["extra", "bogus", "", "\ud800", "x" * 300, "CAP_KILL", "type",
                            "path", "net.core.somaxconn"])
            old[k] = odd_value(rng)
            done.append(f"add key {_short(k)} to {where}")
        elif isinstance(old, str):
            new = rng.choice([old.lower(), old.upper(), old + "X", old[:-1], old + "\ud800",
                              old * 2, " " + old, rng.choice(ODD_STRINGS)])
            parent[key] = new
            done.append(f"string {where} = {_short(new)}")
        elif isinstance(old, bool):
            parent[key] = not old
            done.append(f"flip {where}")
        elif isinstance(old, (int, float)):
            new = rng.choice([-old, old * 2**40, -1, 2**64, old + 0.5, rng.choice(NUMBERS)])
            parent[key] = new
            done.append(f"number {where} = {_short(new)}")
        else:
            parent[key] = odd_value(rng)
            done.append(f"retype {where}")
    return done


def _short(v):
    s = repr(v)
    return s if len(s) < 60 else s[:57] + "..."


def config_text(rng, config):
    """The JSON text of CONFIG, sometimes broken at the text level."""
    depth = rng.choice([50, 1000, 10_000, 100_000])
    text = json.dumps(config).replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    r = rng.random()
    if r < 0.02:
        return text[:rng.randrange(len(text))], "truncated"
    if r < 0.04:
        return "[" * 10_000 + "]" * 10_000, "a 10,000-deep array"
    if r < 0.06:
        return '{"a":' * 10_000 + "1" + "}" * 10_000, "10,000 nested objects"
    if r < 0.07:
        return "\ufeff" + text, "a byte order mark"
    if r < 0.08:
        return text.replace('"process"', '"process": 1, "process"', 1), "a duplicate key"
    if r < 0.09:
        return text.replace("1024", "NaN", 1), "NaN"
    if r < 0.10:
        return text.replace("1024", "1e999", 1), "1e999"
    if r < 0.11:
        return text.encode()[:-1] + b"\xff", "invalid UTF-8"
    return text, None


def side_files(seed, i):
    """Mutated documents for exec --process and update --resources, by name."""
    rng = random.Random(f"files:{seed}:{i}")
    base = json.loads(json.dumps(base_config(["true"], "ROOTFS")))
    doc = {"process": base["process"],
           "linux": {"resources": {"memory": {"limit": 256 << 20}, "pids": {"limit": 100}}}}
    mutate(rng, doc)
    proc = config_text(rng, doc.get("process"))[0]
    linux = doc.get("linux")
    res = config_text(rng, linux.get("resources") if isinstance(linux, dict) else linux)[0]
    return {"process.json": proc, "res.json": res}


def make_case(seed, i):
    rng = random.Random(f"{seed}:{i}")
    # a deep copy: default_config shares its lists between calls
    config = json.loads(json.dumps(base_config(["true"], "ROOTFS")))
    steps = mutate(rng, config)
    text, how = config_text(rng, config)
    if how:
        steps.append(how)
    return text, steps


# ---- checking ------------------------------------------------------------------------

def clear_line(message):
    """Why MESSAGE is not one clear error line, or None."""
    if not message.strip():
        return "an empty error"
    if "\n" in message.strip():
        return "more than one line"
    if "Traceback" in message or "internal error" in message:
        return "an internal error"
    if len(message) > 700:  # the CLI keeps 600 characters at most (errors.one_line)
        return f"a {len(message)}-character line (a value echoed whole?)"
    return None


def check_config(bundle):
    """What `create` does before it claims a state dir, in-process.  Returns the
    error line, or None when the config is accepted."""
    from emergence.errors import EmergenceError
    from emergence.runtime import config as config_mod
    from emergence.runtime import create as create_mod
    from emergence.runtime.cgroups import resources
    from emergence.runtime.cgroups.paths import relative_path
    from emergence.runtime.planner import Planner
    try:
        config = config_mod.load(bundle)
        rootfs = config_mod.root_path(config, bundle)
        linux = config.get("linux", {})
        bpf = None
        if linux.get("seccomp"):
            from emergence.runtime.seccomp import compile_bpf, filter_flags
            bpf = (filter_flags(linux["seccomp"]), compile_bpf(linux["seccomp"]).hex())
        create_mod.check_capabilities_held(config.get("process"))
        if config.get("process"):
            from emergence.runtime.userdb import set_home
            set_home(config["process"], rootfs)
        relative_path(linux.get("cgroupsPath"), "fuzz")
        res = create_mod._device_allow(config)
        if res:
            resources.v1_settings(res)
            resources.v2_settings(res)
        hooks = config.get("hooks", {})
        Planner(config, bundle, rootfs, "/run/fuzz-state", None, [],
                hook_state="{}", resume_fd=3).build(bpf).encode()
        from emergence.runtime.hooks import environment
        for kind in ("prestart", "createRuntime", "poststart", "poststop"):
            for hook in hooks.get(kind, ()):
                environment(hook)
    except EmergenceError as e:
        return str(e)
    return None


def test_mutated_configs_in_process(tmp_path, rootfs, capfd):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    errors = accepted = 0
    bad = []
    for seed in seeds():
        for i in range(CONFIGS):
            text, steps = make_case(seed, i)
            text = text.replace("ROOTFS", rootfs) if isinstance(text, str) else \
                text.replace(b"ROOTFS", rootfs.encode())
            data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
            (bundle / "config.json").write_bytes(data)
            try:
                msg = check_config(str(bundle))
            except Exception as e:  # what the CLI would call an internal error
                bad.append(f"seed {seed} case {i} {steps}: {type(e).__name__}: "
                           f"{str(e)[:200]}")
                continue
            if msg is None:
                accepted += 1
                continue
            errors += 1
            why = clear_line(msg)
            if why:
                bad.append(f"seed {seed} case {i} {steps}: {why}: {msg[:300]!r}")
    capfd.readouterr()  # the warnings of accepted configs
    if os.environ.get("EMERGENCE_FUZZ_SHOW"):
        print(f"{accepted} accepted, {errors} refused")
    assert not bad, f"{len(bad)} bad outcomes:\n" + "\n".join(bad)
    assert accepted and errors, (accepted, errors)  # the fuzzer reaches both outcomes


# ---- through the real binary ----------------------------------------------------------

def cold_env():
    """The planner pointed at nothing: every call takes the cold path."""
    return dict(os.environ, EMERGENCE_PLANNER_SOCKET="/nonexistent/fuzz/planner.sock")


def call(argv, cwd, timeout=TIMEOUT):
    """Run the binary with ARGV; (exit code, stderr), or None on a hang."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            p = subprocess.run(emergence_command() + argv, cwd=cwd, env=cold_env(),
                               stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        err.seek(0)
        return p.returncode, err.read().decode(errors="replace")


def outcome_problem(result):
    """Why RESULT (from `call`) is not success or one clear error line, or None."""
    if result is None:
        return "a hang"
    code, err = result
    lines = [line for line in err.splitlines()
             if line.strip() and not line.startswith("emergence: warning:")]
    if code == 0:
        return "an internal error on success" if "internal error" in err else None
    if len(lines) != 1:
        return f"{len(lines)} error lines: {err[:300]!r}"
    why = clear_line(lines[0])
    return f"{why}: {lines[0][:300]!r}" if why else None


@pytest.fixture(scope="module")
def private(tmp_path_factory, rootfs):
    """A state root, a store, a copied rootfs (devices and cwds a mutated config
    makes land there, not in the session's) and a prefix for container ids."""
    if os.geteuid() != 0:
        pytest.skip("runs real containers: needs root")
    base = tmp_path_factory.mktemp("fuzz")
    subprocess.run(["cp", "-a", rootfs, str(base / "rootfs")], check=True)
    store = base / "store"
    (store / "blobs" / "sha256").mkdir(parents=True)
    (store / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (store / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    return {"base": base, "root": str(base / "state"), "store": str(base / "store"),
            "rootfs": str(base / "rootfs"), "prefix": f"fz{os.getpid()}"}


def no_leftovers(private):
    """Delete whatever is left under the private root, then insist nothing was."""
    root = private["root"]
    left = sorted(os.listdir(root)) if os.path.isdir(root) else []
    for cid in left:
        call(["--root", root, "delete", "--force", cid], private["base"])
    stray = leftovers(private["prefix"])
    still = os.listdir(root) if os.path.isdir(root) else []
    return left, stray + still


def test_mutated_configs_through_the_cli(restore_v2_root, private):
    """CLI_CONFIGS mutated bundles: create, sometimes start, delete -f."""
    root, bad, n, made = private["root"], [], 0, 0
    for seed in seeds():
        for i in range(0, CONFIGS, CONFIGS // CLI_CONFIGS):
            text, steps = make_case(seed, i)
            cid = f"{private['prefix']}-{seed % 1000}-{i}"
            if isinstance(text, str):
                text = text.replace("ROOTFS", private["rootfs"]).replace(
                    '"cgroupsPath": "', f'"cgroupsPath": "/{cid}/')
                text = text.encode("utf-8", "surrogatepass")
            bundle = private["base"] / cid
            bundle.mkdir()
            (bundle / "config.json").write_bytes(text)
            what = f"seed {seed} case {i} {steps}"
            created = call(["--root", root, "create", "--bundle", str(bundle), cid],
                           private["base"])
            n += 1
            made += created is not None and created[0] == 0
            problem = outcome_problem(created)
            if not problem and created[0] == 0 and i % 3 == 0:
                problem = outcome_problem(call(["--root", root, "start", cid],
                                               private["base"]))
                what += " (start)"
            deleted = call(["--root", root, "delete", "--force", cid], private["base"])
            problem = problem or (outcome_problem(deleted) if deleted is None or
                                  created[0] == 0 else None)
            if problem:
                bad.append(f"{what}: {problem}")
            left, stray = no_leftovers(private)
            if left or stray:
                bad.append(f"{what}: left behind {left} {stray}")
    if os.environ.get("EMERGENCE_FUZZ_SHOW"):
        print(f"{n} configs, {made} created")
    assert n >= CLI_CONFIGS and n // 10 < made < n  # both outcomes
    assert not bad, f"{len(bad)} bad outcomes:\n" + "\n".join(bad)


# ---- random command lines ---------------------------------------------------------------

# Verbs that act on the private root and store only: their handlers may run.
RUNNABLE = ["spec", "create", "start", "run", "state", "kill", "delete", "list", "exec",
            "pause", "resume", "ps", "events", "update", "features", "images", "inspect",
            "tag", "rmi", "gc", "verify", "export", "import", "bundle"]
# Verbs that would start daemons, touch the host's network, reach the network or
# build with nix: their command lines always carry an unknown option or --help,
# so only the parser and help run.
PARSED_ONLY = ["node", "net", "pull", "push", "peers", "cluster", "submit", "tasks", "place",
               "pipeline", "stats", "top", "probe", "build"]
ODD_ARGS = ["", "-", "--", "---", "--=", "-=x", "=", "x", "a/b", "../x", ".", "..", "a b",
            "é", "\udcff", "a\nb", "0", "-1", "99999999999999999999", "x" * 300,
            "y" * 100_000, "/nonexistent/x", "/", "true", "sh", "json", "table", "false",
            "KILL", "SIGKILL", "9", "0x1", "1e3", "{}", "[]", "null", "sha256:" + "0" * 64,
            "busybox:latest", "--root", "--help", "-h", "help"]


# Plausible values by option name; --net and --publish are never given (they would
# attach containers to the host's Relay networks).
PLAUSIBLE = {
    "pid-file": ["fuzz.pid", "/", "d/x.pid"], "console-socket": ["sock", "/nonexistent/s"],
    "preserve-fds": ["0", "1", "-1", "x", "100000"], "format": ["table", "json", "yaml"],
    "process": ["process.json", "/"], "cwd": ["/", "rel", "/tmp"],
    "env": ["A=1", "NOEQ", "=x"], "user": ["0:0", "1000", "x:y", "-1", "0:99999999999"],
    "additional-gids": ["5", "x", "-1"], "cap": ["CAP_KILL", "CAP_BOGUS", "kill"],
    "interval": ["1s", "0", "x", "-5s", "1h"], "resources": ["-", "res.json"],
    "memory": ["64M", "x", "-1", "1", "99999999999999999999", "inf", "1e400", "nan"],
    "cpu-share": ["512", "-1", "x"], "cpu-quota": ["-1", "50000"], "pids-limit": ["10", "0"],
    "cpuset-cpus": ["0", "0-999", "x"], "blkio-weight": ["100", "5", "x"],
    "o": ["out.tar"], "t": ["fuzz:latest", "bad name"], "cgroup": ["x", "a:b"],
    "apparmor": ["x"], "process-label": ["x"], "mem-bw-schema": ["MB:0=1"],
}
FORMS = {  # positional arguments after the options
    "create": ["ID"], "run": ["ID"], "start": ["ID"], "state": ["ID"], "delete": ["ID"],
    "kill": ["ID", "SIG"], "exec": ["ID", "true"], "pause": ["ID"], "resume": ["ID"],
    "ps": ["ID"], "events": ["ID"], "update": ["ID"], "inspect": ["IMG"], "rmi": ["IMG"],
    "tag": ["IMG", "IMG"], "export": ["IMG"], "import": ["FILE"], "bundle": ["IMG", "DIR"],
}


def plausible_argv(rng, private, bundle, cid, target):
    """A command line a person might type, with one thing off now and then."""
    from emergence import cli
    verb = rng.choice(sorted(FORMS) + ["list", "features", "gc", "images", "spec"])
    part = cli.VERB_PART[verb]
    table = next(v.options for v in cli._commands(part).VERBS if v.name == verb)
    argv = [verb]
    if verb in ("exec", "update") and rng.random() < 0.6:  # a mutated document
        argv += {"exec": ["--process", "process.json"],
                 "update": ["--resources", "res.json"]}[verb]
        argv.append(target if rng.random() < 0.8 else cid)
        return ["--root", private["root"], "--store", private["store"]] + argv
    for name in rng.sample(sorted(set(table) - {"net", "publish"}),
                           min(len(table) - 2 if "net" in table else len(table),
                               rng.randint(0, 3))):
        argv.append("--" + name)
        if table[name].kind != "flag":
            argv.append(bundle if name == "bundle" else
                        rng.choice(PLAUSIBLE.get(name, ["x"]) + ["", "\udcff"]))
    if verb == "events" and "--stats" not in argv:
        argv.append("--stats")  # without it, events streams until the container ends
    ids = [cid, target, target, "\udcff", "a/b", "x" * 300]
    for form in FORMS.get(verb, ()):
        argv.append({"ID": rng.choice(ids), "SIG": rng.choice(["0", "KILL", "SIGUSR1", "99",
                                                             "-1", "bogus", "CONT"]),
                     "IMG": rng.choice(["busybox:latest", "sha256:" + "0" * 64, "", "x:"]),
                     "FILE": rng.choice(["/nonexistent/x.tar", "/", bundle + "/config.json"]),
                     "DIR": rng.choice(["out", "/nonexistent/x"])}.get(form, form))
    r = rng.random()
    if r < 0.1:
        del argv[rng.randrange(len(argv))]
    elif r < 0.2:
        argv.insert(rng.randrange(len(argv) + 1), rng.choice(ODD_ARGS))
    return ["--root", private["root"], "--store", private["store"]] + argv


def random_argv(rng, private, bundle, cid, target):
    if rng.random() < 0.5:
        return plausible_argv(rng, private, bundle, cid, target)
    from emergence import cli
    from emergence.command import GLOBAL_OPTIONS
    verb = rng.choice(RUNNABLE * 3 + PARSED_ONLY + ["help", "frobnicate", "", "-x"])
    argv = []
    for _ in range(rng.choice([0, 0, 1, 2])):  # global options (never root or store)
        name = rng.choice([n for n in GLOBAL_OPTIONS if n not in ("root", "store")]
                          + ["bogus"])
        argv.append(rng.choice(["--", "-"]) + name)
        kind = GLOBAL_OPTIONS[name].kind if name in GLOBAL_OPTIONS else "value"
        if kind != "flag" and rng.random() < 0.9:
            argv.append(rng.choice(["fuzz.log", "text", "json", "xml", "true"] + ODD_ARGS))
    argv.append(verb)
    options = {}
    if verb in cli.VERB_PART:
        part = cli.VERB_PART[verb]
        options = {o: v.kind for v in cli._commands(part).VERBS if v.name == verb
                   for o, v in v.options.items()}
    values = ODD_ARGS + [cid, cid, bundle, bundle, "fuzz.pid", private["store"], "1"]
    for _ in range(rng.randint(0, 4)):
        r = rng.random()
        if r < 0.5 and options:
            name = rng.choice(sorted(options))
            argv.append(rng.choice(["--", "-"]) + name
                        + (f"={rng.choice(values)}" if rng.random() < 0.2 else ""))
            if options[name] != "flag" and rng.random() < 0.9:
                argv += [rng.choice(values) for _ in range(2 if options[name] == "pair"
                                                            else 1)]
        elif r < 0.6:
            argv.append("--" + rng.choice(["bogus", "", "x" * 300, "bundle=", "force=maybe"]))
        else:
            argv.append(rng.choice(values))
    if verb in PARSED_ONLY:  # first after the verb, so no option takes it as its value
        argv.insert(argv.index(verb) + 1, rng.choice(["--help", "-h", "--fuzz-bogus"]))
    return ["--root", private["root"], "--store", private["store"]] + argv


def test_random_command_lines(restore_v2_root, private):
    """Half are random words, half plausible commands: against a fresh id, a
    running container (`target`: exec, update, pause, kill... may reach it in
    any order), an empty store."""
    bundle = private["base"] / "good"
    bundle.mkdir()
    config = base_config(["true"], private["rootfs"])
    (bundle / "config.json").write_text(json.dumps(config))
    sleeper = private["base"] / "sleeper"
    sleeper.mkdir()
    (sleeper / "config.json").write_text(json.dumps(base_config(["sleep", "600"],
                                                                private["rootfs"])))
    target = f"{private['prefix']}-target"
    assert call(["--root", private["root"], "run", "--detach", "--bundle", str(sleeper),
                 target], private["base"]) == (0, "")
    cases = []
    for seed in seeds():
        for i in range(ARGVS):
            rng = random.Random(f"argv:{seed}:{i}")
            cid = f"{private['prefix']}-a{seed % 1000}-{i}"
            cases.append((seed, i, random_argv(rng, private, str(bundle), cid, target)))

    def one(case):
        seed, i, argv = case
        cwd = private["base"] / f"cwd-{seed}-{i}"
        cwd.mkdir()
        for name, text in side_files(seed, i).items():
            if name in argv:
                data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
                (cwd / name).write_bytes(data)
        return case, call(argv, cwd)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, cases))
    bad = [f"seed {seed} case {i} {[a[:40] for a in argv]}: {outcome_problem(result)}"
           for (seed, i, argv), result in results if outcome_problem(result)]
    left, stray = no_leftovers(private)
    codes = {}
    for (_, _, argv), result in results:
        verb = next((a for a in argv[4:] if not a.startswith("-")), "")
        codes.setdefault(result and result[0], []).append(verb)
    if os.environ.get("EMERGENCE_FUZZ_SHOW"):
        for code, verbs in codes.items():
            print(code, len(verbs), sorted(set(verbs))[:30])
    assert len(results) >= ARGVS
    # both outcomes, and handlers that ran: the generator reaches past the parser
    assert len(codes.get(0, ())) > ARGVS // 10 and len(codes.get(1, ())) > ARGVS // 10
    assert not bad and not stray, f"{len(bad)} bad outcomes:\n" + "\n".join(bad) + \
        f"\nleft behind: {stray}"
