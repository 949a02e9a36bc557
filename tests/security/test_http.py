"""The node's HTTP listener, attacked from an unauthenticated client on
loopback: every route has an access class; write and control routes refuse a
missing or wrong credential (401, one JSON line, before the body is read) and
take the node token or a client certificate of the configured CA; reads can be
limited to networks; announcements need a trusted node's signature; nothing
secret is in any process's argv.  Each refusal sits next to the legitimate use
that still works.  A real node (`emergence node start`), real HTTP."""

import base64
import datetime
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import time

import pytest
import requests
from conftest import emergence_command

from emergence import access

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node runs as root")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningNode:
    def __init__(self, base, flags, scheme="http"):
        self.run_dir, self.state_dir = str(base / "run"), str(base / "state")
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.flags = ["--node-run-dir", self.run_dir, "--node-state-dir", self.state_dir,
                      "--node-listen", f"127.0.0.1:{self.port}", *flags]
        p = subprocess.run(emergence_command() + ["node", "start", *self.flags],
                           capture_output=True, text=True, timeout=90)
        assert p.returncode == 0, p.stderr + p.stdout

    @property
    def token(self):
        with open(os.path.join(self.state_dir, "node.token")) as f:
            return f.read().strip()

    @property
    def pid(self):
        with open(os.path.join(self.run_dir, "node.pid")) as f:
            return int(f.read())

    def stop(self):
        subprocess.run(emergence_command() + ["node", "stop", "--node-run-dir", self.run_dir],
                       capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node with share, overwatch and place (its own TLS etcd), plain HTTP."""
    base = tmp_path_factory.mktemp("sec-http")
    (base / "no-containers").mkdir()
    n = RunningNode(base, [
        "--node-services", "share,overwatch,place",
        "--share-store", str(base / "store"),
        "--overwatch-root", str(base / "no-containers"),
        "--place-cluster-init", "true", "--place-etcd", f"https://127.0.0.1:{free_port()}"])
    yield n
    n.stop()


def one_json_line(r):
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    assert r.text.count("\n") <= 1 and r.text.strip(), r.text
    return r.json()


# the routes tried for each class: (method, path, body that the handler answers)
WRITE = [("PUT", "/v2/sec/x/manifests/t", b"{}"),
         ("POST", "/v2/sec/x/blobs/uploads/", b""),
         ("DELETE", "/v2/sec/x/blobs/uploads/nosuch", b"")]
CONTROL = [("POST", "/place/api/iaEnergyScalar", b'{"energy_cost_scalar": 2}'),
           ("POST", "/place/api/scheduler", b'{"model_name": "RandomScheduler"}'),
           ("POST", "/place/api/schedule", b'{"ID": "none", "HOST_IDS": ["h"]}'),
           ("POST", "/overwatch/v1/probe", b'{}')]
READ = [("GET", "/share/v1/info", None), ("GET", "/metrics", None),
        ("GET", "/place/api/status", None), ("GET", "/v2/_catalog", None),
        ("HEAD", "/nix-cache/nix-cache-info", None)]


def test_every_route_of_every_service_is_classed(tmp_path):
    from aiohttp import web

    from emergence.errors import EmergenceError
    from emergence.node.config import service_classes
    seen = 0
    for part, cls in service_classes().items():
        cfg = {"share": {"store": str(tmp_path / "store")},
               "overwatch": {"root": str(tmp_path)}}.get(part, {})
        os.makedirs(tmp_path / part, exist_ok=True)
        svc = cls(cfg, str(tmp_path / part), lambda m: None)
        for r in svc.routes():
            assert access.class_of(r) in access.CLASSES, f"{part}: {r.method} {r.path}"
            seen += 1
    assert seen >= 30
    # a route without a class stops the listener from starting
    with pytest.raises(EmergenceError, match="without an access class.*GET /x"):
        access.application([web.get("/x", lambda r: None)], access.Policy("t" * 20))


def test_the_token_is_a_root_only_file(node):
    path = os.path.join(node.state_dir, "node.token")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert len(node.token) >= 32


@pytest.mark.parametrize("method,path,body", WRITE + CONTROL)
def test_write_and_control_need_the_token(node, method, path, body):
    url = node.url + path
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                    {"Authorization": "Basic " + base64.b64encode(b"any:wrong").decode()},
                    {"Authorization": "Bearer " + node.token[:-1]},
                    {"Authorization": "Bearer "}, {"Authorization": "Basic !!"}):
        r = requests.request(method, url, data=body, headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        err = one_json_line(r)
        assert "node token" in err["error"] and err["errors"][0]["code"] == "UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    # the legitimate use: Bearer, and Basic with any user name (skopeo's --creds)
    for auth in ({"headers": {"Authorization": f"Bearer {node.token}"}},
                 {"auth": ("any", node.token)}):
        r = requests.request(method, url, data=body, timeout=60, **auth)
        assert r.status_code not in (401, 403), (r.status_code, r.text)


@pytest.mark.parametrize("method,path,body", READ)
def test_reads_are_open_by_default(node, method, path, body):
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b":").decode()},
                    {"Authorization": f"Bearer {node.token}"}):
        r = requests.request(method, node.url + path, headers=headers, timeout=30)
        assert r.status_code == 200, (headers, r.text)


def test_place_settings_need_the_token_and_work_with_it(node):
    url = node.url + "/place/api/iaEnergyScalar"
    assert requests.post(url, json={"energy_cost_scalar": 7}, timeout=30).status_code == 401
    r = requests.post(url, json={"energy_cost_scalar": 7}, timeout=30,
                      headers={"Authorization": f"Bearer {node.token}"})
    assert r.status_code == 200 and r.json() == {"energy_cost_scalar": 7}


def _upload_headers(node, extra=""):
    digest = "sha256:" + "0" * 64
    return (f"POST /v2/sec/big/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{node.port}\r\nContent-Length: {2 << 30}\r\n"
            f"Content-Type: application/octet-stream\r\n{extra}\r\n").encode()


def test_an_unauthenticated_2gib_upload_is_refused_without_being_read(node):
    """Headers of a 2 GiB upload and 64 KiB of it: the 401 comes back, and the
    node closes the connection after reading at most a little more (its 1 MiB
    drain): a client that keeps sending is cut off long before 2 GiB."""
    s = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    try:
        s.sendall(_upload_headers(node) + b"\0" * 65536)
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Connection: close" in head and b'"UNAUTHORIZED"' in body
        sent, chunk = 65536, b"\0" * (1 << 20)
        with pytest.raises(OSError):  # reset or broken pipe: the node hung up
            while sent < (2 << 30):
                s.sendall(chunk)
                sent += len(chunk)
        assert sent < (64 << 20), f"the node read {sent} bytes of a refused upload"
    finally:
        s.close()
    blobs = os.path.join(node.state_dir, "..", "store")
    assert not any(f.endswith(".tmp") for _, _, fs in os.walk(blobs) for f in fs)


def test_expect_100_continue_is_refused_before_the_body(node):
    """A client that asks first (Expect: 100-continue) gets the 401 instead of
    the go-ahead: it never sends a byte of the body."""
    s = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    try:
        s.sendall(_upload_headers(node, "Expect: 100-continue\r\n"))
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    finally:
        s.close()
    s = socket.create_connection(("127.0.0.1", node.port), timeout=30)
    try:  # with the token: the go-ahead
        s.sendall(_upload_headers(node, f"Expect: 100-continue\r\nAuthorization: Bearer "
                                        f"{node.token}\r\n"))
        assert s.recv(65536).startswith(b"HTTP/1.1 100 Continue")
    finally:
        s.close()


def test_announcements_need_a_signature_by_a_trusted_key_or_the_token(tmp_path_factory):
    from emergence.share.auth import sign_announce
    from emergence.share.signing import SecretKey
    trusted, stranger = SecretKey.generate("peer-1"), SecretKey.generate("peer-1")
    base = tmp_path_factory.mktemp("sec-ann")
    n = RunningNode(base, ["--node-services", "share", "--node-planner", "false",
                           "--share-store", str(base / "store"),
                           "--share-trusted-keys", trusted.public()])
    try:
        url, peer = n.url + "/share/v1/announce", "http://192.0.2.7:7480"

        def holders(key):
            return requests.get(n.url + "/share/v1/who-has", params={"key": key},
                                timeout=30).json()["nodes"]
        r = requests.post(url, json={"node": peer, "keys": ["a:1"]}, timeout=30)
        assert r.status_code == 401 and "signature" in one_json_line(r)["error"]
        r = requests.post(url, json=sign_announce(stranger, peer, ["b:1"]), timeout=30)
        assert r.status_code == 403 and "trusted_keys" in one_json_line(r)["error"]
        old = sign_announce(trusted, peer, ["c:1"], when=int(time.time()) - 3600)
        assert requests.post(url, json=old, timeout=30).status_code == 403  # a replay
        forged = {**sign_announce(trusted, peer, ["d:1"]), "keys": ["e:1"]}
        assert requests.post(url, json=forged, timeout=30).status_code == 403
        r = requests.post(url, data=b"{" + b" " * (2 << 20), timeout=30,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 413  # capped before it is read
        assert holders("a:1") == holders("b:1") == holders("c:1") == holders("e:1") == []
        # the legitimate uses: a trusted node's signature, or the node token
        r = requests.post(url, json=sign_announce(trusted, peer, ["f:1"]), timeout=30)
        assert r.status_code == 200 and holders("f:1") == [peer]
        r = requests.post(url, json={"node": peer, "keys": ["g:1"]}, timeout=30,
                          headers={"Authorization": f"Bearer {n.token}"})
        assert r.status_code == 200 and holders("g:1") == [peer]
    finally:
        n.stop()


def test_a_malformed_manifest_push_is_400_manifest_invalid(node):
    auth = {"Authorization": f"Bearer {node.token}", "Content-Type": OCI_MANIFEST}
    for body in (b"[]", b'"x"', b'{"layers": 5}', b'{"layers": [1]}', b'{"config": "x"}',
                 b'{"manifests": [{"digest": 7}]}', b'{"mediaType": [1]}', b"[" * 100000,
                 b"{not json"):
        r = requests.put(node.url + "/v2/sec/m/manifests/t", data=body, headers=auth,
                         timeout=30)
        assert r.status_code == 400, (body[:40], r.status_code, r.text[:300])
        assert one_json_line(r)["errors"][0]["code"] == "MANIFEST_INVALID", body[:40]


def test_errors_never_echo_a_huge_value_whole(node):
    auth = {"Authorization": f"Bearer {node.token}"}
    r = requests.put(node.url + "/v2/sec/m/manifests/t", data=b"{}", timeout=30,
                     headers={**auth, "Content-Type": "x/" + "y" * 6000})
    assert r.status_code == 400 and len(r.text) < 1500, len(r.text)
    r = requests.post(node.url + "/place/api/schedule", timeout=30, headers=auth,
                      json={"ID": "z" * 100000, "HOST_IDS": ["h"]})
    assert r.status_code == 400 and len(r.text) < 1500, len(r.text)


def _valid_store_path():
    if shutil.which("nix-store") is None:
        return None
    for name in sorted(os.listdir("/nix/store")):
        path = "/nix/store/" + name
        if name.endswith((".drv", ".lock")) or os.path.islink(path):
            continue
        p = subprocess.run(["nix-store", "--query", "--hash", path], capture_output=True,
                           text=True)
        if p.returncode == 0:
            return path
    return None


def test_a_bad_range_on_a_nar_is_416_not_500(node):
    path = _valid_store_path()
    if path is None:
        pytest.skip("needs a valid file in /nix/store")
    hashpart = os.path.basename(path)[:32]
    info = requests.get(f"{node.url}/nix-cache/{hashpart}.narinfo", timeout=60)
    assert info.status_code == 200, info.text
    nar = node.url + "/nix-cache/" + next(
        line[5:] for line in info.text.splitlines() if line.startswith("URL: "))
    for bad in ("bytes=abc", "bytes=5-2", "bytes=-", "bytes=99999999999-"):
        r = requests.get(nar, headers={"Range": bad}, timeout=60)
        assert r.status_code == 416, (bad, r.status_code)
    assert requests.get(nar, headers={"Range": "items=0-1"}, timeout=60).status_code == 200
    # several ranges: the whole NAR (RFC 9110 lets a server ignore Range)
    assert requests.get(nar, headers={"Range": "bytes=0-1,4-5"}, timeout=60).status_code == 200
    r = requests.get(nar, headers={"Range": "bytes=0-9"}, timeout=60)
    assert r.status_code == 206 and len(r.content) == 10


# -- TLS, client certificates, reader networks ---------------------------------------
def _certs(d):
    """Two CAs; a server certificate for 127.0.0.1 by the first; a client
    certificate by each."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(stem, cert, key):
        (d / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        os.chmod(d / f"{stem}.key", 0o600)

    def make(cn, issuer=None, ca=False, server=False):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn))
             .issuer_name(name(issuer[0]) if issuer else name(cn))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                              False, False), critical=True)
        elif server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                critical=False)
        cert = b.sign(issuer[1] if issuer else key, hashes.SHA256())
        return cert, key

    ca, ca_key = make("sec-ca", ca=True)
    other, other_key = make("sec-other-ca", ca=True)
    save("ca", ca, ca_key)
    save("server", *make("127.0.0.1", ("sec-ca", ca_key), server=True))
    save("client", *make("sec-client", ("sec-ca", ca_key)))
    save("stranger", *make("sec-client", ("sec-other-ca", other_key)))
    return d


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    base = tmp_path_factory.mktemp("sec-tls")
    certs = _certs(base)
    n = RunningNode(base, [
        "--node-services", "share,overwatch", "--node-planner", "false",
        "--share-store", str(base / "store"), "--overwatch-root", str(base),
        "--node-tls-cert", str(certs / "server.pem"), "--node-tls-key", str(certs / "server.key"),
        "--node-client-ca", str(certs / "ca.pem"), "--node-readers", "192.0.2.0/24"],
        scheme="https")
    n.certs = certs
    yield n
    n.stop()


