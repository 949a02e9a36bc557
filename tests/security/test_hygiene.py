"""The node's listener against slow and hostile clients (issue 28): a client
trickling its headers is cut at `header_timeout` while others are served; an
idle connection goes at `idle_timeout`; a body slower than `min_body_rate` is
cut; one client gets `uploads_per_client` uploads at once and a 429 beyond;
an unauthenticated 1 GiB PUT or PATCH is refused on its headers, the node
reading almost none of it.  Next to each, the legitimate use still works.

The share service is served alone (`python -m emergence.share.service`, the
listener the node uses, `emergence/listener.py`) with small limits, so each
test takes seconds; the last test checks the node takes the limits from its
flags.  Bounds on times are generous: what is tested is "cut" against
"never cut" (the old listener kept such connections for an hour)."""

import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import emergence_command

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node runs as root")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base, limits):
        self.port = free_port()
        self.state = str(base / "state")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emergence.share.service", "--listen",
             f"127.0.0.1:{self.port}", "--state", self.state,
             "--config", json.dumps({"store": str(base / "store")}),
             "--limits", json.dumps(limits)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stdout.read().decode())
                time.sleep(0.05)
        raise AssertionError("the server did not start")

    @property
    def token(self):
        with open(os.path.join(self.state, "node.token")) as f:
            return f.read().strip()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


LIMITS = {"header_timeout": 2, "idle_timeout": 3, "min_body_rate": 4096,
          "body_rate_window": 2, "uploads_per_client": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hyg"), LIMITS)
    yield s
    s.stop()


def _closed(sock, wait):
    """True if the peer closed SOCK (EOF or reset) within WAIT seconds."""
    r, _, _ = select.select([sock], [], [], wait)
    if not r:
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


def _served(server):
    t = time.monotonic()
    r = requests.get(server.url + "/share/v1/info", timeout=5)
    assert r.status_code == 200 and "public_key" in r.json()
    return time.monotonic() - t


def test_a_client_sending_a_header_byte_a_second_is_cut_while_others_are_served(server):
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    request = b"GET /share/v1/info HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    start, cut_at, served = time.monotonic(), None, 0
    try:
        for byte in request:
            try:
                slow.sendall(bytes([byte]))
            except OSError:  # already cut
                cut_at = time.monotonic() - start
                break
            if _closed(slow, 0.0):
                cut_at = time.monotonic() - start
                break
            end = time.monotonic() + 1.0  # one byte a second; others served meanwhile
            while time.monotonic() < end:
                _served(server)
                served += 1
                time.sleep(0.1)
            if time.monotonic() - start > 15:
                break
    finally:
        slow.close()
    assert cut_at is not None, "a client trickling its headers was never cut off"
    assert 1.5 <= cut_at <= 12, cut_at  # at header_timeout (2 s), give or take the load
    assert served >= 5


def test_an_idle_connection_goes_at_the_idle_timeout_and_keep_alive_works(server):
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        assert _closed(idle, 15), "a connection that sent nothing stayed open"
    finally:
        idle.close()
    with requests.Session() as s:  # keep-alive: requests inside the limit reuse it
        for _ in range(3):
            assert s.get(server.url + "/share/v1/info", timeout=5).status_code == 200
            time.sleep(0.5)


def _upload_headers(server, size, token=None, digest="sha256:" + "0" * 64, extra=""):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v2/hyg/blob/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Length: {size}\r\n{auth}"
            f"Content-Type: application/octet-stream\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "POST"])
def test_an_unauthenticated_1gib_write_is_refused_at_once_reading_almost_none(server,
                                                                            method):
    """The client's send buffer is kept small (16 KiB), so what it manages to
    send before the node hangs up is what the node took in (its own reads
    and its kernel's receive window): under 1 MiB, in under 1 s."""
    path = {"PUT": "/v2/hyg/x/manifests/t", "PATCH": "/v2/hyg/x/blobs/uploads/abc",
            "POST": "/v2/hyg/x/blobs/uploads/"}[method]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    s.connect(("127.0.0.1", server.port))
    s.settimeout(10)
    t = time.monotonic()
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n\r\n"
              .encode())
    sent, chunk = 0, b"\0" * 65536
    try:
        with pytest.raises(OSError):  # reset or broken pipe: the node hung up
            while sent < (1 << 30):
                sent += s.send(chunk)
        took = time.monotonic() - t
        answer = s.recv(65536)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'"UNAUTHORIZED"' in answer
    assert sent < (1 << 20), f"the node took {sent} bytes of a refused 1 GiB {method}"
    assert took < 1.0, took
    _served(server)


