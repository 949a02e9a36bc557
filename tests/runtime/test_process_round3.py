"""Issue 29, processes: an exec'd process leads its own session and process group
(as runc; crun leaves it in the caller's), `exec --no-new-privs`, and stdio handed
to a non-root user as in runtime-tools' and crun's `regular-files-chowned` and
`dev-null-no-chown` checks.  docs/compat.md has the table."""

import json
import os
import shutil
import subprocess

# pid, process group and session of the shell itself
SESSION = "read -r pid comm state ppid pgrp sid rest < /proc/$$/stat; echo $pid $pgrp $sid"


def _runc_exec(rt, bundle, *args, flags=()):
    """runc run -d on BUNDLE, then exec ARGS in it with FLAGS: stdout of the exec."""
    root, cid = str(rt.tmp / "runc-state"), rt.new_id("runc")
    subprocess.run(["runc", "--root", root, "run", "-d", "--bundle", bundle, cid],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True, timeout=60)
    try:
        return subprocess.run(["runc", "--root", root, "exec", *flags, cid, *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60).stdout
    finally:
        subprocess.run(["runc", "--root", root, "delete", "-f", cid], timeout=60)


def test_exec_leads_its_own_session(rt):
    """Without a terminal too: pgrp == sid == its pid in the container's pid namespace
    (before, both were 0: the caller's, outside the namespace)."""
    b = rt.bundle(["sleep", "300"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    p = rt("exec", cid, "sh", "-c", SESSION)
    assert p.returncode == 0, p.stderr
    pid, pgrp, sid = p.stdout.split()
    assert pid == pgrp == sid != "0"
    if shutil.which("runc"):
        pid, pgrp, sid = _runc_exec(rt, b, "sh", "-c", SESSION).split()
        assert pid == pgrp == sid != "0"


def test_the_init_leads_its_session_too(rt):
    p = rt.run(["sh", "-c", SESSION])
    assert p.stdout.split() == ["1", "1", "1"], p.stderr


def _nnp_bundle(rt):
    def edit(c):
        c["process"]["noNewPrivileges"] = False
    return rt.bundle(["sleep", "300"], edit=edit)


NNP = ["grep", "NoNewPrivs", "/proc/self/status"]


def test_exec_no_new_privs(rt, tmp_path):
    """--no-new-privs sets it for the exec'd process alone, as runc; with --process
    FILE, the file decides (runc ignores the flag there too)."""
    b = _nnp_bundle(rt)
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    proc = tmp_path / "process.json"
    proc.write_text(json.dumps({"args": NNP, "cwd": "/", "user": {"uid": 0, "gid": 0},
                                "env": ["PATH=/bin"]}))
    got = [rt("exec", *flags, cid, *args).stdout.split()[-1]
           for flags, args in ((["--no-new-privs"], NNP), ([], NNP),
                               (["--no-new-privs", "--process", str(proc)], []))]
    assert got == ["1", "0", "0"]
    assert rt("exec", cid, *NNP).stdout.split()[-1] == "0"  # the init's stays off
    if shutil.which("runc"):
        peer = [_runc_exec(rt, b, *args, flags=flags).split()[-1]
                for flags, args in ((["--no-new-privs"], NNP), ([], NNP),
                                    (["--no-new-privs", "--process", str(proc)], []))]
        assert peer == got


def test_stdio_goes_to_the_processs_user(rt, tmp_path):
    """A file or pipe given as stdio becomes the user's (uid and gid, as crun; runc
    changes the uid alone); /dev/null stays the host's.  The check reads the owner
    through /proc/self/fd, as crun's regular-files-chowned test does."""
    def edit(c):
        c["process"]["user"] = {"uid": 1, "gid": 2}
    out = tmp_path / "out"
    b = rt.bundle(["sh", "-c", "stat -L -c %u:%g /proc/self/fd/0 /proc/self/fd/1 "
                   "/proc/self/fd/2 | tr '\\n' ' '; echo ok > /proc/self/fd/2 && "
                   "echo reopened"], edit=edit)
    null = os.stat("/dev/null")
    with open(out, "w") as f:
        r, w = os.pipe()
        try:
            p = subprocess.run(rt.cmd + ["--root", rt.root, "run", "--bundle", b,
                                         rt.new_id()], stdin=subprocess.DEVNULL, stdout=f,
                               stderr=w, timeout=60)
        finally:
            os.close(w)
            os.close(r)
    assert p.returncode == 0
    assert out.read_text().split() == [f"{null.st_uid}:{null.st_gid}", "1:2", "1:2",
                                       "reopened"]
    after = os.stat("/dev/null")
    assert (after.st_uid, after.st_gid) == (null.st_uid, null.st_gid)
    assert (os.stat(out).st_uid, os.stat(out).st_gid) == (1, 2)


def test_exec_stdio_goes_to_its_user(rt, tmp_path):
    b = rt.bundle(["sleep", "300"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    out = tmp_path / "exec-out"
    with open(out, "w") as f:
        p = subprocess.run(rt.cmd + ["--root", rt.root, "exec", "--user", "3:4", cid,
                                     "stat", "-L", "-c", "%u:%g", "/proc/self/fd/1"],
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE,
                           timeout=60)
    assert p.returncode == 0, p.stderr
    assert out.read_text().strip() == "3:4"


def test_root_stdio_is_not_touched(rt, tmp_path):
    """A root process: no chown at all (nothing in the plan)."""
    out = tmp_path / "out"
    out.write_text("")
    os.chown(out, 5, 5)
    with open(out, "a") as f:
        p = subprocess.run(rt.cmd + ["--root", rt.root, "--debug", "run", "--bundle",
                                     rt.bundle(["true"]), rt.new_id()],
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "CHOWN_STDIO" not in p.stderr
    assert (os.stat(out).st_uid, os.stat(out).st_gid) == (5, 5)


def test_peer_changes_the_uid_alone(rt, tmp_path):
    """runc (1.1.5) gives the stdio file to the uid and keeps its group: recorded here
    so docs/compat.md stays true."""
    if not shutil.which("runc"):
        return
    def edit(c):
        c["process"]["user"] = {"uid": 1, "gid": 2}
    out = tmp_path / "runc-out"
    b = rt.bundle(["true"], edit=edit)
    root, cid = str(rt.tmp / "runc-state"), rt.new_id("runc")
    with open(out, "w") as f:
        subprocess.run(["runc", "--root", root, "run", "-d", "--bundle", b, cid],
                       stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.DEVNULL,
                       timeout=60)
    subprocess.run(["runc", "--root", root, "delete", "-f", cid], timeout=60)
    assert (os.stat(out).st_uid, os.stat(out).st_gid) == (1, 0)
