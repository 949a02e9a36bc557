"""The runtime's state is root's alone: another local user who knows a
container's id can neither open its exec.fifo (to start, hang or kill it), nor
list or enter the state root or a container's directory, nor read state.json.
A root that someone else owns or that is a symlink is refused; a looser one is
tightened.  The legitimate use, by root, still works in every case here.

The state root sits in a world-searchable directory, so only the runtime's own
modes stand between the other user and the files.
"""

import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest
from conftest import Runtime, leftovers

# What the other user tries; each prints "ok" or the errno's name.
ATTACKS = r"""
import errno, json, os, sys
root, cid = sys.argv[1], sys.argv[2]
d = os.path.join(root, cid)
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps({
    "fifo_write": attempt(lambda: os.close(os.open(os.path.join(d, "exec.fifo"),
                                                   os.O_WRONLY | os.O_NONBLOCK))),
    "fifo_read": attempt(lambda: os.close(os.open(os.path.join(d, "exec.fifo"),
                                                  os.O_RDONLY | os.O_NONBLOCK))),
    "list_root": attempt(lambda: os.listdir(root)),
    "enter_root": attempt(lambda: os.chdir(root)),
    "list_dir": attempt(lambda: os.listdir(d)),
    "enter_dir": attempt(lambda: os.chdir(d)),
    "stat_state": attempt(lambda: os.stat(os.path.join(d, "state.json"))),
    "read_state": attempt(lambda: open(os.path.join(d, "state.json")).read()),
}))
"""


@pytest.fixture
def public_rt(tmp_path, rootfs):
    """A runtime whose --root is inside a world-searchable directory (0755)."""
    if os.geteuid() != 0:
        pytest.skip("runs real containers: needs root")
    parent = tempfile.mkdtemp(prefix="emx-state-", dir="/tmp")
    os.chmod(parent, 0o755)
    r = Runtime(os.path.join(parent, "state"), tmp_path, rootfs)
    yield r
    for cid in sorted(r.ids):
        r("delete", "--force", cid)
    left = [cid for cid in r.ids if os.path.exists(os.path.join(r.root, cid))]
    stray = [x for cid in r.ids for x in leftovers(cid)]
    shutil.rmtree(parent, ignore_errors=True)
    assert not left and not stray, (left, stray)


def attack(user, root, cid):
    p = user.run(["/usr/bin/python3", "-c", ATTACKS, root, cid])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_another_user_cannot_touch_a_created_container(public_rt, other_user):
    rt = public_rt
    b = rt.bundle(["sleep", "300"])
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    got = attack(other_user, rt.root, cid)
    assert got == dict.fromkeys(got, "EACCES"), got
    d = os.path.join(rt.root, cid)
    assert (mode(rt.root), mode(d), mode(os.path.join(d, "exec.fifo"))) == (0o700, 0o700, 0o600)
    for name in os.listdir(d):
        assert mode(os.path.join(d, name)) & 0o077 == 0, name
    # nothing the attempts did moved it; root starts it and deletes it as ever
    assert rt.state(cid)["status"] == "created"
    rt("start", cid, check=True)
    assert rt.state(cid)["status"] == "running"
    rt("delete", "--force", cid, check=True)


def test_the_fifo_of_a_container_running_as_that_user_is_still_out_of_reach(
        public_rt, other_user):
    """The fifo belongs to the init's own uid (it opens the fifo as that user, by
    descriptor): when the other user is that uid, the 0700 dirs still keep them out."""
    rt = public_rt

    def as_user(c):
        c["process"]["user"] = {"uid": other_user.uid, "gid": other_user.gid}
    b = rt.bundle(["sleep", "300"], edit=as_user)
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    got = attack(other_user, rt.root, cid)
    assert got["fifo_write"] == "EACCES" and got["enter_dir"] == "EACCES", got
    fifo = os.stat(os.path.join(rt.root, cid, "exec.fifo"))
    assert (fifo.st_uid, stat.S_IMODE(fifo.st_mode)) == (other_user.uid, 0o600)
    rt("start", cid, check=True)  # and the init, as that user, got through the barrier
    s = rt.state(cid)
    assert s["status"] == "running"
    with open(f"/proc/{s['pid']}/status") as f:
        assert f"Uid:\t{other_user.uid}\t" in f.read()
    rt("delete", "--force", cid, check=True)


def test_a_user_namespace_container_passes_the_barrier(public_rt):
    """Its init (host uid 100000) cannot search root's 0700 dirs: it opens its fifo
    through the descriptor create gave it."""
    rt = public_rt
    rootfs = os.path.join(os.path.dirname(rt.root), "rootfs")  # where uid 100000 can read
    subprocess.run(["cp", "-a", rt.rootfs, rootfs], check=True)

    def userns(c):
        c["root"]["path"] = rootfs
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    p = rt.run(["sh", "-c", "echo in-$(id -u)"], edit=userns, check=True)
    assert p.stdout.strip() == "in-0"
    assert os.listdir(rt.root) == []


def test_a_looser_root_is_tightened(public_rt):
    rt = public_rt
    os.mkdir(rt.root, 0o755)
    os.chmod(rt.root, 0o755)
    rt.run(["true"], check=True)
    assert mode(rt.root) == 0o700


def test_a_root_that_is_a_symlink_or_another_users_is_refused(public_rt, other_user):
    rt = public_rt
    parent = os.path.dirname(rt.root)
    real = os.path.join(parent, "elsewhere")
    os.mkdir(real, 0o700)
    os.symlink(real, rt.root)
    b = rt.bundle(["true"])
    cid = rt.new_id()
    p = rt("run", "--bundle", b, cid)
    assert p.returncode != 0 and "symlink" in p.stderr and len(p.stderr.splitlines()) == 1
    assert os.listdir(real) == [] and not leftovers(cid)
    # a root planted by another user (in a directory anyone may write, like /tmp)
    os.unlink(rt.root)
    os.chmod(parent, 0o1777)
    made = other_user.run(["mkdir", "-m", "0777", rt.root])
    assert made.returncode == 0, made.stderr
    p = rt("run", "--bundle", b, cid)
    assert p.returncode != 0 and f"uid {other_user.uid}" in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1 and os.listdir(rt.root) == []
    assert not leftovers(cid)
    # the legitimate use: root's own root
    os.rmdir(rt.root)
    os.chmod(parent, 0o755)
    rt("run", "--bundle", b, cid, check=True)


def test_rootless_default_root_is_the_users_own(monkeypatch):
    import emergence
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    assert emergence.default_root() == "/run/user/1234/emergence"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert emergence.default_root() == "/run/user/1234/emergence"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert emergence.default_root() == "/run/emergence"
