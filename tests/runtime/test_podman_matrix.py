"""podman as people use it, with Emergence, runc and crun as its runtime (issue 29):
the same commands give the same outputs and exit codes with each.

podman runs with its stock configuration (its default seccomp profile; only
`nofile`/`nproc` lowered, for this host's missing CAP_SYS_RESOURCE), in a netns
the test makes (its bridge, port forwards and firewall stay there), on private
storage.  A peer podman cannot run here (crun refuses this hybrid host's cgroup
layout) is left out with its reason printed; Emergence must run.
"""

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time

import pytest
from conftest import MAKE_ROOTFS, podman_env, unmount_below
from test_engines import EMERGENCE
from test_sdnotify import SDN_C

pytestmark = pytest.mark.slow

NONET = ("--network", "none")


STOCK = "/usr/share/containers/containers.conf"


def stock_env(base):
    """podman_env's settings (cgroupfs, events to a file, private tmp dirs, lowered
    ulimits) put into the distribution's own containers.conf, which a
    CONTAINERS_CONF file otherwise replaces: its default capabilities (no
    AUDIT_WRITE) are what make the duplicate `socket` rules in the profile."""
    env = podman_env(base)
    if not os.path.exists(STOCK):
        return env
    with open(env["CONTAINERS_CONF"]) as f:
        ours = f.read()
    sections = dict(re.findall(r"\[(\w+)\]\n((?:[^\[].*\n)*)", ours))
    with open(STOCK) as f:
        stock = f.read()
    for name, lines in sections.items():
        stock = stock.replace(f"\n[{name}]\n", f"\n[{name}]\n{lines}", 1)
    with open(env["CONTAINERS_CONF"], "w") as f:
        f.write(stock)
    return env


class Pod:
    """podman on private storage, inside netns NS."""

    def __init__(self, base, ns, rootfs):
        self.base = base
        self.ns = ns
        self.env = stock_env(base)
        self.cmd = ["nsenter", f"--net=/var/run/netns/{ns}", "podman",
                    "--root", os.path.join(base, "root"),
                    "--runroot", os.path.join(base, "runroot"), "--storage-driver", "vfs"]
        # a fresh rootfs, not the session's: earlier tests leave mount points in
        # that one (a /run of 0755 would change what --read-only's tmpfs shows)
        image = os.path.join(base, "image")
        subprocess.run([MAKE_ROOTFS, image], check=True, stdout=subprocess.DEVNULL)
        os.makedirs(os.path.join(image, "www"))
        with open(os.path.join(image, "www", "index.html"), "w") as f:
            f.write("served\n")
        src = os.path.join(base, "sdn.c")
        with open(src, "w") as f:
            f.write(SDN_C)
        self.sdn = subprocess.run(["gcc", "-static", "-O2", "-o",
                                   os.path.join(image, "bin", "sdn"), src],
                                  capture_output=True).returncode == 0
        tar = os.path.join(base, "image.tar")
        with tarfile.open(tar, "w") as t:
            t.add(image, arcname=".")
        self("import", "-q", tar, "localhost/bb:latest", check=True)

    def __call__(self, *args, check=False, env=None, timeout=120):
        p = subprocess.run(self.cmd + list(args), env={**self.env, **(env or {})},
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=self.base)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {p.returncode}\n{p.stderr}")
        return p

    def status(self, name):
        return self("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()

    def wait_for(self, name, status):
        for _ in range(200):
            got = self.status(name)
            if got and got[0] == status:
                return got
            time.sleep(0.05)
        return self.status(name)

    def config(self, name):
        """The config.json podman wrote for container NAME (after `init`)."""
        cid = self("inspect", "-f", "{{.Id}}", name, check=True).stdout.strip()
        path = glob.glob(os.path.join(self.base, "root", "*-containers", cid, "userdata",
                                      "config.json"))[0]
        with open(path) as f:
            return json.load(f)


@pytest.fixture(scope="module")
def pod(rootfs):
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("conmon"):
        pytest.skip("needs root, podman and conmon")
    ns = f"rt29m{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    base = tempfile.mkdtemp(prefix="rt29m-")  # podman wants a short runroot
    try:
        p = Pod(base, ns, rootfs)
        yield p
        p("rm", "-af", "-t", "0")
        p("network", "prune", "-f")
    finally:
        unmount_below(base)
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", ns])


@pytest.fixture(scope="module")
def runtimes(pod):
    """name -> --runtime arguments, for each runtime podman can run here."""
    found = {"emergence": ("--runtime", EMERGENCE)}
    for name in ("runc", "crun"):
        path = shutil.which(name)
        if not path:
            print(f"{name}: not installed")
            continue
        p = pod("run", "--rm", *NONET, "--runtime", path, "bb", "true")
        if p.returncode == 0:
            found[name] = ("--runtime", path)
        else:  # crun on this hybrid host: "cgroups in hybrid mode not supported"
            print(f"{name}: left out, podman cannot run it here: {p.stderr.strip()}")
    return found


def same_for_all(results):
    """Every runtime's result equals Emergence's."""
    mine = results["emergence"]
    for name, got in results.items():
        assert got == mine, f"{name} differs from emergence:\n{got!r}\n{mine!r}"
    return mine


# -- (a) the stock configuration, and what it makes podman write ---------------------

SCRIPT_RO = ("touch /tmp/t /var/tmp/t /run/t && ls -ld /tmp /var/tmp /run | cut -c1-10"
             " && (touch /x 2>/dev/null || echo rootfs read-only)")


def stock_runs(pod, tag, rt):
    """--read-only, --tmpfs, --device, --uidmap: created, their config.json read,
    then started; (outputs, configs)."""
    cases = {
        "read-only": ["--read-only", "bb", "sh", "-c", SCRIPT_RO],
        "tmpfs": ["--tmpfs", "/etc", "bb", "sh", "-c",
                  "echo x > /etc/new && grep -c root /etc/passwd && cat /etc/new"],
        "device": ["--device", "/dev/null:/dev/mynull:rw", "bb", "sh", "-c",
                   "ls -l /dev/mynull | cut -c1-10 && echo x > /dev/mynull && echo wrote"],
        "uidmap": ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", "bb", "sh",
                   "-c", "cat /proc/self/uid_map | tr -s ' '; id; touch /tmp/x && echo ok"],
    }
    outs, configs = {}, {}
    for case, args in cases.items():
        name = f"{case}-{tag}"
        pod("create", "--name", name, *NONET, *rt, *args, check=True)
        try:
            pod("init", name, check=True)
            configs[case] = pod.config(name)
            p = pod("start", "-a", name)
            outs[case] = (p.returncode, p.stdout)
        finally:
            pod("rm", "-f", "-t", "0", name)
    return outs, configs


