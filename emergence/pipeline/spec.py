"""The pipeline file: TOML, JSON, or Nix (nix/lib.nix `pipeline`), validated
whole before anything runs.

    [secrets]
    TOKEN = { env = "CI_TOKEN" }          # or { file = "path" }

    [stages.build]
    image = "image.nix"                    # built with `emergence build`; or a store ref
    command = "sh build.sh"
    env = { CFLAGS = "-O2" }
    inputs = ["src/**/*.c", "build.sh", "@gen"]   # work-tree globs; @STAGE = its outputs
    outputs = ["bin/hello"]                # paths under /out that the stage must leave
    needs = ["gen"]
    timeout = 60                           # seconds
    retries = { count = 2, exit_codes = [75] }
    limits = { memory = "512M", cpus = 1.5, pids = 256 }
    network = false                        # true/"host", or a Relay network "NAME[:ip=IP]"
    cache = true
    secrets = ["TOKEN"]

Every problem is one line naming the stage and the field; all of them are
found before the file is refused (exit 2).
"""

import glob
import os

from ..errors import EmergenceError

FIELDS = {"image", "command", "env", "inputs", "outputs", "needs", "timeout", "retries",
          "network", "cache", "secrets", "description", "limits"}
LIMITS = {"memory", "cpus", "pids"}
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class PipelineError(EmergenceError):
    """The pipeline file is invalid: nothing ran.  PROBLEMS holds every one
    found (validation goes on after the first), each one line."""

    exit_code = 2

    def __init__(self, message, problems=None):
        super().__init__(message)
        self.problems = problems or [message]


class _Bad(Exception):
    """One field's problem: recorded, and validation goes on with the next."""


class Stage:
    __slots__ = ("name", "image", "command", "env", "inputs", "stage_inputs", "outputs",
                 "needs", "timeout", "retries", "retry_codes", "network", "cache", "secrets",
                 "description", "limits", "relay")


class Pipeline:
    def __init__(self, path, base, stages, secrets):
        self.path = path
        self.base = base          # the work tree inputs are relative to
        self.stages = stages      # name -> Stage, in file order
        self.secrets = secrets    # name -> {"env": VAR} | {"file": path}

    def order(self):
        """Stage names, each after everything it needs (file order breaks ties)."""
        done, out = set(), []

        def visit(name):
            if name in done:
                return
            done.add(name)
            for n in self.stages[name].needs:
                visit(n)
            out.append(name)
        for name in self.stages:
            visit(name)
        return out

    def downstream(self, name):
        return [s for s in self.stages.values() if name in s.needs]


def _err(stage, field, msg):
    where = f"stage {stage!r}, field {field!r}" if stage else f"field {field!r}"
    raise _Bad(f"pipeline: {where}: {msg}")


def _load(path):
    if path.endswith(".nix"):
        try:
            open(path, "rb").close()
        except OSError as e:
            raise PipelineError(f"pipeline: cannot read {path}: {e.strerror}") from None
        return _eval_nix(path)
    from ..docfile import load
    return load(path, "json" if path.endswith(".json") else "toml", PipelineError, "pipeline: ")


def _eval_nix(path):
    """A pipeline written with nix/lib.nix's `pipeline`, evaluated (offline) to JSON."""
    import json
    import subprocess

    from ..image.nix import search_path
    cmd = ["nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode",
           "--option", "substituters", "", *search_path(), path]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise PipelineError("pipeline: a .nix pipeline needs nix-instantiate "
                            "(apt-get install nix-bin); or write it in TOML") from None
    if p.returncode != 0:
        errs = [ln.strip() for ln in p.stderr.splitlines() if ln.strip().startswith("error")]
        raise PipelineError(f"pipeline: {path} does not evaluate: "
                            f"{errs[-1] if errs else p.stderr.strip()[-200:]}")
    return json.loads(p.stdout)


def _strings(stage, field, value):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        _err(stage, field, "must be a list of non-empty strings")
    return list(value)


def _bad_glob(pattern):
    """Why PATTERN is not a usable work-tree glob, or None."""
    if pattern.startswith("/"):
        return "must be relative to the pipeline's directory"
    parts = pattern.split("/")
    if ".." in parts:
        return "must not leave the work tree (..)"
    if pattern.count("[") != pattern.count("]"):
        return "has an unbalanced [ ]"
    for p in parts:
        if "**" in p and p != "**":
            return "uses ** inside a name; ** must be a whole path component"
    return None


def expand(base, pattern):
    """Files (relative paths, sorted) that a work-tree input names; a directory
    means everything under it."""
    found = set()
    for hit in glob.glob(pattern, root_dir=base, recursive=True):
        full = os.path.join(base, hit)
        if os.path.isdir(full):
            for d, _, files in os.walk(full):
                for name in files:
                    found.add(os.path.relpath(os.path.join(d, name), base))
        elif os.path.isfile(full):
            found.add(os.path.normpath(hit))
    return sorted(found)


