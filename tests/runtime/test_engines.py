"""Real engines drive emergence as their runtime: podman (through conmon) and
containerd (through its runc v2 shim, the path Kubernetes takes).  Each test
session gets private storage, state and sockets, made here and removed after;
images are built locally from the busybox rootfs (there is no registry here)."""

import os
import shutil
import subprocess
import tarfile
import time

import pytest
from conftest import drive, emergence_command, podman_env, unmount_below

EMERGENCE = emergence_command()[0]
needs = lambda tool: pytest.mark.skipif(shutil.which(tool) is None,  # noqa: E731
                                        reason=f"{tool} is not installed")


class Podman:
    def __init__(self, base, rootfs):
        self.base = base
        self.env = podman_env(base, engine=f"""runtime = "emergence"
runtime_supports_json = ["emergence"]
[engine.runtimes]
emergence = ["{EMERGENCE}"]
""")
        self.cmd = ["podman", "--root", os.path.join(base, "root"),
                    "--runroot", os.path.join(base, "runroot"), "--storage-driver", "vfs"]
        tar = os.path.join(base, "rootfs.tar")
        with tarfile.open(tar, "w") as t:
            t.add(rootfs, arcname=".")
        self("import", "-q", tar, "localhost/bb:latest", check=True)

    def __call__(self, *args, check=False, timeout=120):
        # cwd: conmon drops an `oom` marker file in its working directory
        p = subprocess.run(self.cmd + list(args), env=self.env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.base)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {p.returncode}\n{p.stderr}")
        return p

    def close(self):
        self("rm", "-af", "-t", "0")
        unmount_below(self.base)


@pytest.fixture(scope="module")
def podman(tmp_path_factory, rootfs):
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("conmon"):
        pytest.skip("needs root, podman and conmon")
    p = Podman(str(tmp_path_factory.mktemp("podman")), rootfs)
    yield p
    p.close()


def test_podman_run_rm_prints_output(podman):
    p = podman("run", "--rm", "--network", "none", "bb", "echo", "hello from podman")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from podman\n"


def test_podman_exit_code_propagates(podman):
    assert podman("run", "--rm", "--network", "none", "bb", "sh", "-c", "exit 23").returncode \
        == 23


def test_podman_memory_limit_is_enforced(podman):
    p = podman("run", "--rm", "--network", "none", "--memory", "16m", "--memory-swap", "16m",
               "bb", "sh", "-c", "a=$(head -c 64m /dev/zero | tr '\\0' x); echo survived")
    assert "survived" not in p.stdout
    assert p.returncode == 137


def test_podman_detached_lifecycle(podman):
    podman("run", "-d", "--name", "life", "--network", "none", "bb", "sleep", "300",
           check=True)
    try:
        p = podman("exec", "life", "sh", "-c", "echo in-$(hostname); exit 4")
        assert p.returncode == 4 and p.stdout.startswith("in-")
        podman("pause", "life", check=True)
        assert "paused" in podman("inspect", "-f", "{{.State.Status}}", "life").stdout
        podman("unpause", "life", check=True)
        assert "running" in podman("inspect", "-f", "{{.State.Status}}", "life").stdout
        top = podman("top", "life", check=True).stdout
        assert "sleep 300" in top
        stats = podman("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "life",
                       check=True).stdout
        assert stats.split() == ["life", "1"]
        podman("kill", "-s", "KILL", "life", check=True)
        for _ in range(100):
            if "exited" in podman("inspect", "-f", "{{.State.Status}}", "life").stdout:
                break
            time.sleep(0.05)
        assert "exited" in podman("inspect", "-f", "{{.State.Status}}", "life").stdout
    finally:
        podman("rm", "-f", "life", check=True)


def test_podman_stop_and_rm_force(podman):
    podman("run", "-d", "--name", "stopme", "--network", "none", "bb", "sh", "-c",
           "trap 'exit 0' TERM; while true; do sleep 0.1; done", check=True)
    podman("stop", "-t", "5", "stopme", check=True)
    assert podman("inspect", "-f", "{{.State.ExitCode}}", "stopme").stdout.strip() == "0"
    podman("start", "stopme", check=True)
    podman("rm", "-f", "stopme", check=True)
    assert podman("ps", "-aq", "--filter", "name=stopme").stdout.strip() == ""


def test_podman_exec_interactive_tty(podman):
    podman("run", "-d", "--name", "tty", "--network", "none", "bb", "sleep", "300", check=True)
    try:
        out, code = drive(podman.cmd + ["exec", "-it", "tty", "sh", "-c",
                                        "tty; echo ready; read x; echo said-$x"],
                          send=b"yes\r", timeout=60, env=podman.env)
        assert code == 0, out
        assert "/dev/pts/" in out and "said-yes" in out
    finally:
        podman("rm", "-f", "tty", check=True)


# ---- containerd ----