def sdnotify_run(pod, rt, host_path):
    """`podman run --sdnotify=container` with NOTIFY_SOCKET set, as systemd does."""
    got = []
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(host_path)
    s.settimeout(0.2)
    done = threading.Event()

    def read():
        while not done.is_set():
            try:
                got.append(s.recv(4096).decode())
            except socket.timeout:
                pass
    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        p = pod("run", "--rm", *NONET, *rt, "--sdnotify=container", "bb", "sh", "-c",
                # (podman reads the socket while the container runs: give it time)
                "echo $NOTIFY_SOCKET; sdn STATUS=hi; sdn READY=1 && echo sent; sleep 1",
                env={"NOTIFY_SOCKET": host_path})
        time.sleep(0.5)
    finally:
        done.set()
        t.join()
        s.close()
        os.unlink(host_path)
    return p.returncode, p.stdout, sorted(re.sub(r"MAINPID=\d+", "MAINPID=N", m) for m in got)


def test_stock_podman_read_only_tmpfs_device_uidmap_sdnotify(pod, runtimes):
    """Same outputs with every runtime; and podman's config.json really holds a
    seccomp profile with duplicate rules, tmpcopyup and a typed fileMode."""
    results, configs = {}, {}
    for name, rt in runtimes.items():
        outs, configs[name] = stock_runs(pod, name, rt)
        if pod.sdn:
            outs["sdnotify"] = sdnotify_run(pod, rt, os.path.join(pod.base, f"{name}.sock"))
        results[name] = outs
    mine = same_for_all(results)
    assert mine["read-only"] == (0, "drwxrwxrwt\n" * 3 + "rootfs read-only\n")
    assert mine["tmpfs"] == (0, "1\nx\n")
    assert mine["device"] == (0, "crw-rw-rw-\nwrote\n")
    assert mine["uidmap"][0] == 0 and mine["uidmap"][1].startswith(" 0 100000 65536\n")
    if pod.sdn:
        assert mine["sdnotify"][:2] == (0, "/run/notify/notify.sock\nsent\n")
        assert "READY=1" in mine["sdnotify"][2], mine["sdnotify"]
    c = configs["emergence"]
    rules = [(r["action"], json.dumps(r.get("args"), sort_keys=True), n)
             for r in c["read-only"]["linux"]["seccomp"]["syscalls"] for n in r["names"]]
    assert len(rules) != len(set(rules)), "podman's profile has no duplicate rule here"
    assert any("tmpcopyup" in m.get("options", ()) for m in c["tmpfs"]["mounts"])
    assert any("tmpcopyup" in m.get("options", ()) and m["destination"] == "/tmp"
               for m in c["read-only"]["mounts"])
    dev = next(d for d in c["device"]["linux"]["devices"] if d["path"] == "/dev/mynull")
    assert dev["fileMode"] > 0o777  # the file-type bits: 0o20666
    assert c["uidmap"]["linux"]["uidMappings"][0]["hostID"] == 100000