def test_expect_100_continue_gets_the_refusal_not_the_go_ahead(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        s.sendall(_upload_headers(server, 1 << 30, extra="Expect: 100-continue\r\n"))
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert _closed(s, 5)
    finally:
        s.close()


def test_an_authenticated_upload_works_and_a_slow_body_is_cut(server):
    blob = os.urandom(8 << 20)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    r = requests.post(f"{server.url}/v2/hyg/ok/blobs/uploads/?digest={digest}", data=blob,
                      headers={"Authorization": f"Bearer {server.token}",
                               "Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 201, r.text
    got = requests.get(f"{server.url}/v2/hyg/ok/blobs/{digest}", timeout=60)
    assert got.status_code == 200 and got.content == blob
    # the same upload sent at 100 bytes a second: cut (min_body_rate 4096 over 2 s)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    start, cut_at = time.monotonic(), None
    try:
        s.sendall(_upload_headers(server, len(blob), server.token, digest))
        while time.monotonic() - start < 20:
            try:
                s.sendall(b"\0" * 100)
            except OSError:
                cut_at = time.monotonic() - start
                break
            if _closed(s, 1.0):
                cut_at = time.monotonic() - start
                break
    finally:
        s.close()
    assert cut_at is not None, "a body trickled at 100 bytes/s was never cut"
    assert cut_at >= 1.5, cut_at


def test_uploads_per_client_are_capped_and_the_cap_frees(server):
    held = []
    try:
        for _ in range(LIMITS["uploads_per_client"]):  # in flight, fed fast enough
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(_upload_headers(server, 1 << 30, server.token) + b"\0" * 65536)
            held.append(s)
        stop = threading.Event()

        def feed():
            while not stop.is_set():
                for s in held:
                    try:
                        s.sendall(b"\0" * 65536)
                    except OSError:
                        pass
                time.sleep(0.05)
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(0.5)
        r = requests.post(f"{server.url}/v2/hyg/more/blobs/uploads/?digest=sha256:" + "1" * 64,
                          data=b"x" * 100, headers={"Authorization": f"Bearer {server.token}"},
                          timeout=10)
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert r.headers.get("Retry-After") == "1"
        # reads are not uploads: still served
        _served(server)
        stop.set()
        feeder.join()
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)  # the node sees the closes; the slots free
    blob = b"freed"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    for _ in range(50):
        r = requests.post(f"{server.url}/v2/hyg/more/blobs/uploads/?digest={digest}", data=blob,
                          headers={"Authorization": f"Bearer {server.token}"}, timeout=10)
        if r.status_code != 429:
            break
        time.sleep(0.2)
    assert r.status_code == 201, r.text


def test_limits_are_checked_and_the_node_takes_them_from_its_flags(tmp_path):
    from emergence.errors import EmergenceError
    from emergence.listener import limits_of
    with pytest.raises(EmergenceError, match=r"\[node\] header_timeout must be a positive"):
        limits_of({"header_timeout": 0})
    assert limits_of({})["uploads_per_client"] == 16
    port = free_port()
    flags = ["--node-run-dir", str(tmp_path / "run"), "--node-state-dir", str(tmp_path / "st"),
             "--node-listen", f"127.0.0.1:{port}", "--node-services", "share",
             "--node-planner", "false", "--share-store", str(tmp_path / "store"),
             "--node-header-timeout", "1.5", "--node-idle-timeout", "30"]
    p = subprocess.run(emergence_command() + ["node", "start", *flags], capture_output=True,
                       text=True, timeout=90)
    assert p.returncode == 0, p.stderr + p.stdout
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(b"GET /share/v1/info HTTP/1.1\r\n")
            assert _closed(s, 15), "the node's header_timeout flag was not applied"
        finally:
            s.close()
        assert requests.get(f"http://127.0.0.1:{port}/share/v1/info",
                            timeout=10).status_code == 200
    finally:
        subprocess.run(emergence_command() + ["node", "stop", "--node-run-dir",
                                              str(tmp_path / "run")],
                       capture_output=True, timeout=60)
