"""OCI hooks: order, the state on stdin, the namespace each kind runs in, and
the failure semantics runtime.md gives for each."""

import json
import os

HOST_MNT = os.readlink("/proc/self/ns/mnt")


def hook_script(tmp_path):
    """A host-side hook: logs its name, mount namespace and the state it got."""
    log = tmp_path / "hooks.log"
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\nstate=$(cat)\necho \"$1|$(readlink /proc/self/ns/mnt)|"
                      f"$state\" >> {log}\nexit ${{2:-0}}\n")
    script.chmod(0o755)
    return str(script), log


def entries(log):
    out = []
    for line in log.read_text().splitlines():
        name, mnt, state = line.split("|", 2)
        out.append((name, mnt, json.loads(state)))
    return out


def with_hooks(tmp_path, script, fail=None, extra=None):
    def h(kind):
        return {"path": script, "args": ["hook.sh", kind, "3" if kind == fail else "0"]}

    def edit(c):
        c["hooks"] = {k: [h(k)] for k in ("prestart", "createRuntime", "createContainer",
                                            "poststart", "poststop")}
        # startContainer resolves and runs inside the container
        c["hooks"]["startContainer"] = [{"path": "/bin/sh", "args": [
            "sh", "-c", "echo \"startContainer|$(readlink /proc/self/ns/mnt)|$(cat)\" "
                        ">> /hooks/hooks.log" + ("; exit 4" if fail == "startContainer" else "")]}]
        c["mounts"].append({"destination": "/hooks", "type": "bind", "source": str(tmp_path),
                            "options": ["rbind"]})
        if extra:
            extra(c)
    return edit


def test_all_hooks_run_in_order_with_state(rt, tmp_path):
    script, log = hook_script(tmp_path)
    b = rt.bundle(["sh", "-c", "readlink /proc/self/ns/mnt"], edit=with_hooks(tmp_path, script))
    cid = rt.new_id()
    p = rt("run", "--bundle", b, cid)
    assert p.returncode == 0, p.stderr
    container_mnt = p.stdout.strip()
    got = entries(log)
    assert [e[0] for e in got] == ["prestart", "createRuntime", "createContainer",
                                   "startContainer", "poststart", "poststop"]
    mnt = {name: m for name, m, _ in got}
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert mnt[kind] == HOST_MNT, kind       # runtime namespace
    for kind in ("createContainer", "startContainer"):
        assert mnt[kind] == container_mnt, kind  # container namespace
    state = {name: s for name, _, s in got}
    assert {s["id"] for s in state.values()} == {cid}
    assert state["createRuntime"]["status"] == "created"
    assert state["poststart"]["status"] == "running"
    assert state["poststop"]["status"] == "stopped"
    assert state["createRuntime"]["pid"] > 1              # the runtime's view
    assert state["createContainer"]["pid"] == 1           # the container's view
    assert state["poststart"]["bundle"] == b


def test_failing_create_runtime_hook_fails_create_and_cleans_up(rt, tmp_path):
    script, log = hook_script(tmp_path)
    b = rt.bundle(["true"], edit=with_hooks(tmp_path, script, fail="createRuntime"))
    cid = rt.new_id()
    p = rt("create", "--bundle", b, cid)
    assert p.returncode == 1
    assert "createRuntime hook 0" in p.stderr and "exited with status 3" in p.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))
    assert [e[0] for e in entries(log)] == ["prestart", "createRuntime"]


def test_failing_create_container_hook_fails_create(rt, tmp_path):
    script, log = hook_script(tmp_path)
    b = rt.bundle(["true"], edit=with_hooks(tmp_path, script, fail="createContainer"))
    cid = rt.new_id()
    p = rt("create", "--bundle", b, cid)
    assert p.returncode == 1
    assert "createContainer hook 0" in p.stderr and "exited with status 3" in p.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))


def test_failing_start_container_hook_fails_start_and_stops(rt, tmp_path):
    script, log = hook_script(tmp_path)
    b = rt.bundle(["sleep", "100"], edit=with_hooks(tmp_path, script, fail="startContainer"))
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    p = rt("start", cid)
    assert p.returncode == 1
    assert "startContainer hook 0" in p.stderr and "exited with status 4" in p.stderr
    assert rt.state(cid)["status"] == "stopped"
    assert "poststart" not in [e[0] for e in entries(log)]
    rt("delete", cid, check=True)
    assert entries(log)[-1][0] == "poststop"


def test_failing_poststart_hook_fails_start(rt, tmp_path):
    script, log = hook_script(tmp_path)
    b = rt.bundle(["sleep", "100"], edit=with_hooks(tmp_path, script, fail="poststart"))
    cid = rt.new_id()
    rt("create", "--bundle", b, cid, check=True)
    p = rt("start", cid)
    assert p.returncode == 1 and "poststart hook 0" in p.stderr


def test_failing_poststop_hook_is_a_warning(rt, tmp_path):
    script, log = hook_script(tmp_path)
    b = rt.bundle(["true"], edit=with_hooks(tmp_path, script, fail="poststop"))
    p = rt("run", "--bundle", b, rt.new_id())
    assert p.returncode == 0
    assert "warning: poststop hook 0" in p.stderr


def test_hook_timeout(rt, tmp_path):
    def edit(c):
        c["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"],
                                         "timeout": 1}]}
    b = rt.bundle(["true"], edit=edit)
    cid = rt.new_id()
    p = rt("create", "--bundle", b, cid)
    assert p.returncode == 1 and "timeout of 1s" in p.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))


def test_hook_env_and_args(rt, tmp_path):
    out = tmp_path / "env.out"

    def edit(c):
        c["hooks"] = {"poststart": [{"path": "/bin/sh",
                                     "args": ["sh", "-c", f"echo $0 $FOO > {out}", "zero"],
                                     "env": ["FOO=bar"]}]}
    assert rt.run(["true"], edit=edit).returncode == 0
    assert out.read_text().strip() == "zero bar"


def test_a_hook_dies_with_a_create_killed_with_kill_9(rt, tmp_path):
    """A createRuntime hook still running when create gets SIGKILL is killed too
    (its parent-death signal) rather than left running; delete --force then
    clears what the create made."""
    import signal
    import subprocess
    import time

    from conftest import alive, cold_env, emergence_command
    marker = tmp_path / "hook.pid"
    b = rt.bundle(["sleep", "300"], edit=lambda c: c.update(hooks={"createRuntime": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", f"echo $$ > {marker}.tmp && mv {marker}.tmp {marker} && "
                             "exec sleep 300"]}]}))
    cid = rt.new_id()
    # the cold path: p runs the hook
    p = subprocess.Popen(emergence_command() + ["--root", rt.root, "create", "--bundle", b, cid],
                         env=cold_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    hook = None
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert p.poll() is None and time.monotonic() < deadline, "the hook never ran"
            time.sleep(0.02)
        hook = int(marker.read_text())
        with open(f"/proc/{hook}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == p.pid  # create's own child
        p.kill()
        assert p.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while alive(hook) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(hook), "the hook outlived the create that ran it"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if hook and alive(hook):
            os.kill(hook, signal.SIGKILL)
    assert rt.state(cid)["status"] == "stopped"
    rt("delete", "--force", cid, check=True)
