"""Each namespace, observed from inside a real container."""

import os

import pytest

HOST_NS = {t: os.readlink(f"/proc/self/ns/{t}") for t in
           ("pid", "net", "ipc", "uts", "mnt", "cgroup", "user", "time")}


def _ns_inside(rt, edit=None):
    p = rt.run(["sh", "-c", "for n in pid net ipc uts mnt cgroup user time; do "
                            "echo $n $(readlink /proc/self/ns/$n); done"], edit=edit)
    assert p.returncode == 0, p.stderr
    return dict(line.split() for line in p.stdout.splitlines())


def test_default_namespaces_are_new_and_the_rest_shared(rt):
    inside = _ns_inside(rt)
    for t in ("pid", "net", "ipc", "uts", "mnt", "cgroup"):
        assert inside[t] != HOST_NS[t], t
    for t in ("user", "time"):
        assert inside[t] == HOST_NS[t], t


def test_pid_namespace_makes_the_process_pid_1(rt):
    p = rt.run(["sh", "-c", "echo $$; ps -o pid | wc -l"])
    assert p.stdout.split()[0] == "1"


def test_network_namespace_has_only_loopback(rt):
    p = rt.run(["sh", "-c", "ls /sys/class/net"])
    assert p.stdout.split() == ["lo"]


def test_uts_namespace_hostname_and_domainname(rt):
    def edit(c):
        c["hostname"] = "box-one"
        c["domainname"] = "example.test"
    p = rt.run(["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"], edit=edit)
    assert p.stdout.split() == ["box-one", "example.test"]
    assert os.uname().nodename != "box-one"


def test_ipc_namespace_isolates_sysv_ipc(rt):
    def edit(c):
        c["linux"]["sysctl"] = {"kernel.shmmax": "12345678"}
    p = rt.run(["cat", "/proc/sys/kernel/shmmax"], edit=edit)
    assert p.stdout.strip() == "12345678"
    with open("/proc/sys/kernel/shmmax") as f:
        assert f.read().strip() != "12345678"


def test_cgroup_namespace_roots_the_view_at_the_container(rt):
    p = rt.run(["cat", "/proc/self/cgroup"])
    assert all(line.endswith(":/") for line in p.stdout.splitlines()), p.stdout


def test_without_cgroup_namespace_the_path_shows(rt):
    p = rt.run(["cat", "/proc/self/cgroup"],
               edit=lambda c: c["linux"]["namespaces"].remove({"type": "cgroup"}))
    assert "/emergence/" in p.stdout


def test_time_namespace_applies_offsets(rt):
    def edit(c):
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0},
                                     "monotonic": {"secs": 86400 * 30}}
    p = rt.run(["cat", "/proc/uptime"], edit=edit)
    assert p.returncode == 0, p.stderr
    with open("/proc/uptime") as f:
        host = float(f.read().split()[0])
    assert float(p.stdout.split()[0]) - host > 86400 * 364


def _open_path_to(path):
    """Let unprivileged (mapped) users traverse the test's 0700 temp dirs."""
    while path not in ("/", ""):
        os.chmod(path, os.stat(path).st_mode | 0o005)
        path = os.path.dirname(path)


def test_user_namespace_maps_ids(rt, tmp_path):
    _open_path_to(rt.rootfs)
    _open_path_to(str(tmp_path))

    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/sys/fs/cgroup",)]
        for m in c["mounts"]:
            if m["destination"] == "/dev/pts":
                m["options"].remove("gid=5")
    p = rt.run(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                            "readlink /proc/self/ns/user"], edit=edit)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"]
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2] == "0"
    assert lines[3] != HOST_NS["user"]


def test_joining_a_namespace_by_path(rt, tmp_path):
    # A network namespace made by the test, joined by path: the container sees its device.
    import subprocess
    name = f"emtest{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "dummy7", "type", "veth",
                        "peer", "name", "dummy8"], check=True)

        def edit(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                        if n["type"] != "network"]
            c["linux"]["namespaces"].append({"type": "network",
                                             "path": f"/run/netns/{name}"})
            c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys"]
        p = rt.run(["cat", "/proc/net/dev"], edit=edit)
        assert p.returncode == 0, p.stderr
        assert "dummy7" in p.stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.mark.parametrize("domain,expect", [("LINUX32", "i686"), ("LINUX", "x86_64")])
def test_personality(rt, domain, expect):
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64 personalities")
    p = rt.run(["uname", "-m"], edit=lambda c: c["linux"].update(personality={"domain": domain}))
    assert p.stdout.strip() == expect