class Containerd:
    def __init__(self, base, oci_archive):
        self.base = base
        self.sock = os.path.join(base, "containerd.sock")
        conf = os.path.join(base, "config.toml")
        with open(conf, "w") as f:
            f.write(f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    '[plugins."io.containerd.grpc.v1.cri"]\n  disable = true\n')
        self.log = open(os.path.join(base, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        for _ in range(100):
            if os.path.exists(self.sock) and self("version").returncode == 0:
                break
            time.sleep(0.1)
        self("images", "import", oci_archive, check=True)

    def __call__(self, *args, check=False, timeout=120):
        p = subprocess.run(["ctr", "-a", self.sock, *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {p.returncode}\n{p.stderr}")
        return p

    def close(self):
        for name in self("containers", "ls", "-q").stdout.split():
            self("task", "kill", "-s", "KILL", name)
            time.sleep(0.2)
            self("task", "delete", "-f", name)
            self("containers", "delete", name)
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        subprocess.run(["pkill", "-f", f"containerd-shim.*{self.base}"])
        unmount_below(self.base)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, podman):
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("needs containerd and ctr")
    base = str(tmp_path_factory.mktemp("containerd"))
    archive = os.path.join(base, "bb-oci.tar")
    podman("save", "-q", "--format", "oci-archive", "-o", archive, "localhost/bb:latest",
           check=True)
    c = Containerd(base, archive)
    yield c
    c.close()


def test_ctr_run_to_completion(containerd):
    p = containerd("run", "--rm", "--runc-binary", EMERGENCE, "localhost/bb:latest", "k1",
                   "echo", "hello from containerd")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "hello from containerd"
    p = containerd("run", "--rm", "--runc-binary", EMERGENCE, "localhost/bb:latest", "k2",
                   "sh", "-c", "exit 6")
    assert p.returncode == 6


def test_ctr_task_exec(containerd):
    containerd("run", "-d", "--runc-binary", EMERGENCE, "localhost/bb:latest", "k3",
               "sleep", "300", check=True)
    try:
        p = containerd("task", "exec", "--exec-id", "e1", "k3", "sh", "-c",
                       "echo exec-ok; exit 3")
        assert p.stdout.strip() == "exec-ok" and p.returncode == 3
        tasks = containerd("task", "ls", check=True).stdout
        assert "k3" in tasks and "RUNNING" in tasks
        containerd("task", "pause", "k3", check=True)
        assert "PAUSED" in containerd("task", "ls", check=True).stdout
        containerd("task", "resume", "k3", check=True)
        containerd("task", "kill", "-s", "KILL", "k3", check=True)
        for _ in range(100):
            if "STOPPED" in containerd("task", "ls").stdout:
                break
            time.sleep(0.05)
        assert "STOPPED" in containerd("task", "ls").stdout
    finally:
        containerd("task", "delete", "-f", "k3")
        containerd("containers", "delete", "k3")


def test_podman_runs_an_image_exported_by_emergence(podman, tmp_path):
    if not shutil.which("nix-build"):
        pytest.skip("needs nix-build")
    from conftest import REPO
    store = str(tmp_path / "store")
    cmd = [EMERGENCE, "--store", store]
    subprocess.run(cmd + ["build", os.path.join(REPO, "nix", "examples", "hello-c.nix")],
                   check=True, capture_output=True)
    archive = str(tmp_path / "hello.tar")
    subprocess.run(cmd + ["export", "hello-c", "-o", archive, "--format", "docker-archive"],
                   check=True, capture_output=True)
    podman("load", "-q", "-i", archive, check=True)
    p = podman("run", "--rm", "--network", "none", "localhost/hello-c:latest")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from C, built by Nix\n"


def test_bundle_from_podman_create_runs_unchanged(podman, tmp_path):
    """The config.json podman writes (seccomp, masks, rlimits, its cgroupsPath),
    kept after `podman init` and run by emergence alone."""
    podman("create", "-q", "--network", "none", "--name", "kept", "bb", "sh", "-c",
           "echo bundle from podman; id -u; cat /proc/self/status | grep Seccomp:",
           check=True)
    try:
        podman("init", "kept", check=True)
        config = podman("inspect", "--format", "{{.OCIConfigPath}}", "kept",
                        check=True).stdout.strip()
        podman("stop", "-t", "0", "kept", check=True)  # its rootfs (vfs) stays
        bundle = tmp_path / "kept"
        bundle.mkdir()
        shutil.copy(config, bundle / "config.json")
        p = subprocess.run([EMERGENCE, "--root", str(tmp_path / "state"), "run",
                            "--bundle", str(bundle), "kept-copy"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["bundle", "from", "podman", "0", "Seccomp:", "2"]
    finally:
        podman("rm", "-f", "kept")


def test_bundle_from_containerd_runs_unchanged(containerd, tmp_path):
    """The bundle the containerd shim hands its runtime (config.json and the
    mounted rootfs), run in place by emergence after the task was killed."""
    script = "[ -f /go ] && echo bundle from containerd || sleep 300"
    containerd("run", "-d", "--runc-binary", EMERGENCE, "localhost/bb:latest", "kept",
               "sh", "-c", script, check=True)
    try:
        containerd("task", "kill", "-s", "KILL", "kept", check=True)
        bundle = os.path.join(containerd.base, "state", "io.containerd.runtime.v2.task",
                              "default", "kept")
        with open(os.path.join(bundle, "rootfs", "go"), "w"):
            pass
        p = subprocess.run([EMERGENCE, "--root", str(tmp_path / "state"), "run",
                            "--bundle", bundle, "kept-copy"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "bundle from containerd"
    finally:
        containerd("task", "delete", "-f", "kept")
        containerd("containers", "delete", "kept")
