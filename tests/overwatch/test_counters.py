"""Node-level counters that outlive processes (emergence.counters): many
writers at once lose nothing, a record cut short costs only itself, the
reader's snapshot survives a new reader and frees the folded log; a real
`emergence pull` from a node and a real `emergence net apply` count, and the
node's /metrics shows them."""

import multiprocessing
import os
import subprocess
import sys
import uuid

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from emergence import counters
from emergence.overwatch.node_metrics import NodeCollector

# the verbs run as their own processes, from this checkout: the launcher next
# to the venv's python takes a system-wide emergence first where one is installed
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-m", "emergence"]


def cli(*args, where, prefix=()):
    p = subprocess.run(list(prefix) + CLI + list(args), capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=REPO, EMERGENCE_COUNTERS=where))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return p.stdout


sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "share"))
from sharelib import nodes, random_image  # noqa: E402, F401


def _writer(where, n):
    for _ in range(n):
        counters.bump(("t_total", "k=a", 1), ("t_total", "k=b", 2), where=where)


def test_concurrent_writers_lose_nothing(tmp_path):
    where = str(tmp_path / "c.log")
    procs = [multiprocessing.Process(target=_writer, args=(where, 500)) for _ in range(6)]
    for p in procs:
        p.start()
    reader = counters.Totals(where)
    while any(p.is_alive() for p in procs):
        reader.read()  # reads race the writers: a record half-visible waits
    for p in procs:
        p.join()
    assert reader.read() == {("t_total", "k=a"): 3000, ("t_total", "k=b"): 6000}


def test_cut_record_costs_only_itself(tmp_path):
    where = str(tmp_path / "c.log")
    counters.bump(("t_total", "", 1), where=where)
    with open(where, "ab") as f:  # a writer killed mid-record
        f.write(counters._record("t_total", "", 100).encode()[:9])
    counters.bump(("t_total", "", 1), where=where)
    with open(where, "ab") as f:  # a record whose bytes were damaged
        f.write(counters._record("t_total", "", 1000).replace(" 1000 ", " 9000 ").encode())
    assert counters.Totals(where).read() == {("t_total", ""): 2}


def test_snapshot_survives_and_the_log_is_freed(tmp_path):
    where = str(tmp_path / "c.log")
    for _ in range(5000):  # 110 kB of records
        counters.bump(("t_total", "", 1), where=where)
    assert counters.Totals(where).read() == {("t_total", ""): 5000}
    counters.bump(("t_total", "", 1), where=where)
    assert counters.Totals(where).read() == {("t_total", ""): 5001}  # a new reader
    st = os.stat(where)
    assert st.st_size > 100_000 and st.st_blocks * 512 < 16384, st  # folded bytes punched out
    os.unlink(where)  # a new log: the sums stay
    counters.bump(("t_total", "", 1), where=where)
    assert counters.Totals(where).read() == {("t_total", ""): 5002}
    assert counters.Totals(str(tmp_path / "never")).read() == {}


def exported(where):
    reg = CollectorRegistry()
    reg.register(NodeCollector("/nonexistent", "/nonexistent", where))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(generate_latest(reg).decode())
            for s in f.samples}


def test_a_real_pull_counts(tmp_path, nodes):  # noqa: F811
    where = str(tmp_path / "ow-counters.log")
    before = exported(where)
    assert before[("emergence_share_pulls_total", (("source", "peer"),))] == 0
    seed = str(tmp_path / "ow-seed")
    random_image(seed, "ow:1", 3 << 20)
    node = nodes(seed)
    dest = str(tmp_path / "ow-dest")
    args = ["--store", dest, "pull", "ow:1", "--state", str(tmp_path / "ow-pstate"),
            "--config", "/dev/null", "--peer", node.url]
    cli(*args, where=where)
    after = exported(where)
    assert after[("emergence_share_pulls_total", (("source", "peer"),))] == 1
    got = after[("emergence_share_pull_bytes_total", (("source", "peer"),))]
    assert 3 << 20 < got < (3 << 20) + 4096  # the layer and the config
    assert after[("emergence_share_pull_bytes_total", (("source", "upstream"),))] == 0
    cli(*args, where=where)  # everything already here
    again = exported(where)
    assert again[("emergence_share_pulls_total", (("source", "store"),))] == 1
    assert again[("emergence_share_pull_bytes_total", (("source", "peer"),))] == got


def test_a_real_net_apply_counts(tmp_path):
    where = str(tmp_path / "ow-counters.log")
    host = f"ow-h-{uuid.uuid4().hex[:5]}"
    state = str(tmp_path / "ow-relay")

    def net(*args):
        return cli("net", "--state", state, *args, where=where,
                   prefix=["ip", "netns", "exec", host])

    subprocess.run(["ip", "netns", "add", host], check=True)
    try:
        f = tmp_path / "g.toml"
        f.write_text(f'[networks.owred]\nbridge = "owr{host[-5:]}"\n'
                     'subnets = ["10.87.0.0/24"]\nveth_prefix = "ow"\n')
        before = exported(where)
        assert before[("emergence_relay_applies_total", ())] == 0
        assert "+ net:owred" in net("apply", str(f))
        after = exported(where)
        assert after[("emergence_relay_applies_total", ())] == 1
        ops = {labels[0][1]: v for (n, labels), v in after.items()
               if n == "emergence_relay_operations_total"}
        assert ops["bridge.add"] == 1 and ops["nft.transaction"] == 1, ops
        assert net("apply", str(f)) == "no changes\n"  # nothing to do: not counted
        assert exported(where)[("emergence_relay_applies_total", ())] == 1
    finally:
        subprocess.run(["ip", "netns", "del", host])