def load(path):
    """The pipeline at PATH, validated whole: a PipelineError lists every problem."""
    raw = _load(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), dict) or not raw["stages"]:
        raise PipelineError(f"pipeline: {path} has no [stages] table")
    problems = []

    def check(fn, *args):
        try:
            return fn(*args)
        except _Bad as e:
            problems.append(str(e))
            return None

    unknown = set(raw) - {"stages", "secrets", "version", "cluster"}
    for u in sorted(unknown):
        check(_err, None, u, "unknown top-level field (expected stages, secrets, cluster)")
    if not isinstance(raw.get("cluster", False), bool):
        check(_err, None, "cluster", "must be true or false (run the stages on the cluster)")
    base = os.path.dirname(os.path.abspath(path))
    secrets = {}
    for name, src in (raw.get("secrets") or {}).items():
        if not isinstance(src, dict) or len(src) != 1 or next(iter(src)) not in ("env", "file"):
            check(_err, None, f"secrets.{name}", 'must be { env = "VAR" } or { file = "path" }')
        secrets[name] = src
    stages = {}
    for name, s in raw["stages"].items():
        if not isinstance(s, dict):
            check(_err, name, "stage", "must be a table")
            continue
        st = Stage()
        st.name = name
        for f in _STAGE_CHECKS:
            check(f, st, s, base, secrets)
        stages[name] = st
    for st in stages.values():
        for n in st.needs:
            if n not in stages:
                field = "inputs" if n in st.stage_inputs else "needs"
                check(_err, st.name, field, f"unknown stage {n!r}")
            elif n == st.name:
                check(_err, st.name, "needs", "a stage cannot need itself")
    if not problems:  # a cycle is only well defined once every name resolves
        check(_check_cycles, stages)
    if problems:
        msg = problems[0] if len(problems) == 1 else \
            f"pipeline: {path}: {len(problems)} problems; the first: {problems[0]}"
        raise PipelineError(msg, problems)
    p = Pipeline(os.path.abspath(path), base, stages, secrets)
    p.cluster = raw.get("cluster", False) is True
    return p


def _c_name(st, s, base, secrets):
    st.description = s.get("description", "")
    if not st.name.replace("-", "").replace("_", "").isalnum():
        _err(st.name, "name", "use letters, digits, - and _ only")


def _c_fields(st, s, base, secrets):
    extra = set(s) - FIELDS
    if extra:
        _err(st.name, sorted(extra)[0], f"unknown field (known: {', '.join(sorted(FIELDS))})")


def _c_image(st, s, base, secrets):
    st.image = s.get("image")
    if not isinstance(st.image, str) or not st.image:
        st.image = ""
        _err(st.name, "image", "is required: a .nix file or an image in the store")
    if st.image.endswith(".nix"):
        st.image = os.path.normpath(os.path.join(base, st.image))
        if not os.path.isfile(st.image):
            _err(st.name, "image", f"{s['image']} does not exist")


def _c_command(st, s, base, secrets):
    st.command = s.get("command")
    if isinstance(st.command, list):
        if not st.command or not all(isinstance(a, str) for a in st.command):
            _err(st.name, "command", "must be a string or a non-empty list of strings")
    elif not isinstance(st.command, str) or not st.command.strip():
        _err(st.name, "command", "is required (a shell command or an argv list)")


def _c_env(st, s, base, secrets):
    st.env = {}
    env = s.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, (str, int, float, bool))
                                            for v in env.values()):
        _err(st.name, "env", "must be a table of NAME = value")
    st.env = {k: str(v) for k, v in env.items()}


def _c_needs_inputs(st, s, base, secrets):
    st.needs, st.inputs, st.stage_inputs = [], [], []
    st.needs = _strings(st.name, "needs", s.get("needs", []))
    bad = []
    for item in _strings(st.name, "inputs", s.get("inputs", [])):
        if item.startswith("@"):
            st.stage_inputs.append(item[1:])
            if item[1:] not in st.needs:
                st.needs.append(item[1:])
            continue
        why = _bad_glob(item)
        if not why and not expand(base, item):
            why = f"matches no file under {base}"
        if why:
            bad.append(f"{item!r} {why}")
        else:
            st.inputs.append(item)
    if bad:
        _err(st.name, "inputs", "; ".join(bad))


def _c_outputs(st, s, base, secrets):
    st.outputs = []
    st.outputs = _strings(st.name, "outputs", s.get("outputs", []))
    for o in st.outputs:
        if o.startswith("/") or ".." in o.split("/"):
            _err(st.name, "outputs", f"{o!r} must be a path under /out")


