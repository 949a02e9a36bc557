"""process.*: user, capabilities, rlimits, environment, cwd, and friends."""

import os

import pytest

from emergence.runtime.capabilities import CAPABILITIES


def proc_status(rt, edit=None):
    p = rt.run(["cat", "/proc/self/status"], edit=edit)
    assert p.returncode == 0, p.stderr
    return dict(line.split(":\t", 1) for line in p.stdout.splitlines() if ":\t" in line)


def mask_of(names):
    m = 0
    for n in names:
        m |= 1 << CAPABILITIES[n]
    return m


def test_capability_sets_are_applied(rt):
    status = proc_status(rt)
    default = mask_of(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    for field in ("CapBnd", "CapEff", "CapPrm"):
        assert int(status[field], 16) == default, field
    assert int(status["CapInh"], 16) == 0
    assert int(status["CapAmb"], 16) == 0


def test_ambient_and_inheritable_capabilities(rt):
    def edit(c):
        caps = c["process"]["capabilities"]
        caps["inheritable"] = ["CAP_NET_BIND_SERVICE"]
        caps["ambient"] = ["CAP_NET_BIND_SERVICE"]
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
    status = proc_status(rt, edit)
    assert int(status["CapAmb"], 16) == mask_of(["CAP_NET_BIND_SERVICE"])
    assert int(status["CapInh"], 16) == mask_of(["CAP_NET_BIND_SERVICE"])


def test_dropped_capability_is_really_gone(rt):
    # CAP_CHOWN is not in the default set: chown to another user fails.
    p = rt.run(["sh", "-c", "touch /tmp/f && chown 1234 /tmp/f"],
               edit=lambda c: c["mounts"].append(
                   {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))
    assert p.returncode != 0 and "Operation not permitted" in p.stderr

    def grant(c):
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k].append("CAP_CHOWN")
    p = rt.run(["sh", "-c", "touch /tmp/f && chown 1234 /tmp/f && stat -c %u /tmp/f"],
               edit=grant)
    assert p.stdout.strip() == "1234", p.stderr


def test_user_group_umask_and_additional_gids(rt):
    def edit(c):
        c["process"]["user"] = {"uid": 1234, "gid": 4321, "umask": 0o027,
                                "additionalGids": [5, 77]}
    p = rt.run(["sh", "-c", "id -u; id -g; id -G; umask"], edit=edit)
    lines = p.stdout.splitlines()
    assert lines[0] == "1234" and lines[1] == "4321"
    assert sorted(lines[2].split()) == sorted(["4321", "5", "77"])
    assert lines[3] == "0027"


def test_env_and_cwd(rt):
    def edit(c):
        c["process"]["env"] = ["PATH=/bin", "GREETING=hello world", "EMPTY="]
        c["process"]["cwd"] = "/etc"
    p = rt.run(["sh", "-c", "pwd; echo \"$GREETING\"; env | sort"], edit=edit)
    lines = p.stdout.splitlines()
    assert lines[0] == "/etc"
    assert lines[1] == "hello world"
    assert "EMPTY=" in lines and "PATH=/bin" in lines


def test_executable_is_found_with_the_containers_path(rt):
    p = rt.run(["busybox", "echo", "via-path"],
               edit=lambda c: c["process"].update(env=["PATH=/nowhere:/bin"]))
    assert p.stdout.strip() == "via-path", p.stderr


def test_rlimits_are_set(rt):
    def edit(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
                                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]
    p = rt.run(["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"], edit=edit)
    assert p.stdout.split() == ["256", "512", "0"]


def test_raising_a_hard_rlimit_without_cap_sys_resource_is_explained(rt):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = rt.run(["true"], edit=lambda c: c["process"].update(rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]))
    if probe.returncode == 0:
        pytest.skip("this host allows raising the hard limit (CAP_SYS_RESOURCE present)")
    assert probe.returncode == 1
    err = probe.stderr.strip()
    assert "\n" not in err
    assert "RLIMIT_NOFILE" in err and "CAP_SYS_RESOURCE" in err


def test_no_new_privileges(rt):
    status = proc_status(rt)
    assert status["NoNewPrivs"].strip() == "1"
    status = proc_status(rt, edit=lambda c: c["process"].update(noNewPrivileges=False))
    assert status["NoNewPrivs"].strip() == "0"


def test_oom_score_adj(rt):
    p = rt.run(["cat", "/proc/self/oom_score_adj"],
               edit=lambda c: c["process"].update(oomScoreAdj=500))
    assert p.stdout.strip() == "500"


def test_only_stdio_reaches_the_container(rt):
    p = rt.run(["ls", "/proc/self/fd"])
    # 0, 1, 2 and the fd ls itself opened on /proc/self/fd
    assert sorted(int(x) for x in p.stdout.split()) == [0, 1, 2, 3]


def test_init_is_session_leader(rt):
    p = rt.run(["sh", "-c", "cut -d' ' -f6 /proc/1/stat"])
    assert p.stdout.strip() == "1"


def test_preserve_fds_passes_exactly_the_fds_asked_for(rt, tmp_path):
    import subprocess
    data = tmp_path / "data"
    data.write_text("passed-through\n")
    other = tmp_path / "other"
    other.write_text("")
    b = rt.bundle(["sh", "-c", "cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '"])
    with open(data) as f3, open(other) as f4:
        # In the child only: the data file as fd 3, plus one more open fd that
        # must not reach the container.
        p = subprocess.run(rt.cmd + ["--root", rt.root, "run", "--preserve-fds", "1",
                                     "--bundle", b, rt.new_id()],
                           preexec_fn=lambda: os.dup2(f3.fileno(), 3),
                           pass_fds=(3, f3.fileno(), f4.fileno()), capture_output=True,
                           text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "passed-through"
    # stdio, fd 3, and the fd ls opens for the listing; not the extra fd the caller had
    assert lines[1].split() == ["0", "1", "2", "3", "4"]
