"""With no node up, `emergence-cni` hands its calls to the default root's
planner started on demand (/run/emergence/.planner/BUILD/planner.sock).  A
socket there that another user serves -- planted into root's directory, the
file theirs, or chowned to root but still their process behind it -- is
refused before anything is sent: the ADD runs cold with the right answer and
the planted server never sees a HELLO or a descriptor.  The legitimate use, a
planner the plugin started, is tests/relay/test_cni_on_demand.py's."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid

import pytest
from conftest import marked_front_end
from relay.test_cni_on_demand import _listening, _planners, _until

from .test_planner import _got_hello, _serve_planted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces")


@pytest.fixture
def namespaces():
    made = []

    def new(role):
        name = f"rl-{role}-{uuid.uuid4().hex[:5]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name
    yield new
    for name in made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.parametrize("how", ["file-owned-by-user", "served-by-user"])
def test_a_planted_socket_where_the_cni_plugin_looks_is_refused(tmp_path, other_user, namespaces,
                                                                 how):
    if os.path.exists("/run/emergence/node/planner.sock"):
        pytest.skip("a node's planner is up on this host: the default path uses it")
    from emergence.node import BUILD_ID
    d = os.path.join("/run/emergence/.planner", BUILD_ID)
    sock = os.path.join(d, "planner.sock")
    for pid in _planners(sock):  # this build's own, if a test left one
        os.kill(pid, signal.SIGKILL)
    assert _until(lambda: not _planners(sock))
    os.makedirs(d, 0o700, exist_ok=True)
    exe, marks = marked_front_end(tmp_path, "emergence-cni")
    # the user's socket, bound where the user may write on the same file
    # system, then moved into root's directory
    udir = tempfile.mkdtemp(prefix="rl-cni-", dir="/run")
    os.chown(udir, other_user.uid, other_user.gid)
    os.chmod(udir, 0o755)
    server, report = _serve_planted(other_user, os.path.join(udir, "s"))
    try:
        os.replace(os.path.join(udir, "s"), sock)
        if how == "served-by-user":
            os.chown(sock, 0, 0)
            os.chmod(sock, 0o600)
        host, ctr = namespaces("h"), namespaces("c")
        conf = {"cniVersion": "1.1.0", "name": "rlpl", "type": "emergence-cni",
                "bridge": "rlpl0", "subnets": ["10.87.0.0/24"], "veth_prefix": "rl",
                "stateDir": str(tmp_path / "state")}
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pl",
               "CNI_NETNS": f"/var/run/netns/{ctr}", "CNI_IFNAME": "eth0",
               "CNI_PATH": os.path.dirname(exe)}
        p = subprocess.run(["ip", "netns", "exec", host, exe], input=json.dumps(conf),
                           capture_output=True, text=True, env=env, timeout=60)
        got = report()
    finally:
        server.kill()
        if os.path.exists(sock) and not _listening(sock):  # the planted one, now dead
            os.unlink(sock)
        shutil.rmtree(udir, ignore_errors=True)
    assert _got_hello(got) == [], f"the planted planner got the call: {got}"
    # a socket file of theirs is not even connected to; one of root's is, for
    # its peer's credentials, and closed with nothing sent
    if how == "file-owned-by-user":
        assert got == []
    else:
        assert got and all(conn == [{"record": "", "fds": 0}] for conn in got), got
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["ips"][0]["address"] == "10.87.0.2/24"
    assert len(marks.read_text().splitlines()) == 1  # cold
    why = (f"the planner socket {sock} is owned by uid {other_user.uid}, not root"
           if how == "file-owned-by-user" else
           f"the planner at {sock} is served by uid {other_user.uid}, not root")
    assert p.stderr == f"emergence: {why}; running without the node\n"
