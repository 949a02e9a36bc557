"""Shared fixtures: a busybox rootfs, bundles made from it, and a runner for
the installed `emergence` command with a private --root.

Integration tests run real containers and need root; every test checks on
teardown that its containers left no state dir, cgroup or mount behind.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.environ.get("EMERGENCE_SPEC_DIR") or os.path.join(os.path.dirname(REPO), "shared",
                                                            "spec")
HAVE_SPEC = os.path.isdir(os.path.join(SPEC, "runtime-spec"))
MAKE_ROOTFS = os.path.join(REPO, "bundles", "busybox", "make-rootfs.sh")


def emergence_command():
    """The installed launcher next to this interpreter, else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    if os.path.exists(here):
        return [here]
    found = shutil.which("emergence")
    if found:
        return [found]
    return [sys.executable, "-m", "emergence"]


def spec_validator(kind, schema_file):
    """A Draft 4 validator for one of the spec's schemas, with its sibling files
    registered so relative $refs (defs.json#/...) resolve offline."""
    if not HAVE_SPEC:
        pytest.skip(f"the OCI specs are not at {SPEC} (set EMERGENCE_SPEC_DIR)")
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    d = os.path.join(SPEC, kind, "schema")
    docs = {}
    for name in os.listdir(d):
        if name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                docs[name] = json.load(f)
    # image-spec schemas carry ids (https://opencontainers.org/schema/image/...) that
    # their relative $refs resolve against: register every file under those too
    bases = {doc["id"].rsplit("/", 1)[0] + "/" for doc in docs.values()
             if isinstance(doc.get("id"), str) and "://" in doc["id"]}
    resources = []
    for name, doc in docs.items():
        res = Resource.from_contents(doc, default_specification=DRAFT4)
        resources += [(name, res)] + [(base + name, res) for base in bases]
    registry = Registry().with_resources(resources)
    with open(os.path.join(d, schema_file)) as f:
        schema = json.load(f)
    return jsonschema.Draft4Validator(schema, registry=registry)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs real containers: needs root")


@pytest.fixture(scope="session", autouse=True)
def _counters_file(tmp_path_factory):
    """Pulls and Relay applies made by tests count in a file of the session,
    not the host's /var/lib/emergence/counters.log (emergence.counters)."""
    os.environ.setdefault("EMERGENCE_COUNTERS",
                          str(tmp_path_factory.mktemp("counters") / "counters.log"))


@pytest.fixture(scope="session", autouse=True)
def _short_lived_planners():
    """Planners the front-end starts on demand for the tests' state roots go
    after 15 s without a call, not 60: a session makes many roots."""
    os.environ.setdefault("EMERGENCE_PLANNER_IDLE", "15")


@pytest.fixture(scope="session")
def warm_planner(tmp_path_factory):
    """One warm planner for the session (the installed build, as the node runs
    it, dying with this process): its socket."""
    run = tmp_path_factory.mktemp("planner")
    os.chmod(run, 0o700)
    sock = str(run / "planner.sock")
    # as the node runs it; from "/", so the installed build is the one imported
    p = subprocess.Popen([sys.executable, "-m", "emergence.node.planner", sock],
                         stdin=subprocess.DEVNULL, cwd="/")
    import socket
    import time
    for _ in range(600):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(sock)
            break
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    else:
        p.kill()
        pytest.fail("the session's warm planner did not come up")
    yield sock
    p.terminate()
    p.wait(30)


PATHS = ("cold", "warm")


def pytest_generate_tests(metafunc):
    """The runtime's suite runs on both paths: each test that uses `rt` in
    tests/runtime/ once cold (no planner) and once warm (a planner's worker),
    through the environment every `emergence` it runs inherits."""
    if "rt" in metafunc.fixturenames and \
            os.sep + os.path.join("tests", "runtime") + os.sep in str(metafunc.definition.path):
        metafunc.parametrize("planner_path", PATHS, indirect=True)


@pytest.fixture
def planner_path(request, monkeypatch):
    """The path `emergence` takes in this test: "cold" or "warm".  Outside
    tests/runtime/ a test with `rt` runs cold, as before planners were started
    on demand: the default path has its own tests (tests/node/test_warm_path.py),
    and a planner per test's state root would only cost the session time."""
    path = getattr(request, "param", "cold")
    if path == "cold":
        monkeypatch.setenv("EMERGENCE_PLANNER_SOCKET", "off")
    elif path == "warm":
        monkeypatch.setenv("EMERGENCE_PLANNER_SOCKET", request.getfixturevalue("warm_planner"))
    return path


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory):
    path = tmp_path_factory.mktemp("busybox") / "rootfs"
    subprocess.run([MAKE_ROOTFS, str(path)], check=True, stdout=subprocess.DEVNULL)
    return str(path)


