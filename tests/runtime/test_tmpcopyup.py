"""The tmpcopyup mount option (podman adds it to every tmpfs it asks for):
the files under the mount point are copied up into the new tmpfs, as runc and
crun do, and the image underneath stays as it was."""

import hashlib
import os
import shutil

import pytest
from conftest import base_config
from test_engines import Podman

from emergence.runtime import plan, planner

MTIME = 1_500_000_000


def populate(rootfs):
    """/data in ROOTFS: files, a subdirectory, a symlink, a fifo, with owners,
    modes and times of their own."""
    d = os.path.join(rootfs, "data")
    # a copy of the session's rootfs, where earlier tests may have made /data a mount point
    shutil.rmtree(d, ignore_errors=True)
    os.mkdir(d)
    os.chmod(d, 0o750)
    with open(os.path.join(d, "a"), "w") as f:
        f.write("hello\n")
    os.chown(os.path.join(d, "a"), 1000, 2000)
    os.chmod(os.path.join(d, "a"), 0o604)
    with open(os.path.join(d, "w"), "w") as f:
        f.write("mine\n")
    os.chmod(os.path.join(d, "w"), 0o600)
    os.mkdir(os.path.join(d, "sub"))
    os.chown(os.path.join(d, "sub"), 3, 4)
    os.chmod(os.path.join(d, "sub"), 0o711)
    with open(os.path.join(d, "sub", "big"), "wb") as f:
        f.write(bytes(range(256)) * 1024)
    os.chmod(os.path.join(d, "sub", "big"), 0o2755)
    os.symlink("a", os.path.join(d, "link"))
    os.lchown(os.path.join(d, "link"), 5, 6)
    os.mkfifo(os.path.join(d, "fifo"))
    os.chmod(os.path.join(d, "fifo"), 0o620)
    for name in ("a", "sub/big", "sub", "fifo"):
        os.utime(os.path.join(d, name), (MTIME, MTIME))
    os.utime(os.path.join(d, "link"), (MTIME, MTIME), follow_symlinks=False)