def test_tls_client_certificates(tls_node):
    n, c = tls_node, tls_node.certs
    ca = str(c / "ca.pem")
    mine = (str(c / "client.pem"), str(c / "client.key"))
    theirs = (str(c / "stranger.pem"), str(c / "stranger.key"))
    url = n.url + "/v2/sec/x/blobs/uploads/"
    control = n.url + "/overwatch/v1/probe"
    # no credential, a wrong token: 401
    assert requests.post(url, verify=ca, timeout=30).status_code == 401
    assert requests.post(control, json={}, verify=ca, timeout=30,
                         headers={"Authorization": "Bearer nope"}).status_code == 401
    # a certificate of another CA: the handshake itself fails
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one, or a reset
        requests.post(url, verify=ca, cert=theirs, timeout=30)
    # the legitimate uses: our CA's certificate, or the token, over TLS
    r = requests.post(url, verify=ca, cert=mine, timeout=30)
    assert r.status_code == 202, r.text
    r = requests.post(control, json={}, verify=ca, cert=mine, timeout=30)
    assert r.status_code not in (401, 403), r.text
    r = requests.post(url, verify=ca, timeout=30,
                      headers={"Authorization": f"Bearer {n.token}"})
    assert r.status_code == 202
    # plain HTTP to the TLS listener gets nothing
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(n.url.replace("https", "http") + "/metrics", timeout=30)