def base_config(args, rootfs_path="rootfs"):
    from emergence.runtime.spec import default_config
    c = default_config(args=list(args), terminal=False)
    c["root"]["path"] = rootfs_path
    return c


class Runtime:
    """Runs `emergence --root ROOT ...` and makes bundles."""

    def __init__(self, root, tmp_path, rootfs):
        self.root = root
        self.tmp = tmp_path
        self.rootfs = rootfs
        self.cmd = emergence_command()
        self.ids = set()
        self.n = 0

    def __call__(self, *args, check=False, timeout=60, **kw):
        """Output goes to files, not pipes: a created container keeps the
        stdio of `create` open, so a pipe would never reach EOF."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            kw.setdefault("stdin", subprocess.DEVNULL)
            p = subprocess.run(self.cmd + ["--root", self.root, *args], timeout=timeout,
                               stdout=out, stderr=err, text=True, **kw)
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        assert "internal error" not in p.stderr, p.stderr  # the CLI's last-resort catch: a bug
        if check and p.returncode != 0:
            raise AssertionError(f"emergence {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def bundle(self, args=("true",), edit=None, copy_rootfs=False):
        """A bundle dir whose config runs ARGS; EDIT(config) may change it."""
        self.n += 1
        b = self.tmp / f"bundle{self.n}"
        b.mkdir()
        if copy_rootfs:
            # cp -a keeps device nodes as nodes (copytree would read them)
            subprocess.run(["cp", "-a", self.rootfs, str(b / "rootfs")], check=True)
            path = "rootfs"
        else:
            path = self.rootfs
        c = base_config(args, path)
        if edit:
            edit(c)
        (b / "config.json").write_text(json.dumps(c))
        return str(b)

    def new_id(self, prefix="t"):
        self.n += 1
        cid = f"{prefix}{os.getpid()}-{self.n}"
        self.ids.add(cid)
        return cid

    def run(self, args, edit=None, **kw):
        """Run a container to completion; return the CompletedProcess."""
        b = self.bundle(args, edit)
        return self("run", "--bundle", b, self.new_id(), **kw)

    def state(self, cid):
        p = self("state", cid, check=True)
        return json.loads(p.stdout)


def cold_env(step=None, extra=None):
    """The environment of a cold-path call (no planner); STEP names a crash point
    (EMERGENCE_CRASHPOINT=VERB:STEP: the process SIGKILLs itself right after it)."""
    env = dict(os.environ, EMERGENCE_PLANNER_SOCKET="off", **(extra or {}))
    env.pop("EMERGENCE_CRASHPOINT", None)
    if step:
        env["EMERGENCE_CRASHPOINT"] = step
    return env


def alive(pid):
    """PID runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leftovers(cid):
    """Cgroup dirs and mounts that mention a container id."""
    found = []
    for base in os.listdir("/sys/fs/cgroup"):
        d = os.path.join("/sys/fs/cgroup", base)
        for dirpath, dirnames, _ in os.walk(d):
            if cid in os.path.basename(dirpath):
                found.append(dirpath)
            if dirpath.count("/") > 6:
                dirnames[:] = []
    with open("/proc/self/mountinfo") as f:
        found += [line.strip() for line in f if cid in line]
    return found


@pytest.fixture
def rt(tmp_path, rootfs, planner_path):
    if os.geteuid() != 0:
        pytest.skip("runs real containers: needs root")
    # A short root of its own: the planner started on demand listens at
    # ROOT/.planner/BUILD/planner.sock, which must fit a socket address (108
    # bytes; a longer root runs cold), and tmp_path grows with pytest's run count
    short = tempfile.mkdtemp(prefix="em-", dir="/tmp")
    root = os.path.join(short, "state")
    r = Runtime(root, tmp_path, rootfs)
    r.path = planner_path
    yield r
    for cid in sorted(r.ids):
        r("delete", "--force", cid)
    left = [cid for cid in r.ids if os.path.exists(os.path.join(r.root, cid))]
    stray = [x for cid in r.ids for x in leftovers(cid)]
    shutil.rmtree(short, ignore_errors=True)
    assert not left, f"state left behind for {left}"
    assert not stray, f"cgroups or mounts left behind: {stray}"


@pytest.fixture
def running(rt):
    """make(ARGS, EDIT): a detached container running ARGS; its id (removed by `rt`)."""
    def make(args=("sleep", "300"), edit=None):
        b = rt.bundle(list(args), edit=edit)
        cid = rt.new_id()
        rt("run", "--detach", "--bundle", b, cid, check=True)
        return cid
    return make