# -- (b) the feature matrix -----------------------------------------------------------

def run_out(pod, rt, *args):
    p = pod("run", "--rm", *rt, *args)
    return p.returncode, p.stdout


def lifecycle(pod, tag, rt):
    """-d, exec, logs, top, stats, pause, stop (with a TERM trap), restart, kill."""
    name = f"life-{tag}"
    out = []
    pod("run", "-d", "--name", name, *NONET, *rt, "bb", "sh", "-c",
        "echo started; trap 'echo bye; exit 3' TERM; sleep 300 & wait", check=True)
    try:
        p = pod("exec", name, "sh", "-c", "echo in; exit 4")
        out.append(("exec", p.returncode, p.stdout))
        p = pod("exec", "-u", "1000", name, "id", "-u")
        out.append(("exec -u", p.returncode, p.stdout))
        out.append(("top", sorted(pod("top", name, "args").stdout.splitlines())))
        out.append(("stats", pod("stats", "--no-stream", "--format", "{{.PIDs}}",
                                 name).stdout))
        pod("pause", name, check=True)
        out.append(("pause", pod.status(name)))
        pod("unpause", name, check=True)
        out.append(("unpause", pod.status(name)))
        p = pod("stop", "-t", "10", name)
        out.append(("stop", p.returncode, pod.wait_for(name, "exited")))
        out.append(("logs", pod("logs", name).stdout))
        pod("restart", name, check=True)
        out.append(("restart", pod.wait_for(name, "running")))
        pod("kill", "-s", "KILL", name, check=True)
        out.append(("kill", pod.wait_for(name, "exited")))
        out.append(("logs again", pod("logs", name).stdout))
    finally:
        pod("rm", "-f", "-t", "0", name)
    return out


def healthcheck(pod, tag, rt):
    name = f"hc-{tag}"
    pod("run", "-d", "--name", name, *NONET, *rt, "--health-cmd", "test -e /tmp/ok",
        "--health-interval", "disable", "bb", "sleep", "300", check=True)
    try:
        first = pod("healthcheck", "run", name).returncode
        pod("exec", name, "touch", "/tmp/ok", check=True)
        second = pod("healthcheck", "run", name).returncode
        return first, second
    finally:
        pod("rm", "-f", "-t", "0", name)


def published(pod, tag, rt):
    """A web server on the default bridge network, its port published with -p."""
    name = f"web-{tag}"
    pod("run", "-d", "--name", name, "-p", "8089:80", *rt, "bb", "httpd", "-f", "-p", "80",
        "-h", "/www", check=True)
    try:
        gw = None
        for _ in range(50):
            p = subprocess.run(["ip", "netns", "exec", pod.ns, "ip", "-4", "-o", "addr", "show",
                                "podman0"], capture_output=True, text=True)
            m = re.search(r"inet ([\d.]+)/", p.stdout)
            if m:
                gw = m.group(1)
                break
            time.sleep(0.1)
        got = None
        for _ in range(50):  # the server may not listen yet
            p = subprocess.run(["ip", "netns", "exec", pod.ns, "python3", "-c",
                                "import sys, urllib.request; sys.stdout.write(urllib.request."
                                f"urlopen('http://{gw}:8089/', timeout=5).read().decode())"],
                               capture_output=True, text=True, timeout=30)
            if p.returncode == 0:
                got = p.stdout
                break
            time.sleep(0.1)
        return got
    finally:
        pod("rm", "-f", "-t", "0", name)