def test_reads_limited_to_networks_and_checked_first(tls_node):
    """[node] readers: loopback is outside 192.0.2.0/24, so an anonymous read is
    403 (one JSON line), before any handler, even a bad Range on a NAR; a
    credential reads from anywhere."""
    n, c = tls_node, tls_node.certs
    ca = str(c / "ca.pem")
    for path in ("/metrics", "/share/v1/info", "/v2/_catalog",
                 "/nix-cache/nar/" + "a" * 32 + "-" + "b" * 52 + ".nar"):
        r = requests.get(n.url + path, verify=ca, headers={"Range": "bytes=abc"}, timeout=30)
        assert r.status_code == 403, (path, r.status_code)
        assert one_json_line(r)["errors"][0]["code"] == "DENIED"
    mine = (str(c / "client.pem"), str(c / "client.key"))
    assert requests.get(n.url + "/metrics", verify=ca, cert=mine, timeout=30).status_code == 200
    assert requests.get(n.url + "/metrics", verify=ca, timeout=30,
                        headers={"Authorization": f"Bearer {n.token}"}).status_code == 200


def test_a_missing_tls_file_is_one_line(tmp_path):
    p = subprocess.run(emergence_command() + [
        "node", "start", "--node-run-dir", str(tmp_path / "run"),
        "--node-state-dir", str(tmp_path / "state"), "--node-services", "overwatch",
        "--node-planner", "false", "--overwatch-root", str(tmp_path),
        "--node-listen", f"127.0.0.1:{free_port()}",
        "--node-tls-cert", str(tmp_path / "nope.pem"),
        "--node-tls-key", str(tmp_path / "nope.key")],
        capture_output=True, text=True, timeout=90)
    assert p.returncode != 0 and "tls_cert" in p.stderr and "no such file" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