@pytest.fixture
def restore_v2_root():
    """Enabling a controller in the cgroup2 root outlives the container; put it back
    so the host stays as it was (e.g. for moving hugetlb to v1 for crun)."""
    top = "/sys/fs/cgroup/unified"
    path = os.path.join(top, "cgroup.subtree_control")
    with open(path) as f:
        before = set(f.read().split())
    yield
    with open(path) as f:
        added = set(f.read().split()) - before
    # off below first (the runtime's own parent enabled it too), or the root's is busy
    for d, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            with open(os.path.join(d, "cgroup.subtree_control")) as f:
                on = set(f.read().split()) & added
            for c in on:
                with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write("-" + c)
        except FileNotFoundError:
            pass  # removed meanwhile


@contextlib.asynccontextmanager
async def serving(svc, port=0):
    """A part's Service started and its routes served on 127.0.0.1:PORT (0: any
    free port), as the node serves them; yields the port, stops both after."""
    from aiohttp import web
    await svc.start()
    app = web.Application()
    app.add_routes(svc.routes())
    runner = web.AppRunner(app)
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
        await svc.stop()


def read_until(fd, needle, timeout=10):
    """Read FD until NEEDLE shows up, it closes, or TIMEOUT passes."""
    import select
    import time
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def drive(cmd, send=b"", timeout=20, env=None):
    """Run CMD on a new pty, as a person at a terminal would: when SEND is given,
    type it once the program prints "ready".  Returns (output, exit status)."""
    import pty
    import time
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(cmd[0], cmd, env or os.environ)
    out = read_until(fd, b"ready", timeout) if send else b""
    if send:
        os.write(fd, send)
    end = time.monotonic() + timeout
    status = None
    while status is None and time.monotonic() < end:
        out += read_until(fd, b"\0never", 0.2)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
    if status is None:
        os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    out += read_until(fd, b"\0never", 0.2)
    os.close(fd)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def unmount_below(path):
    """Lazily unmount every mount under PATH, deepest first (an engine's leftovers)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(path)]
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], stderr=subprocess.DEVNULL)


def podman_env(base, engine="", sections=""):
    """The environment of a podman kept inside BASE (cgroupfs, events to a
    file, its own tmp and runtime dirs), through a containers.conf there;
    ENGINE adds lines to [engine], SECTIONS adds tables."""
    conf = os.path.join(base, "containers.conf")
    with open(conf, "w") as f:
        f.write(f"""[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
tmp_dir = "{base}/tmp"
{engine}{sections}""")
    return {**os.environ, "CONTAINERS_CONF": conf, "XDG_RUNTIME_DIR": os.path.join(base, "xdg")}


def marked_front_end(tmp_path, name="emergence"):
    """A copy of the installed front-end NAME (emergence, emergence-cni) in
    TMP_PATH/bin whose cold path (NAME-py) first appends a line to the file
    it returns: which path a call took is observed, not assumed.  (exe, marks)"""
    real = os.path.join(os.path.dirname(emergence_command()[0]), name)
    if open(real, "rb").read(4) != b"\x7fELF":
        pytest.skip(f"the installed {name} is not the C front-end")
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(real, d / name)
    marks = tmp_path / "cold-calls"
    marks.touch()
    (d / f"{name}-py").write_text(f"#!/bin/sh\necho cold >> {marks}\nexec {real}-py \"$@\"\n")
    os.chmod(d / f"{name}-py", 0o755)
    planner = os.path.join(os.path.dirname(real), "emergence-planner")
    if os.path.exists(planner):  # what the front-end starts on demand, beside itself
        os.symlink(planner, d / "emergence-planner")
    return str(d / name), marks


class Node:
    """`emergence node` with its own run and state dirs, and no services."""

    def __init__(self, tmp_path):
        self.run_dir = str(tmp_path / "node-run")
        self.state_dir = str(tmp_path / "node-state")
        self.flags = ["--node-run-dir", self.run_dir, "--node-state-dir", self.state_dir,
                      "--node-services", ""]
        self.socket = os.path.join(self.run_dir, "planner.sock")

    def __call__(self, verb, *extra):
        # from the source tree: the node must still run the installed build
        return subprocess.run(emergence_command() + ["node", verb, *self.flags, *extra],
                              capture_output=True, text=True, timeout=60, cwd=REPO,
                              env=dict(os.environ, EMERGENCE_PLANNER_SOCKET="off"))

    def status(self):
        p = self("status", "--json")
        return json.loads(p.stdout)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    p = n("start")
    assert p.returncode == 0, p.stderr
    yield n
    n("stop")
    assert not os.path.exists(n.socket)
