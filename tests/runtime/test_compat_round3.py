"""Issue 29, where runc and crun differ from what Emergence did: device modes with
type bits, hooks without env, UTS sysctls against hostname/domainname, unknown
capability names, AppArmor profiles (docs/compat.md has the table)."""

import os
import stat

import pytest
from test_errors import assert_clean_failure, create_with


def _device(mode, kind="c"):
    def edit(c):
        c["linux"].setdefault("devices", []).append(
            {"path": "/dev/round3", "type": kind, "major": 1, "minor": 3, "fileMode": mode})
    return edit


@pytest.mark.parametrize("mode, want", [
    (8630, "crw-rw-rw-"),        # podman's 0o20666 for a character device
    (0o60640, "crw-r-----"),     # type bits that say block: `type` decides, as runc does
    (0o100600, "crw-------"),    # a regular file's type bits: the same
])
def test_device_file_mode_with_type_bits_uses_the_permission_bits(rt, mode, want):
    p = rt.run(["sh", "-c", "ls -l /dev/round3"], edit=_device(mode))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == want and p.stdout.split()[4:6] == ["1,", "3"], p.stdout
    assert p.stderr == ""


def test_device_file_mode_beyond_a_mode_is_refused(rt):
    cid, p = create_with(rt, edit=_device(0o200000))
    assert_clean_failure(rt, cid, p, "linux.devices[0].fileMode", "a file mode")


def test_device_node_is_really_a_character_device(rt, tmp_path):
    """The node is made by mknod with `type`'s bits: stat it from the host."""
    b = rt.bundle(["sleep", "100"], edit=_device(0o60640), copy_rootfs=True)
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    pid = rt.state(cid)["pid"]
    st = os.stat(f"/proc/{pid}/root/dev/round3")
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640


def _hook_env(tmp_path, **hook):
    out = tmp_path / "hook.env"

    def edit(c):
        c["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", f"env > {out}"],
                                    **hook}]}
    return out, edit


def test_a_hook_without_env_inherits_the_runtimes_environment(rt, tmp_path):
    out, edit = _hook_env(tmp_path)
    p = rt("run", "--bundle", rt.bundle(["true"], edit=edit), rt.new_id(),
           env=dict(os.environ, ROUND3_VAR="from the caller"))
    assert p.returncode == 0, p.stderr
    env = out.read_text().splitlines()
    assert "ROUND3_VAR=from the caller" in env
    assert any(e.startswith("PATH=") for e in env)


@pytest.mark.parametrize("given, want", [([], set()), (["A=1"], {"A=1"})])
def test_a_hook_with_env_gets_exactly_it(rt, tmp_path, given, want):
    out, edit = _hook_env(tmp_path, env=given)
    p = rt("run", "--bundle", rt.bundle(["true"], edit=edit), rt.new_id(),
           env=dict(os.environ, ROUND3_VAR="from the caller"))
    assert p.returncode == 0, p.stderr
    # sh adds PWD (and may add SHLVL, _) itself
    env = {e for e in out.read_text().splitlines()
           if e.split("=")[0] not in ("PWD", "SHLVL", "_", "OLDPWD")}
    assert env == want


@pytest.mark.parametrize("field", ["hostname", "domainname"])
def test_a_uts_sysctl_that_contradicts_its_field_is_refused(rt, field):
    def edit(c):
        c[field] = "aaa"
        c["linux"]["sysctl"] = {f"kernel.{field}": "bbb"}
    cid, p = create_with(rt, edit=edit)
    assert_clean_failure(rt, cid, p, f"linux.sysctl.kernel.{field}", "'bbb'",
                         f"contradicts {field} 'aaa'")


@pytest.mark.parametrize("field", ["hostname", "domainname"])
def test_a_uts_sysctl_that_agrees_with_its_field_runs(rt, field):
    def edit(c):
        c[field] = "aaa"
        c["linux"]["sysctl"] = {f"kernel/{field}": "aaa"}
    p = rt.run(["cat", f"/proc/sys/kernel/{field}"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "aaa"


def test_unknown_capability_names_are_a_warning_and_the_container_runs(rt):
    def edit(c):
        for kind in ("bounding", "permitted", "effective"):
            c["process"]["capabilities"][kind] += ["", "../../..", "CAP_NOPE"]
    p = rt.run(["grep", "CapBnd", "/proc/self/status"], edit=edit)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == "CapBnd:"
    lines = p.stderr.splitlines()
    assert lines == ["emergence: warning: process.capabilities: unknown capabilities "
                     "ignored: '', '../../..', 'CAP_NOPE'"], p.stderr


def test_a_huge_unknown_capability_name_is_not_echoed_whole(rt):
    p = rt.run(["true"], edit=lambda c: c["process"]["capabilities"].update(
        bounding=["C" * 100_000]))
    assert p.returncode == 0, p.stderr
    assert "unknown capabilities ignored" in p.stderr and len(p.stderr) < 600


def _apparmor_enabled():
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def test_apparmor_profile_is_refused(rt):
    """Without AppArmor, as runc and crun do; with it, because applying a profile
    is not implemented: either way a container asked to be confined never runs
    unconfined."""
    cid, p = create_with(rt, edit=lambda c: c["process"].update(apparmorProfile="unconfined"))
    why = "labels are not supported" if _apparmor_enabled() else "AppArmor is not enabled"
    assert_clean_failure(rt, cid, p, "process.apparmorProfile", why)


def test_exec_with_an_apparmor_profile_is_refused(rt):
    if _apparmor_enabled():
        pytest.skip("AppArmor is enabled here")
    b = rt.bundle(["sleep", "100"])
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", b, cid, check=True)
    p = rt("exec", "--apparmor", "x", cid, "true")
    assert p.returncode == 1 and "AppArmor is not enabled" in p.stderr, p.stderr
    assert rt("exec", cid, "true").returncode == 0