# -- skopeo, argv ----------------------------------------------------------------------
def _oci_layout(d):
    """A one-layer OCI image layout at D (tag 'v1'), made here."""
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        t.addfile(info, io.BytesIO(b"hello\n"))
    layer = put(buf.getvalue())
    config = put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [layer["digest"]]}, "config": {}}).encode())
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}]}).encode())
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))


def test_skopeo_pushes_with_the_node_token_and_not_without(node, tmp_path):
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo")
    _oci_layout(tmp_path / "img")
    host = f"127.0.0.1:{node.port}"

    def push(creds, tag):
        return subprocess.run(
            ["skopeo", "copy", "--dest-tls-verify=false", *creds,
             f"oci:{tmp_path / 'img'}:v1", f"docker://{host}/sec/pushed:{tag}"],
            capture_output=True, text=True, timeout=120)
    assert push([], "a").returncode != 0
    assert push(["--dest-creds", "any:wrong"], "b").returncode != 0
    p = push(["--dest-creds", f"any:{node.token}"], "c")
    assert p.returncode == 0, p.stderr
    tags = requests.get(f"{node.url}/v2/sec/pushed/tags/list", timeout=30).json()["tags"]
    assert tags == ["c"]


def _descendants(pid):
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def test_no_secret_in_any_argv(node):
    """The node token, the share signing key and the node's configuration are
    in no /proc/PID/cmdline of the node or its children (etcd, the planner)."""
    with open(os.path.join(node.state_dir, "share", "cache-key.sec")) as f:
        key = f.read().strip()
    secrets = [node.token.encode(), key.encode(), key.partition(":")[2].encode()]
    pids = _descendants(node.pid)
    assert len(pids) >= 2  # the node and at least its etcd
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        for s in secrets:
            assert s not in cmdline, (pid, cmdline[:200])
    with open(f"/proc/{node.pid}/cmdline", "rb") as f:
        cmdline = f.read()
    assert b"{" not in cmdline and b"/state" not in cmdline, cmdline  # its config: stdin
    # the flag that took a secret is gone, and says what replaced it
    p = subprocess.run(emergence_command() + ["node", "status", "--place-token", "x",
                                              "--node-run-dir", node.run_dir],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and p.stderr.count("\n") == 1 and "node token" in p.stderr, \
        p.stderr


def test_share_push_token_is_migrated_to_the_node_token(tmp_path):
    legacy = tmp_path / "share" / "push.token"
    legacy.parent.mkdir()
    legacy.write_text("an-old-push-token-of-32-characters\n")
    os.chmod(legacy, 0o600)
    token = access.load_or_make_token(str(tmp_path), str(legacy))
    assert token == "an-old-push-token-of-32-characters"
    assert (tmp_path / "node.token").read_text().strip() == token
    assert os.path.islink(legacy) and legacy.read_text().strip() == token
    assert stat.S_IMODE(os.stat(tmp_path / "node.token").st_mode) == 0o600
    os.chmod(tmp_path / "node.token", 0o644)  # a token others can read is refused
    from emergence.errors import EmergenceError
    with pytest.raises(EmergenceError, match="mode 0600"):
        access.load_or_make_token(str(tmp_path))


def test_an_unprivileged_user_cannot_read_the_token(node, other_user):
    p = other_user.run(["cat", os.path.join(node.state_dir, "node.token")])
    assert p.returncode != 0 and node.token not in p.stdout

