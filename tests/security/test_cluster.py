"""Attacks on the cluster, each tried for real against a real etcd (TLS,
RBAC, made by `cluster init`'s code) next to the legitimate use:

- etcd without a client certificate, and from another local user;
- a worker's certificate writing where only command nodes may;
- a task without a valid command node's signature (the worker refuses and
  records why), a signed task that binds /etc (refused by policy);
- join tokens: used twice, a wrong secret, expired, a CA pin mismatch.
Plus the pure parts: the canonical form that is signed, and the policy.
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import requests

from emergence.cluster import bootstrap, join, pki, policy, signing
from emergence.cluster.files import Material
from emergence.errors import EmergenceError

pytestmark = pytest.mark.skipif(not shutil.which("etcd"), reason="needs etcd-server")


def emergence_command():
    import sys
    here = os.path.join(os.path.dirname(sys.executable), "emergence")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "emergence"]


class Secure:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cl-sec-")
        os.chmod(self.dir, 0o700)
        self.prefix = f"/cl-{uuid.uuid4().hex[:8]}/"
        self.proc, self.url, self.material = bootstrap.init(
            os.path.join(self.dir, "cluster"), os.path.join(self.dir, "data"),
            name="cl-admin", prefix=self.prefix, log=os.path.join(self.dir, "log"))

    def node(self, name, roles):
        b = bootstrap.issue(self.material.dir, name, roles)
        return bootstrap.install(os.path.join(self.dir, f"node-{name}"), b)

    def client(self, material):
        from emergence.place.state import Cluster
        return Cluster(self.url, prefix=self.prefix, material=material)


@pytest.fixture
def sec():
    s = Secure()
    try:
        yield s
    finally:
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        shutil.rmtree(s.dir, ignore_errors=True)


def _wait(cond, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


# -- etcd: certificates and roles ------------------------------------------------------

@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_etcd_refuses_clients_without_a_certificate(sec, other_user):
    put = {"key": base64.b64encode(f"{sec.prefix}tasks/evil".encode()).decode(),
           "value": base64.b64encode(b"{}").decode()}
    # no client certificate: the TLS handshake fails (checked or not)
    for verify in (sec.material.ca, False):
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(sec.url + "/v3/kv/put", json=put, verify=verify, timeout=5)
    # plain http to the TLS port: no answer that writes anything
    try:
        r = requests.post(sec.url.replace("https", "http") + "/v3/kv/put", json=put,
                          timeout=5)
        assert r.status_code == 400, r.text
    except requests.exceptions.ConnectionError:
        pass
    # a certificate from another CA
    ca_key, ca = pki.make_ca()
    k = pki.new_key()
    d = tempfile.mkdtemp(prefix="cl-other-")
    try:
        with open(f"{d}/c.pem", "wb") as f:
            f.write(pki.cert_pem(pki.issue(ca_key, ca, k.public_key(), "evil", ["command"])))
        with open(f"{d}/k.pem", "wb") as f:
            f.write(pki.key_pem(k))
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(sec.url + "/v3/kv/put", json=put, verify=False, timeout=5,
                          cert=(f"{d}/c.pem", f"{d}/k.pem"))
    finally:
        shutil.rmtree(d)
    # another local user: cannot read the node's key, password or the CA key
    for name in ("node.key", "ca.key", "etcd.password", "etcd-root.password"):
        p = other_user.python(f"open({os.path.join(sec.material.dir, name)!r}).read()")
        assert p.returncode != 0 and "Permission denied" in p.stderr, name
    p = other_user.python(
        "import ssl, urllib.request\n"
        "ctx = ssl.create_default_context(); ctx.check_hostname = False\n"
        "ctx.verify_mode = ssl.CERT_NONE\n"
        f"urllib.request.urlopen(urllib.request.Request({sec.url + '/v3/kv/put'!r}, "
        f"data={json.dumps(put).encode()!r}), context=ctx, timeout=5)")
    assert p.returncode != 0 and ("certificate" in p.stderr or "SSL" in p.stderr), p.stderr
    c = sec.client(sec.material)
    assert sec.client(sec.material).get("tasks", "evil") is None
    # the legitimate client (this node's certificate and etcd user) reads and writes
    c.put({"ok": 1}, "config", "probe")
    assert c.get("config", "probe") == {"ok": 1}


def test_a_worker_certificate_writes_only_what_workers_write(sec):
    w = sec.client(sec.node("cl-w1", ["worker"]))
    reader = sec.client(sec.node("cl-r", ["reader"]))
    cmd = sec.client(sec.material)
    cmd.put({"s_green": 1}, "config", "s_green")
    from emergence.place.state import Refused
    for parts in (("tasks", "evil"), ("assign", "cl-w2", "evil"), ("members", "cl-w2"),
                  ("leader",), ("config", "s_green"), ("status", "evil")):
        with pytest.raises(Refused, match="etcd refused: .* do not allow put of /cl-"):
            w.put({"kind": "sleep", "id": "evil"}, *parts)
        with pytest.raises(Refused):
            reader.put({"x": 1}, *parts)
    with pytest.raises(Refused, match="delete"):
        w.delete("config", "s_green")
    assert cmd.get("tasks", "evil") is None and cmd.get("config", "s_green") == {"s_green": 1}
    # what a worker does write, it may: its member and telemetry, acks, results,
    # deleting its own assignments; and it reads the cluster
    lease = w.lease(5)
    w.put({"name": "cl-w1"}, "members", "cl-w1", lease=lease)
    w.put({"ts": 1}, "telemetry", "cl-w1", lease=lease)
    w.put("cl-w1", "ack", "t1", "1")
    assert w.first_result("t1", {"host": "cl-w1", "exit": 0})
    cmd.put({"attempt": 1}, "assign", "cl-w1", "t1")
    w.delete("assign", "cl-w1", "t1")
    assert w.get("config", "s_green") == {"s_green": 1}
    assert reader.get("members", "cl-w1") == {"name": "cl-w1"}
    # a worker's certificate cannot sign tasks either
    with pytest.raises(EmergenceError, match="not a command node"):
        from emergence.place import tasks
        tasks.submit(w, {"kind": "sleep", "id": "nope"})


# -- tasks: signatures and policy ----------------------------------------------------------

def _results_of(cluster, ids, timeout=40):
    assert _wait(lambda: all(cluster.get("results", i) for i in ids), timeout), \
        cluster.items("results")
    return {i: cluster.get("results", i) for i in ids}


def test_worker_refuses_tasks_without_a_valid_signature(sec):
    from emergence.place import tasks
    from emergence.place.commander import Commander
    from emergence.place.worker import Worker
    cmd = sec.client(sec.material)
    wm = sec.node("cl-w", ["worker"])
    logs = []
    nodes = [Commander(cmd, "cl-c", {"lease_ttl": 2}, logs.append),
             Worker(sec.client(wm), "cl-w", {"lease_ttl": 2, "cpu": 4}, logs.append)]
    for n in nodes:
        threading.Thread(target=n.run, daemon=True).start()
    try:
        base = {"kind": "sleep", "seconds": 0.01, "submitted": time.time()}
        # 1. no signature at all (written straight into etcd)
        cmd.create(dict(base, id="unsigned"), "tasks", "unsigned")
        # 2. signed by a certificate of the cluster, but a worker's
        signed_by_worker = signing.sign(dict(base, id="byworker"), wm.node_key(),
                                        wm.node_cert_pem())
        cmd.create(signed_by_worker, "tasks", "byworker")
        # 3. a command node's certificate, the task changed after signing
        good = signing.sign(dict(base, id="changed", cmd=["true"]),
                            sec.material.node_key(), sec.material.node_cert_pem())
        cmd.create(dict(good, seconds=0.02), "tasks", "changed")
        # 4. the command node's certificate with a signature of garbage
        cmd.create(dict(good, id="garbage", signature=dict(good["signature"], sig="AAAA")),
                   "tasks", "garbage")
        # 5. a certificate from another CA that says "command"
        ca_key, ca = pki.make_ca()
        k = pki.new_key()
        alien = pki.cert_pem(pki.issue(ca_key, ca, k.public_key(), "cl-c", ["command"]))
        cmd.create(signing.sign(dict(base, id="alien"), k, alien.decode()), "tasks", "alien")
        # the legitimate use: submitted (and signed) by this command node
        tasks.submit(cmd, {"kind": "sleep", "seconds": 0.01, "id": "legit"})
        res = _results_of(cmd, ["unsigned", "byworker", "changed", "garbage", "alien",
                                "legit"])
    finally:
        for n in nodes:
            n.stop()
    assert res["legit"]["exit"] == 0 and "refused" not in res["legit"], res["legit"]
    why = {k: v.get("refused") for k, v in res.items()}
    assert "not signed" in why["unsigned"]
    assert "not a command node" in why["byworker"]
    assert "does not verify" in why["changed"] and "does not verify" in why["garbage"]
    assert "not issued by this cluster's CA" in why["alien"]
    assert all(res[k]["exit"] == -1 and res[k]["host"] == "cl-w" for k in why if k != "legit")
    assert nodes[1].counts["ran"] == 1 and nodes[1].counts["refused"] == 5
    # `emergence tasks` shows each refusal and its reason
    p = subprocess.run(emergence_command() + ["tasks", "--etcd", sec.url, "--prefix",
                                              sec.prefix, "--cluster-dir", sec.material.dir],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("unsigned "))
    assert "refused" in line and "not signed by a command node" in line


def test_signed_task_that_binds_etc_is_refused_by_policy(sec, rt):
    from emergence.place import tasks
    from emergence.place.commander import Commander
    from emergence.place.worker import Worker
    cmd = sec.client(sec.material)
    logs = []
    pol = {"bundles": [str(rt.tmp), rt.rootfs]}
    nodes = [Commander(cmd, "cl-c", {"lease_ttl": 2}, logs.append),
             Worker(sec.client(sec.node("cl-w", ["worker"])), "cl-w",
                    {"lease_ttl": 2, "cpu": 4, "root": rt.root, "policy": pol,
                     "container_prefix": "cl-"}, logs.append)]
    for n in nodes:
        threading.Thread(target=n.run, daemon=True).start()
    try:
        def bind_etc(c):
            c["mounts"].append({"destination": "/host-etc", "type": "bind",
                                "source": "/etc", "options": ["rbind", "rw"]})
        evil = rt.bundle(("sh", "-c", "echo pwned > /host-etc/cl-pwned"), edit=bind_etc)
        host_ns = rt.bundle(("true",), edit=lambda c: c["linux"]["namespaces"].__setitem__(
            slice(None), [{"type": "pid", "path": "/proc/1/ns/pid"}]))
        caps = rt.bundle(("true",), edit=lambda c: c["process"]["capabilities"]["bounding"]
                         .append("CAP_SYS_ADMIN"))
        ok = rt.bundle(("sh", "-c", "echo fine"))
        rt.ids.update({"cl-evil-1", "cl-hostns-1", "cl-caps-1", "cl-ok-1"})
        for tid, b in (("evil", evil), ("hostns", host_ns), ("caps", caps), ("ok", ok)):
            tasks.submit(cmd, {"kind": "bundle", "bundle": b, "id": tid})
        outside = tempfile.mkdtemp(prefix="cl-outside-")  # a bundle dir not allowed
        shutil.copy(os.path.join(ok, "config.json"), outside)
        tasks.submit(cmd, {"kind": "bundle", "bundle": outside, "id": "outside"})
        res = _results_of(cmd, ["evil", "hostns", "caps", "ok", "outside"], 60)
        shutil.rmtree(outside)
    finally:
        for n in nodes:
            n.stop()
    assert res["ok"]["exit"] == 0 and "fine" in res["ok"]["output"], res["ok"]
    assert "bind mount of host path /etc is not allowed" in res["evil"]["refused"]
    assert "host namespace" in res["hostns"]["refused"]
    assert "CAP_SYS_ADMIN" in res["caps"]["refused"]
    assert "not in an allowed bundle directory" in res["outside"]["refused"]
    assert not os.path.exists("/etc/cl-pwned")
    assert not os.path.exists(os.path.join(rt.root, "cl-evil-1"))


# -- joining -----------------------------------------------------------------------------------

def _serve_join(sec, calls):
    """Run CALLS (functions of the join URL, blocking) while the CA host's
    cluster service answers on loopback."""
    from conftest import serving

    from emergence.cluster.service import Service

    async def main():
        svc = Service({}, sec.material.dir, lambda m: None)
        async with serving(svc) as port:
            url = f"http://127.0.0.1:{port}"
            loop = asyncio.get_running_loop()
            return [await loop.run_in_executor(None, c, url) for c in calls]
    return asyncio.run(main())


def _try(fn):
    try:
        return fn()
    except EmergenceError as e:
        return e


def test_join_tokens_are_one_time_secret_and_pinned(sec, tmp_path, monkeypatch):
    m = sec.material
    token = join.create_token(m, ["worker"])
    tid, secret, pin = join.parse_token(token)
    wrong = join.parse_token(f"{tid}.{'0' * 32}.{pin}")
    expired = join.parse_token(join.create_token(m, ["worker"], ttl=0.01))
    bad_pin_tok = join.create_token(m, ["worker"])
    i, s, p = join.parse_token(bad_pin_tok)
    bad_pin = (i, s, "f" * 64)
    time.sleep(0.05)
    d = tmp_path
    out = _serve_join(sec, [
        lambda url: _try(lambda: join.request(url, wrong, "cl-j1", str(d / "wrong"))),
        lambda url: _try(lambda: join.request(url, (tid, secret, pin), "cl-j1",
                                              str(d / "first"))),
        lambda url: _try(lambda: join.request(url, (tid, secret, pin), "cl-j2",
                                              str(d / "second"))),
        lambda url: _try(lambda: join.request(url, expired, "cl-j3", str(d / "expired"))),
        lambda url: _try(lambda: join.request(url, bad_pin, "cl-j4", str(d / "pin"))),
        lambda url: _try(lambda: join.request(url, ("deadbeef", secret, pin), "cl-j5",
                                              str(d / "unknown"))),
    ])
    wrong_r, first, second, expired_r, pin_r, unknown = out
    assert isinstance(wrong_r, EmergenceError) and "secret" in str(wrong_r)
    assert isinstance(first, Material), first  # a wrong try did not burn the token
    assert isinstance(second, EmergenceError) and "already used" in str(second)
    assert isinstance(expired_r, EmergenceError) and "expired" in str(expired_r)
    assert isinstance(pin_r, EmergenceError) and "pin" in str(pin_r)
    assert isinstance(unknown, EmergenceError) and "unknown join token" in str(unknown)
    for name in ("wrong", "second", "expired", "pin", "unknown"):
        assert not (d / name / "node.key").exists(), name
    # the joined node is a worker of this cluster: key 0600, dir 0700, and etcd
    # takes its certificate and user for what a worker writes
    assert (d / "first").stat().st_mode & 0o777 == 0o700
    assert (d / "first" / "node.key").stat().st_mode & 0o777 == 0o600
    assert pki.identity(pki.load_cert(first.node_cert_pem())) == ("cl-j1", ["worker"])
    assert first.ca_cert() == m.ca_cert()
    w = sec.client(first)
    w.put({"name": "cl-j1"}, "members", "cl-j1")
    from emergence.place.state import Refused
    with pytest.raises(Refused):
        w.put({}, "tasks", "x")


def test_join_through_the_cli_reads_the_token_from_a_file_or_the_environment(sec, tmp_path):
    em = emergence_command() + ["cluster"]
    p = subprocess.run(em + ["token", "create", "--role", "worker", "--cluster-dir",
                             sec.material.dir], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    tok = tmp_path / "token"
    tok.write_text(p.stdout)
    tok.chmod(0o600)
    tok2 = join.create_token(sec.material, ["command"])
    base = ["--certs-only", "--role", "worker"]

    def run(url):
        a = subprocess.run(em + ["join", "--from", url, "--token-file", str(tok), "--name",
                                 "cl-cli", "--cluster-dir", str(tmp_path / "a")] + base,
                           capture_output=True, text=True, timeout=60)
        env = dict(os.environ, EMERGENCE_JOIN_TOKEN=tok2)
        b = subprocess.run(em + ["join", "--from", url, "--name", "cl-cli2", "--cluster-dir",
                                 str(tmp_path / "b")] + base,
                           capture_output=True, text=True, timeout=60, env=env)
        again = subprocess.run(em + ["join", "--from", url, "--token-file", str(tok),
                                     "--name", "cl-cli3", "--cluster-dir",
                                     str(tmp_path / "c")] + base,
                               capture_output=True, text=True, timeout=60)
        return a, b, again
    a, b, again = _serve_join(sec, [run])[0]
    assert a.returncode == 0 and "joined as cl-cli (worker)" in a.stderr, a.stderr
    assert b.returncode == 0 and "joined as cl-cli2 (command)" in b.stderr, b.stderr
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and \
        "already used" in again.stderr, again.stderr
    # the token is never in argv: the flags take a file, or the environment
    assert tok2 not in " ".join(em) and p.stdout.strip().count(".") == 2
    m = subprocess.run(em + ["members", "--cluster-dir", str(tmp_path / "b"), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert m.returncode == 0 and json.loads(m.stdout) == [], m.stderr


def test_insecure_is_explicit_and_warns(tmp_path):
    em = emergence_command()
    p = subprocess.run(em + ["tasks", "--etcd", "http://127.0.0.1:9"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1 and "pass --insecure" in p.stderr
    p = subprocess.run(em + ["tasks", "--etcd", "http://127.0.0.1:9", "--insecure"],
                       capture_output=True, text=True, timeout=60)
    assert p.stderr.startswith("warning: --insecure")


# -- the pure parts --------------------------------------------------------------------------------

def test_canonical_form_and_signature():
    ca_key, ca = pki.make_ca()
    k = pki.new_key()
    cert = pki.cert_pem(pki.issue(ca_key, ca, k.public_key(), "c1", ["command"])).decode()
    t = {"id": "a", "kind": "sleep", "seconds": 0.5, "demand": {"cpu": 1.0, "memory": 2.0},
         "labels": {"é": "ü"}}
    assert signing.canonical(t) == signing.canonical(dict(reversed(list(t.items()))))
    assert signing.canonical(t).startswith(b"emergence-task-v1\0{")
    assert b"\\u00e9" in signing.canonical(t)  # ASCII only
    s = signing.sign(t, k, cert)
    assert signing.canonical(s) == signing.canonical(t)  # the signature is not signed
    # through JSON (as through etcd) it still verifies
    assert signing.verify(json.loads(json.dumps(s)), ca) == "c1"
    for bad in (dict(s, seconds=0.6), dict(s, extra=1), {k2: v for k2, v in s.items()
                                                         if k2 != "labels"}):
        with pytest.raises(signing.Refused, match="does not verify"):
            signing.verify(bad, ca)
    with pytest.raises(signing.Refused, match="not signed"):
        signing.verify(t, ca)
    with pytest.raises(signing.Refused, match="not issued"):
        signing.verify(s, pki.make_ca()[1])
    wk = pki.new_key()
    wcert = pki.cert_pem(pki.issue(ca_key, ca, wk.public_key(), "w1", ["worker"])).decode()
    with pytest.raises(signing.Refused, match="not a command node"):
        signing.verify(signing.sign(t, wk, wcert), ca)
    with pytest.raises(signing.Refused, match="plain JSON"):
        signing.canonical({"x": float("nan")})


def _config(rootfs):
    from emergence.runtime.spec import default_config
    c = default_config(args=["true"], terminal=False)
    c["root"]["path"] = rootfs
    return c


@pytest.mark.parametrize("edit,allow,why", [
    (None, {}, None),
    (lambda c: c["mounts"].append({"destination": "/e", "type": "bind", "source": "/etc",
                                   "options": ["rbind"]}), {}, "bind mount of host path /etc"),
    (lambda c: c["mounts"].append({"destination": "/e", "source": "/etc/../etc",
                                   "options": ["bind"]}), {}, "host path /etc/../etc"),
    (lambda c: c["mounts"].append({"destination": "/d", "type": "bind", "source": "/srv/d",
                                   "options": ["rbind"]}), {"binds": ["/srv"]}, None),
    (lambda c: c["mounts"].append({"destination": "/d", "type": "bind",
                                   "source": "/srvx", "options": ["bind"]}),
     {"binds": ["/srv"]}, "host path /srvx"),
    (lambda c: c["mounts"].append({"destination": "/d", "type": "ext4",
                                   "source": "/dev/sda1"}), {}, "mount type 'ext4'"),
    (lambda c: c["linux"]["namespaces"].append({"type": "net", "path": "/proc/1/ns/net"}),
     {}, "joining the host namespace"),
    (lambda c: c["linux"].__setitem__("namespaces", [{"type": "mount"}]), {},
     "shares the host's pid, network, ipc, uts namespace"),
    (lambda c: c["linux"].__setitem__("namespaces", []), {"host_namespaces": True}, None),
    (lambda c: c["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN"), {},
     "capability CAP_SYS_ADMIN"),
    (lambda c: c["process"]["capabilities"]["effective"].append("CAP_NET_ADMIN"),
     {"capabilities": ["CAP_NET_ADMIN"]}, None),
    (lambda c: c["linux"].__setitem__("devices", [{"path": "/dev/sda", "type": "b",
                                                   "major": 8, "minor": 0}]), {},
     "device nodes"),
    (lambda c: c["linux"]["resources"]["devices"].append({"allow": True, "access": "rwm"}),
     {}, "device access"),
    (lambda c: c["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}), {}, None),
    (lambda c: c["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 1, "minor": 1, "access": "rwm"}), {},
     "device access c 1:1"),
    (lambda c: c["linux"]["resources"]["devices"].append({"allow": True, "access": "rwm"}),
     {"devices": True}, None),
    (lambda c: c.__setitem__("hooks", {"prestart": [{"path": "/bin/sh"}]}), {}, "hooks"),
    (lambda c: c["root"].__setitem__("path", "/"), {"bundles": ["/"]}, "host's root"),
    (lambda c: c["linux"].__setitem__("readonlyPaths", []), {},
     "/proc/sysrq-trigger must stay"),
])
def test_policy(tmp_path, edit, allow, why):
    c = _config(str(tmp_path / "rootfs"))
    if edit:
        edit(c)
    pol = dict({"bundles": [str(tmp_path)]}, **allow)
    got = policy.check_config(c, pol, str(tmp_path))
    if why is None:
        assert got is None
    else:
        assert got and why in got, got
    # by default nothing from the host: not even the bundle directory
    assert "not in an allowed bundle directory" in policy.check_config(_config(
        str(tmp_path / "rootfs")), {}, str(tmp_path))


def test_policy_runs_the_config_it_checked(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    c = _config("rootfs")
    c["mounts"].append({"destination": "/d", "type": "bind", "source": str(tmp_path / "link"),
                        "options": ["rbind"]})
    (b / "config.json").write_text(json.dumps(c))
    pol = {"bundles": [str(tmp_path)], "binds": [str(tmp_path / "data")]}
    config, why = policy.check_task({"kind": "bundle", "bundle": str(b)}, pol)
    assert why is None
    assert config["root"]["path"] == str(b / "rootfs")  # absolute: the copy runs elsewhere
    assert config["mounts"][-1]["source"] == str(tmp_path / "data")  # resolved now
    assert policy.check_task({"kind": "sleep"}, {}) == (None, None)
    assert "not an absolute path" in policy.check_task({"kind": "bundle",
                                                        "bundle": "rel"}, pol)[1]