def tmpfs(dst, *options):
    return {"destination": dst, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", *options]}


LISTING = ("cd /data && stat -c '%n %a %u %g %F %Y' a sub sub/big link fifo"
           " && readlink link && cat a && md5sum sub/big")


def test_tmpfs_gets_the_files_under_its_mount_point(rt):
    mounts = [tmpfs("/data", "tmpcopyup"), tmpfs("/not/there/yet", "tmpcopyup")]
    b = rt.bundle(["sh", "-c", LISTING +
                   " && echo more >> w && touch new && mkdir sub2 && echo wrote"
                   " && ls -A /not/there/yet | wc -l && touch /not/there/yet/x && echo fresh"
                   " && awk '$5 == \"/data\" {print $9}' /proc/self/mountinfo"],
                  copy_rootfs=True, edit=lambda c: c["mounts"].extend(mounts))
    populate(os.path.join(b, "rootfs"))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    big = os.path.join(b, "rootfs", "data", "sub", "big")
    digest = hashlib.md5(open(big, "rb").read()).hexdigest()
    assert p.stdout.splitlines() == [
        f"a 604 1000 2000 regular file {MTIME}",
        f"sub 711 3 4 directory {MTIME}",
        f"sub/big 2755 0 0 regular file {MTIME}",
        f"link 777 5 6 symbolic link {MTIME}",
        f"fifo 620 0 0 fifo {MTIME}",
        "a", "hello", f"{digest}  sub/big",
        "wrote", "0", "fresh", "tmpfs"]
    # the image underneath is untouched
    data = os.path.join(b, "rootfs", "data")
    assert sorted(os.listdir(data)) == ["a", "fifo", "link", "sub", "w"]
    assert open(os.path.join(data, "w")).read() == "mine\n"
    assert open(os.path.join(data, "a")).read() == "hello\n"
    assert os.listdir(os.path.join(data, "sub")) == ["big"]
    assert os.path.isdir(os.path.join(b, "rootfs", "not", "there", "yet"))


def test_read_only_tmpfs_is_filled_then_made_read_only(rt):
    b = rt.bundle(["sh", "-c", "cat /data/a; touch /data/b || echo refused"], copy_rootfs=True,
                  edit=lambda c: c["mounts"].append(tmpfs("/data", "tmpcopyup", "ro")))
    populate(os.path.join(b, "rootfs"))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello\nrefused\n"
    assert "Read-only file system" in p.stderr


def test_a_tree_too_deep_to_copy_fails_cleanly(rt):
    b = rt.bundle(["true"], copy_rootfs=True,
                  edit=lambda c: c["mounts"].append(tmpfs("/data", "tmpcopyup")))
    os.makedirs(os.path.join(b, "rootfs", "data", *["d"] * 80))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode != 0
    assert "with the files under it copied up" in p.stderr
    assert "more than 64 directories deep" in p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr


def test_copy_up_is_for_tmpfs_only_and_costs_nothing_elsewhere(tmp_path):
    c = base_config(["true"])
    c["mounts"] = [tmpfs("/plain", "mode=755"), tmpfs("/up", "tmpcopyup", "ro"),
                   tmpfs("/upmode", "tmpcopyup", "mode=700")]
    ops = planner.Planner(c, str(tmp_path), str(tmp_path), str(tmp_path), None, []).build().ops
    mounts = {args[1]: args for op, _, args in ops if op == plan.MOUNT}
    assert mounts["/plain"][-1] == str(plan.IN_ROOT_DIR)
    # without mode= the tmpfs also keeps its mount point's mode, as runc
    assert mounts["/up"][-1] == str(plan.IN_ROOT_DIR | plan.COPY_UP | plan.KEEP_MODE)
    assert mounts["/upmode"][-1] == str(plan.IN_ROOT_DIR | plan.COPY_UP)
    assert not int(mounts["/up"][3]) & planner.MS_RDONLY  # written first, then remounted
    assert any(op == plan.MOUNT_EXISTING and args[0] == "/up" for op, _, args in ops)
    c["mounts"] = [{"destination": "/b", "type": "bind", "source": "/tmp",
                    "options": ["rbind", "tmpcopyup"]}]
    with pytest.raises(planner.ConfigError, match="tmpcopyup is for tmpfs"):
        planner.Planner(c, str(tmp_path), str(tmp_path), str(tmp_path), None, []).build()


@pytest.fixture(scope="module")
def podman(tmp_path_factory, rootfs):
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("conmon"):
        pytest.skip("needs root, podman and conmon")
    p = Podman(str(tmp_path_factory.mktemp("podman")), rootfs)
    yield p
    p.close()


SCRIPT = ("touch /tmp/t /var/tmp/t /run/t && ls -ld /tmp /var/tmp /run | cut -c1-10"
          " && awk '$5 ~ /^\\/(tmp|run|var\\/tmp)$/ {print $5, $9}' /proc/self/mountinfo | sort"
          " && (touch /x 2>/dev/null || echo rootfs read-only)")


def podman_runs(podman, *runtime):
    """The outputs of --read-only, and of --tmpfs with --mount type=tmpfs."""
    outs = []
    for args in (["--read-only", "bb", "sh", "-c", SCRIPT],
                 ["--tmpfs", "/etc", "--mount", "type=tmpfs,destination=/bin", "bb", "sh", "-c",
                  "echo x > /etc/new && grep -c root /etc/passwd && ls /bin | grep -c '^sh$'"
                  " && ls -l /bin/sh | cut -c1-10"]):
        p = podman("run", "--rm", "--network", "none", *runtime, *args)
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    return outs


@pytest.mark.slow
def test_podman_read_only_and_tmpfs(podman):
    """Stock podman (its default seccomp profile): --read-only, --tmpfs and
    --mount type=tmpfs run, with the image's files in each tmpfs; runc, where
    installed, prints the same."""
    read_only, tmpfs_mounts = podman_runs(podman)
    lines = read_only.splitlines()
    assert lines[3:] == ["/run tmpfs", "/tmp tmpfs", "/var/tmp tmpfs", "rootfs read-only"]
    assert tmpfs_mounts.split() == ["1", "1", "lrwxrwxrwx"]
    if shutil.which("runc"):
        assert podman_runs(podman, "--runtime", shutil.which("runc")) == [read_only,
                                                                          tmpfs_mounts]
