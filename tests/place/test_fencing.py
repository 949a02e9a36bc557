"""Fencing: a worker cut off from etcd stops its task's container itself
before its lease expires, and the leader sends the task elsewhere only after
the expiry plus a margin, so two attempts of one task never run at once.

The worker runs in its own network namespace (the test sets its link down);
the task appends a line tagged with a random token to a file on a shared
bind mount every 0.1 s.  The file must show the first attempt's lines, then
the second's, never interleaved; one result is recorded.  The workers are
joined with the global --root (and --store), which their containers use."""

import json
import os
import subprocess
import tempfile

import pytest

from emergence.place import tasks
from emergence.place.state import Cluster

from .conftest import SecureEtcd, ip, join_node, nodes_up, stop_all, wait_for

TTL = 2



@pytest.mark.slow
def test_a_cut_off_worker_stops_its_container_before_the_task_moves(netns, rt, tmp_path):
    ns, host_if, host_ip = netns
    shared = tmp_path / "shared"
    shared.mkdir()
    log_file = shared / "log"

    def mount_shared(c):
        c["mounts"].append({"destination": "/shared", "type": "bind", "source": str(shared),
                            "options": ["rbind", "rw"]})
    bundle = rt.bundle(("sh", "-c", "t=$(cat /proc/sys/kernel/random/uuid); i=0; "
                        "while [ $i -lt 60 ]; do echo \"$t $i\" >> /shared/log; "
                        "i=$((i+1)); sleep 0.1; done"), edit=mount_shared)
    sec = SecureEtcd(tempfile.mkdtemp(prefix="pl-etcd-"), "/pl-fence/", also_listen=[host_ip])
    cluster = Cluster(sec.url, prefix="/pl-fence/", material=sec.material)
    port = sec.url.rsplit(":", 1)[1]
    roots = {"pl-fn": tmp_path / "ns-root", "pl-fh": tmp_path / "host-root"}
    store = tmp_path / "store"
    policy = ["--allow-bundle", str(rt.tmp), "--allow-bundle", rt.rootfs,
              "--allow-bind", str(shared), "--cpu", "2"]
    procs, logs = {}, {}

    def join(name, role, url, extra=(), before=()):
        g = ["--root", str(roots[name]), "--store", str(store)] if name in roots else []
        procs[name], logs[name] = join_node(sec, tmp_path, name, role, url, TTL, extra,
                                            before, g)
    text = lambda: "".join(open(p).read() for p in logs.values())  # noqa: E731
    try:
        join("pl-fc", "command", sec.url)
        join("pl-fn", "worker", f"https://{host_ip}:{port}", policy, ("ip", "netns", "exec", ns))
        assert wait_for(lambda: nodes_up(cluster) == 2, 30), text()
        tasks.submit(cluster, {"kind": "bundle", "bundle": bundle, "id": "pl-f1",
                               "timeout": 120})
        # attempt 1 runs behind the namespace's link, under the worker's --root
        assert wait_for(lambda: log_file.exists() and log_file.read_text().count("\n") >= 3,
                     60), text()
        assert os.path.isdir(roots["pl-fn"] / "pl-pl-f1-1"), os.listdir(roots["pl-fn"])
        join("pl-fh", "worker", sec.url, policy)
        assert wait_for(lambda: nodes_up(cluster) == 3, 30), text()
        ip("link", "set", host_if, "down")
        assert wait_for(lambda: cluster.get("results", "pl-f1") is not None, 60), text()
        ip("link", "set", host_if, "up")
        log = text()
        result = cluster.get("results", "pl-f1")
        assert result["host"] == "pl-fh" and result["exit"] == 0, (result, log)
        assert "fence: pl-f1 attempt 1 on pl-fn stopped" in log, log
        assert "re-dispatch pl-f1 attempt 2: pl-fn -> pl-fh" in log, log
        lines = [ln.split() for ln in log_file.read_text().splitlines()]
        tokens = [t for t, _ in lines]
        first, second = tokens[0], tokens[-1]
        assert first != second and set(tokens) == {first, second}, lines
        # never interleaved: every line of attempt 1 before any of attempt 2
        cut = tokens.index(second)
        assert tokens[:cut] == [first] * cut and tokens[cut:] == [second] * (len(tokens) - cut)
        # attempt 1 was stopped (it would have written 60 lines), attempt 2 ran whole
        assert cut < 60 and len(tokens) - cut == 60, (cut, len(tokens))
        # the cut-off worker's container is gone, and the host worker used its --root
        assert wait_for(lambda: not os.path.exists(roots["pl-fn"] / "pl-pl-f1-1"), 20)
        assert os.path.isdir(roots["pl-fh"])
        assert json.loads(json.dumps(cluster.items("results"))).keys() == {"pl-f1"}
    finally:
        stop_all(procs.values())
        sec.stop()
        for root in roots.values():  # a failed run leaves nothing behind either
            for cid in os.listdir(root) if root.is_dir() else ():
                subprocess.run(rt.cmd + ["--root", str(root), "delete", "--force", cid],
                               capture_output=True)