def _c_timeout(st, s, base, secrets):
    st.timeout = 3600.0
    t = s.get("timeout", 3600)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
        _err(st.name, "timeout", "must be a positive number of seconds")
    st.timeout = float(t)


def _c_retries(st, s, base, secrets):
    st.retries, st.retry_codes = 0, None
    r = s.get("retries", 0)
    if isinstance(r, int) and not isinstance(r, bool):
        st.retries, st.retry_codes = r, None   # None: any failure is retryable
    elif isinstance(r, dict) and set(r) <= {"count", "exit_codes"}:
        st.retries = r.get("count", 1)
        st.retry_codes = r.get("exit_codes")
        if st.retry_codes is not None and not (
                isinstance(st.retry_codes, list)
                and all(isinstance(c, int) for c in st.retry_codes)):
            _err(st.name, "retries", "exit_codes must be a list of integers "
                 "(128+N for signal N)")
    else:
        _err(st.name, "retries", "must be a count or { count = N, exit_codes = [...] }")
    if not isinstance(st.retries, int) or st.retries < 0:
        _err(st.name, "retries", "count must be a non-negative integer")


def _c_limits(st, s, base, secrets):
    st.limits = {}
    st.limits = _limits(st.name, s.get("limits", {}))


def _c_network(st, s, base, secrets):
    """"none" (loopback only), "host", or "relay" with st.relay = NAME[:ip=IP][,...]:
    the Relay networks the container joins (the runtime's --net syntax)."""
    st.network, st.relay = "none", ""
    n = s.get("network", False)
    if n in (False, "none"):
        return
    if n in (True, "host"):
        st.network = "host"
        return
    if isinstance(n, str):
        for item in n.split(","):
            name, *ips = item.strip().split(":ip=")
            if not name or not name.replace("-", "").replace("_", "").isalnum() \
                    or not all(_is_ip(ip) for ip in ips):
                break
        else:
            st.network, st.relay = "relay", n
            return
    _err(st.name, "network", 'must be false/"none", true/"host", or a Relay network '
         '"NAME[:ip=IP]" (made with `emergence net create`)')


def _is_ip(text):
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _c_cache(st, s, base, secrets):
    st.cache = s.get("cache", True)
    if not isinstance(st.cache, bool):
        st.cache = True
        _err(st.name, "cache", "must be true or false")


def _c_secrets(st, s, base, secrets):
    st.secrets = []
    st.secrets = _strings(st.name, "secrets", s.get("secrets", []))
    for sec in st.secrets:
        if sec not in secrets:
            _err(st.name, "secrets", f"{sec!r} is not declared in [secrets]")


_STAGE_CHECKS = (_c_name, _c_fields, _c_image, _c_command, _c_env, _c_needs_inputs,
                 _c_outputs, _c_timeout, _c_retries, _c_limits, _c_network, _c_cache,
                 _c_secrets)


def _limits(stage, raw):
    """{memory: bytes, cpus: float, pids: int}: what the container's cgroup gets."""
    if not isinstance(raw, dict) or set(raw) - LIMITS:
        _err(stage, "limits", f"must be a table of {', '.join(sorted(LIMITS))}")
    out = {}
    if "memory" in raw:
        m = str(raw["memory"]).strip().lower().removesuffix("b")
        unit = m[-1] if m and m[-1] in _UNITS else ""
        try:
            out["memory"] = int(float(m[:-1] if unit else m) * _UNITS[unit])
        except ValueError:
            out["memory"] = 0
        if out["memory"] < 1 << 20:
            _err(stage, "limits", f"memory {raw['memory']!r} must be at least 1M (e.g. \"512M\")")
    if "cpus" in raw:
        c = raw["cpus"]
        if isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0:
            _err(stage, "limits", "cpus must be a positive number (1.5 = one and a half)")
        out["cpus"] = float(c)
    if "pids" in raw:
        p = raw["pids"]
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            _err(stage, "limits", "pids must be a positive integer")
        out["pids"] = p
    return out


def _check_cycles(stages):
    state = {}

    def visit(name, path):
        state[name] = 1
        for n in stages[name].needs:
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n] if n in path else [name, n]
                _err(name, "needs", "cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[name] = 2
    for name in stages:
        if name not in state:
            visit(name, [name])


def secret_values(pipeline, environ=None):
    """name -> value for every declared secret; a missing one is an error now,
    before any stage runs."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, src in pipeline.secrets.items():
        if "env" in src:
            if src["env"] not in environ:
                raise PipelineError(f"pipeline: secret {name!r}: ${src['env']} is not set")
            out[name] = environ[src["env"]]
        else:
            p = os.path.join(pipeline.base, src["file"])
            try:
                with open(p) as f:
                    out[name] = f.read().strip("\n")
            except OSError as e:
                raise PipelineError(f"pipeline: secret {name!r}: cannot read {p}: "
                                    f"{e.strerror}") from None
    return out