def interactive(pod, rt):
    """-it on a pty (script(1) gives podman one)."""
    cmd = " ".join(pod.cmd + ["run", "-it", "--rm", *NONET, *rt, "bb", "sh", "-c",
                              "'tty; echo hi; exit 5'"])
    # script's stdin stays open: at its EOF script would type a NUL (echoed as ^@)
    # into the terminal, whenever the container has not exited yet
    p = subprocess.Popen(["script", "-qec", cmd, "/dev/null"], env=pod.env, cwd=pod.base,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        out = p.stdout.read()
        code = p.wait(120)
    finally:
        p.stdin.close()
        p.stdout.close()
    return code, out.decode().replace("\r", "")


def features(pod, tag, rt):
    r = {}
    bb = (*NONET, *rt, "bb")
    r["run"] = run_out(pod, (), *bb, "echo", "hello")
    r["exit codes"] = [pod("run", "--rm", *bb, "sh", "-c", f"exit {n}").returncode
                       for n in (0, 1, 23, 255)] + [pod("run", "--rm", *bb, "nope").returncode]
    r["lifecycle"] = lifecycle(pod, tag, rt)
    r["-it"] = interactive(pod, rt)
    r["-m"] = run_out(pod, ("-m", "32m"), *bb, "cat",
                      "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    r["--cpus"] = run_out(pod, ("--cpus", "0.5"), *bb, "cat",
                          "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                          "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    r["--pids-limit"] = run_out(pod, ("--pids-limit", "10"), *bb, "cat",
                                "/sys/fs/cgroup/pids/pids.max")
    vol = os.path.join(pod.base, f"vol-{tag}")
    os.makedirs(vol)
    r["volumes"] = run_out(pod, ("-v", f"{vol}:/data", "-v", f"{vol}:/ro:ro"), *bb, "sh", "-c",
                           "echo x > /data/f && cat /ro/f && (echo y > /ro/g 2>/dev/null"
                           " || echo ro-refused)"), sorted(os.listdir(vol))
    r["--user"] = run_out(pod, ("--user", "1000:1000"), *bb, "id")
    r["capabilities"] = run_out(pod, ("--cap-drop", "all", "--cap-add", "NET_RAW,CHOWN"),
                                *bb, "grep", "^Cap", "/proc/self/status")
    r["no-new-privileges"] = run_out(pod, ("--security-opt", "no-new-privileges"), *bb,
                                     "grep", "NoNewPrivs", "/proc/self/status")
    r["--pid host"] = run_out(pod, ("--pid", "host"), *bb, "sh", "-c",
                              "test -d /proc/$PPID && cat /proc/1/comm")
    r["--uidmap"] = run_out(pod, ("--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"),
                            *bb, "sh", "-c", "cat /proc/self/uid_map | tr -s ' '; id -u")
    r["--sysctl"] = run_out(pod, ("--sysctl", "net.ipv4.ip_forward=1", "--sysctl",
                                  "kernel.msgmax=4096"), *bb, "cat",
                            "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/msgmax")
    r["--init"] = run_out(pod, ("--init",), *bb, "sh", "-c",
                          "[ $$ != 1 ] && tr '\\0' ' ' < /proc/1/cmdline")
    r["healthcheck"] = healthcheck(pod, tag, rt)
    r["-p"] = published(pod, tag, rt)
    return r


def test_feature_matrix_is_the_same_with_every_runtime(pod, runtimes):
    results = {name: features(pod, name, rt) for name, rt in runtimes.items()}
    for name, r in results.items():
        print(name, json.dumps(r, indent=1))
    mine = same_for_all(results)
    # and what each feature should do at all
    assert mine["run"] == (0, "hello\n")
    assert mine["exit codes"] == [0, 1, 23, 255, 127]
    life = dict((step[0], step[1:]) for step in mine["lifecycle"])
    assert life["exec"] == (0, "in\n") or life["exec"] == (4, "in\n")
    assert life["exec -u"] == (0, "1000\n")
    assert life["stop"][1] == ["exited", "3"] and life["kill"] == (["exited", "137"],)
    assert life["pause"] == (["paused", "0"],) and life["restart"] == (["running", "0"],)
    assert "bye" in life["logs"][0] and life["logs again"][0].count("started") == 2
    assert mine["-it"] == (5, "/dev/pts/0\nhi\n")
    assert mine["-m"] == (0, f"{32 << 20}\n")
    assert mine["--cpus"] == (0, "50000\n100000\n")
    assert mine["--pids-limit"] == (0, "10\n")
    assert mine["volumes"] == ((0, "x\nro-refused\n"), ["f"])
    assert mine["--user"] == (0, "uid=1000(1000) gid=1000(1000) groups=1000(1000)\n")
    caps = dict(line.split(":\t") for line in mine["capabilities"][1].splitlines())
    assert caps["CapEff"] == f"{(1 << 13) | (1 << 0):016x}"  # NET_RAW, CHOWN
    assert mine["no-new-privileges"] == (0, "NoNewPrivs:\t1\n")
    assert mine["--pid host"][0] == 0 and mine["--pid host"][1].strip()
    assert mine["--uidmap"] == (0, " 0 200000 65536\n0\n")
    assert mine["--sysctl"] == (0, "1\n4096\n")
    assert mine["--init"][1].startswith("/run/podman-init -- sh -c")
    assert mine["healthcheck"] == (1, 0)
    assert mine["-p"] == "served\n"
