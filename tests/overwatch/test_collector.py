"""The collector on real containers: cAdvisor's names and labels, counters that
rise, OOM kills counted, missing files absent and logged once, v2 on a real
cgroup2 mount, and /metrics through the service's routes."""

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import serving
from prometheus_client.parser import text_string_to_metric_families

from emergence.overwatch.collector import Collector
from emergence.overwatch.exporter import SampleCollector, registry_for, render

# cAdvisor's metrics (name, type, labels beyond id/image/name), from
# cadvisor/metrics/prometheus.go; kept here as data to compare against.
CADVISOR = {
    "container_cpu_usage_seconds_total": ("counter", {"cpu"}),
    "container_cpu_user_seconds_total": ("counter", set()),
    "container_cpu_system_seconds_total": ("counter", set()),
    "container_cpu_cfs_periods_total": ("counter", set()),
    "container_cpu_cfs_throttled_periods_total": ("counter", set()),
    "container_cpu_cfs_throttled_seconds_total": ("counter", set()),
    "container_memory_usage_bytes": ("gauge", set()),
    "container_memory_working_set_bytes": ("gauge", set()),
    "container_memory_rss": ("gauge", set()),
    "container_memory_cache": ("gauge", set()),
    "container_memory_failcnt": ("counter", set()),
    "container_oom_events_total": ("counter", set()),
    "container_spec_memory_limit_bytes": ("gauge", set()),
    "container_spec_cpu_quota": ("gauge", set()),
    "container_spec_cpu_period": ("gauge", set()),
    "container_spec_cpu_shares": ("gauge", set()),
    "container_processes": ("gauge", set()),
    "container_threads": ("gauge", set()),
    "container_fs_reads_bytes_total": ("counter", {"device"}),
    "container_fs_writes_bytes_total": ("counter", {"device"}),
    "container_network_receive_bytes_total": ("counter", {"interface"}),
    "container_network_receive_packets_total": ("counter", {"interface"}),
    "container_network_receive_errors_total": ("counter", {"interface"}),
    "container_network_receive_packets_dropped_total": ("counter", {"interface"}),
    "container_network_transmit_bytes_total": ("counter", {"interface"}),
    "container_network_transmit_packets_total": ("counter", {"interface"}),
    "container_network_transmit_errors_total": ("counter", {"interface"}),
    "container_network_transmit_packets_dropped_total": ("counter", {"interface"}),
    "container_pressure_cpu_waiting_seconds_total": ("counter", set()),
    "container_pressure_cpu_stalled_seconds_total": ("counter", set()),
    "container_pressure_memory_waiting_seconds_total": ("counter", set()),
    "container_pressure_memory_stalled_seconds_total": ("counter", set()),
    "container_pressure_io_waiting_seconds_total": ("counter", set()),
    "container_pressure_io_stalled_seconds_total": ("counter", set()),
    "container_start_time_seconds": ("gauge", set()),
    "container_last_seen": ("gauge", set()),
}
BASE = {"id", "image", "name"}
# the 0.0.4 writer of prometheus_client names every counter family NAME_total, so
# cAdvisor's suffix-less counter goes out untyped (same name, same value)
UNTYPED = {"container_memory_failcnt"}

PEER = "10.218.7.2"  # the far end of the container's eth0 (the `wired` fixture)
BUSY = (f"ping -q -i 0.02 -s 1400 {PEER} >/dev/null & "
        "a=$(head -c 24m /dev/zero | tr '\\0' x); while true; do :; done")


@pytest.fixture
def wired():
    """A netns for the container whose eth0 is wired to PEER in another netns:
    traffic that cAdvisor counts (it leaves lo, veth* and docker* out).  The
    test's own namespaces, removed after it."""
    tag = os.getpid() % 100000
    inner, outer = f"owi{tag}", f"owo{tag}"

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)
    try:
        for ns in (inner, outer):
            ip("netns", "add", ns)
        ip("-n", inner, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", outer)
        ip("-n", inner, "addr", "add", "10.218.7.1/24", "dev", "eth0")
        ip("-n", outer, "addr", "add", f"{PEER}/24", "dev", "eth0")
        for ns in (inner, outer):
            ip("-n", ns, "link", "set", "eth0", "up")
        yield f"/run/netns/{inner}"
    finally:
        for ns in (inner, outer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def wire(netns):
    """A bundle edit: join NETNS, and CAP_NET_RAW for ping (the default leaves it out)."""
    def edit(c):
        for kind in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][kind].append("CAP_NET_RAW")
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"]
        c["linux"]["namespaces"].append({"type": "network", "path": netns})
    return edit


def series(text):
    """{(sample name, frozenset(labels.items())): value} and {sample name: type}."""
    values, types = {}, {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
            types[s.name] = fam.type
    return values, types


def one(values, name, cid, **extra):
    hits = [v for (n, labels), v in values.items()
            if n == name and dict(labels).get("name") == cid
            and all(dict(labels).get(k) == x for k, x in extra.items())]
    assert len(hits) == 1, (name, hits)
    return hits[0]


def text_of(c, annotations=()):
    """The /metrics text of C's latest sample as the node writes it, held equal
    to prometheus_client's own generate_latest of the same families."""
    writer = SampleCollector(c, annotations)
    text = writer.text()
    assert text == render(registry_for(c, annotations))
    assert writer.text() == text  # the label texts it keeps give the same bytes
    return text.decode()


def scrape(rt):
    c = Collector(rt.root)
    try:
        c.collect()
        return text_of(c)
    finally:
        c.close()


def test_names_types_and_labels_are_cadvisors(rt, running, wired):
    def edit(c):
        wire(wired)(c)
        c["linux"]["resources"].update(memory={"limit": 128 << 20},
                                       cpu={"quota": 50000, "period": 100000})
    cid = running(["sh", "-c", BUSY], edit=edit)
    time.sleep(1)
    values, types = series(scrape(rt))
    names = {n for n, _ in values}
    for name, labels in values:
        assert name in CADVISOR, f"{name} is not one of cAdvisor's"
        kind, extra = CADVISOR[name]
        assert types[name] == ("unknown" if name in UNTYPED else kind), name
        assert {k for k, _ in labels} == BASE | extra, name
        assert dict(labels).get("interface") != "lo", "cAdvisor leaves lo out"
    # what this hybrid host can fill: all but nothing of the v1 set; pressure is v2's
    missing = set(CADVISOR) - names
    assert missing <= {n for n in CADVISOR if "pressure" in n} | {
        "container_fs_reads_bytes_total", "container_fs_writes_bytes_total"}, missing
    assert one(values, "container_spec_cpu_quota", cid) == 50000
    assert one(values, "container_spec_memory_limit_bytes", cid) == 128 << 20
    assert one(values, "container_cpu_usage_seconds_total", cid, cpu="total") > 0


def test_counters_rise_with_cpu_memory_and_traffic(rt, running, wired):
    cid = running(["sh", "-c", BUSY], edit=wire(wired))
    c = Collector(rt.root)
    try:
        time.sleep(0.5)
        c.collect()
        first, _ = series(text_of(c))
        time.sleep(2)
        c.collect()
        second, _ = series(text_of(c))
    finally:
        c.close()
    cpu0 = one(first, "container_cpu_usage_seconds_total", cid, cpu="total")
    cpu1 = one(second, "container_cpu_usage_seconds_total", cid, cpu="total")
    assert cpu1 - cpu0 > 0.5, (cpu0, cpu1)  # a busy loop for 2 s: more than a quarter core
    # user and system split the same time (on this hybrid host: cgroup2's cpu.stat)
    user = one(second, "container_cpu_user_seconds_total", cid)
    system = one(second, "container_cpu_system_seconds_total", cid)
    assert user > 0.5 and abs(user + system - cpu1) <= 0.05 * cpu1 + 0.05, (user, system, cpu1)
    assert one(second, "container_memory_usage_bytes", cid) > 24 << 20
    assert one(second, "container_memory_working_set_bytes", cid) > 24 << 20
    assert one(second, "container_memory_rss", cid) > 24 << 20
    rx0 = one(first, "container_network_receive_bytes_total", cid, interface="eth0")
    rx1 = one(second, "container_network_receive_bytes_total", cid, interface="eth0")
    tx1 = one(second, "container_network_transmit_packets_total", cid, interface="eth0")
    assert rx1 - rx0 > 50_000 and tx1 > 0
    assert one(second, "container_processes", cid) >= 2  # sh and ping
    assert one(second, "container_last_seen", cid) > one(first, "container_last_seen", cid)
    assert abs(one(second, "container_start_time_seconds", cid) - time.time()) < 30


def test_gated_counters_move_between_limit_reads(rt, running, tmp_path):
    """Throttling counters and failcnt are read every pass once a quota or a
    limit is set (not only when the limits are re-read), and stay readable
    without one."""
    from emergence.overwatch.collector import SPEC_EVERY
    (tmp_path / "data").mkdir()

    def edit(c):  # page cache over a 16 MB limit: reclaimed, and each reclaim counted
        c["linux"]["resources"].update(memory={"limit": 16 << 20},
                                       cpu={"quota": 10000, "period": 100000})
        c["mounts"].append({"destination": "/data", "type": "bind",
                            "source": str(tmp_path / "data"), "options": ["rbind", "rw"]})
    limited = running(["sh", "-c", "while true; do dd if=/dev/zero of=/data/fill bs=1M "
                       "count=48 2>/dev/null; done & while true; do :; done"], edit=edit)
    free = running()
    c = Collector(rt.root)
    try:
        c.collect()   # the pass that reads the limits
        seen = []
        for _ in range(3):
            time.sleep(0.4)
            c.collect()  # passes that do not re-read the limits
            v = c.latest[limited].values
            seen.append((v["container_cpu_cfs_throttled_periods_total"][0][1],
                         v["container_memory_failcnt"][0][1]))
        assert c.targets[limited].passes % SPEC_EVERY != 0
        throttled, fails = zip(*seen)
        assert throttled[0] < throttled[1] < throttled[2], seen
        assert fails[0] < fails[2], seen
        idle = c.latest[free].values
        assert idle["container_cpu_cfs_throttled_periods_total"][0][1] == 0
        assert idle["container_memory_failcnt"][0][1] == 0
    finally:
        c.close()


def test_oom_kill_increments_oom_events(rt, running):
    # the inner sh holds the memory and raises its own oom_score_adj (no
    # capability needed), so the OOM killer picks it, never the init
    cid = running(["sh", "-c", "sleep 1; while true; do sh -c 'echo 1000 > /proc/self/"
                               "oom_score_adj; a=$(head -c 64m /dev/zero | "
                               "tr \"\\0\" x)'; done"],
                  edit=lambda c: c["linux"]["resources"].update(
                      memory={"limit": 16 << 20, "swap": 16 << 20}))
    c = Collector(rt.root)
    try:
        c.collect()
        before = c.latest[cid].values["container_oom_events_total"][0][1]
        deadline = time.monotonic() + 20
        after = before
        while after <= before and time.monotonic() < deadline:
            time.sleep(0.5)
            c.collect()
            after = c.latest[cid].values["container_oom_events_total"][0][1]
        assert after > before
    finally:
        c.close()


def test_missing_file_is_absent_and_logged_once(rt, running):
    cid = running()
    lines = []
    c = Collector(rt.root, lines.append)
    try:
        t = None
        c.collect()
        t = c.targets[cid]
        # a controller file this kernel lacks: point memory at a directory without it
        t.plan = [(name, "/nonexistent/ow/" + name if name.startswith("memory/") else path,
                   when) for name, path, when in t.plan]
        t._unbind()  # opened again, from the new plan, by the next pass
        for _ in range(3):
            c.collect()
        assert "container_memory_usage_bytes" not in c.latest[cid].values
        assert "container_cpu_usage_seconds_total" in c.latest[cid].values
        missing = [m for m in lines if "memory.usage_in_bytes" in m]
        assert len(missing) == 1, lines
    finally:
        c.close()


def test_deleted_container_is_dropped(rt, running):
    cid = running()
    c = Collector(rt.root)
    try:
        c.collect()
        assert cid in c.latest
        rt("delete", "--force", cid, check=True)
        c.collect()
        assert cid not in c.latest and cid not in c.targets
    finally:
        c.close()




V2_SCRIPT = r"""
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /sys/fs/cgroup
mount -t cgroup2 none /sys/fs/cgroup
"$@" run --detach --bundle "$BUNDLE" "$CID"
trap '"$@" delete --force "$CID"' EXIT
"$PY" -c "$PROBE"
"""

PROBE = r"""
import json, os, time
from emergence.overwatch.collector import Collector
c = Collector(os.environ["ROOT"])
time.sleep(0.5); c.collect(); a = c.latest[os.environ["CID"]].values
time.sleep(2); c.collect(); b = c.latest[os.environ["CID"]].values
print(json.dumps([a, b]))
"""


def test_pure_cgroup2_counters_rise(rt, restore_v2_root, wired):
    """/sys/fs/cgroup is the real cgroup2 hierarchy alone (a unified host)."""
    def edit(c):
        c["linux"]["namespaces"].remove({"type": "cgroup"})
        wire(wired)(c)
    cid = rt.new_id("ow")
    b = rt.bundle(["sh", "-c", BUSY], edit=edit)
    env = dict(os.environ, BUNDLE=b, CID=cid, ROOT=rt.root, PY=sys.executable, PROBE=PROBE)
    p = subprocess.run(["unshare", "-m", "sh", "-c", V2_SCRIPT, "sh"] + rt.cmd +
                       ["--root", rt.root], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    a, b = json.loads(p.stdout.splitlines()[-1])
    get = lambda v, n: v[n][0][1]  # noqa: E731
    assert get(b, "container_cpu_usage_seconds_total") - get(
        a, "container_cpu_usage_seconds_total") > 0.5
    assert get(b, "container_cpu_user_seconds_total") > get(a, "container_cpu_user_seconds_total")
    # PSI files are in every cgroup2 directory: the busy loop waits for CPU
    assert "container_pressure_io_stalled_seconds_total" in b
    assert get(b, "container_pressure_cpu_waiting_seconds_total") > 0
    with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
        v2_controllers = f.read().split()
    if "memory" in v2_controllers:
        assert get(b, "container_memory_usage_bytes") > 24 << 20
        assert "container_memory_working_set_bytes" in b
    else:  # memory is bound to v1 on this host: absent on the cgroup2 mount, not zero
        assert not any(n.startswith("container_memory") for n in b)
    rx = {tuple(e.items()): v for e, v in b["container_network_receive_bytes_total"]}
    assert rx[(("interface", "eth0"),)] > 50_000
    assert not os.path.exists(f"/sys/fs/cgroup/unified/emergence/{cid}")


def test_service_serves_metrics(rt, running, tmp_path):

    from emergence.overwatch.service import Service
    cid = running()

    async def main():
        svc = Service({"root": rt.root, "interval": 0.2}, str(tmp_path), lambda m: None)
        async with serving(svc) as port:
            await asyncio.sleep(0.5)
            import aiohttp
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    text = await r.text()
            return text, svc.status()

    text, status = asyncio.run(main())
    values, _ = series(text)
    assert one(values, "container_threads", cid) == 1
    assert status["containers"] == 1 and status["passes"] >= 2


def test_node_metrics_count_states_and_store(rt, running, tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from emergence.overwatch.node_metrics import NodeCollector
    running()
    b = rt.bundle(["sleep", "300"])
    created = rt.new_id("ow")
    rt("create", "--bundle", b, created, check=True)
    blobs = tmp_path / "store" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / "a").write_bytes(b"x" * 1000)
    (blobs / "b").write_bytes(b"y" * 234)
    reg = CollectorRegistry()
    reg.register(NodeCollector(rt.root, str(tmp_path / "store")))
    values, types = series(generate_latest(reg).decode())
    by_state = {dict(labels)["state"]: v for (n, labels), v in values.items()
                if n == "emergence_containers"}
    assert by_state["running"] == 1 and by_state["created"] == 1 and by_state["stopped"] == 0
    assert values[("emergence_store_bytes", frozenset())] == 1234
    reg2 = CollectorRegistry()
    reg2.register(NodeCollector(rt.root, str(tmp_path / "nostore")))
    assert "emergence_store_bytes" not in generate_latest(reg2).decode()


def test_state_counts_follow_a_container_through_its_life(rt):
    """The counts are cached per state file; a start, pause, resume and the
    init's death (none of which need a new state file) still show at once,
    each as the runtime's own `state` verb says."""
    from emergence.overwatch.node_metrics import States
    states = States(rt.root)
    cid = rt.new_id("ow")
    rt("create", "--bundle", rt.bundle(["sleep", "300"]), cid, check=True)

    def counted():
        return {k: v for k, v in states.counts().items() if v}

    def said():
        return json.loads(rt("state", cid, check=True).stdout)["status"]

    try:
        assert counted() == {"created": 1} and said() == "created"
        rt("start", cid, check=True)
        assert counted() == {"running": 1} and said() == "running"
        rt("pause", cid, check=True)
        assert counted() == {"paused": 1} and said() == "paused"
        rt("resume", cid, check=True)
        assert counted() == {"running": 1}
        rt("kill", cid, "KILL", check=True)
        deadline = time.monotonic() + 10
        while said() != "stopped" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counted() == {"stopped": 1}
    finally:
        rt("delete", "--force", cid)
    assert counted() == {} and states.known == {}
    states.close()


def test_annotations_asked_for_become_container_labels(rt, running):
    """As cAdvisor's container_label_*: only the annotations asked for, on every
    series of the container, empty where the container has none."""
    team = 'blue "sky"\\ and\nsea'  # quotes, a backslash and a newline: escaped
    cid = running(edit=lambda c: c.setdefault("annotations", {}).update(
        {"org.example.team": team, "org.example.other": "x"}))
    plain = running()
    c = Collector(rt.root)
    try:
        c.collect()
        values, _ = series(text_of(c, ["org.example.team"]))
    finally:
        c.close()
    mine = [dict(labels) for name, labels in values if dict(labels).get("name") == cid]
    theirs = [dict(labels) for name, labels in values if dict(labels).get("name") == plain]
    assert mine and all(lab["container_label_org_example_team"] == team for lab in mine)
    assert theirs and all(lab["container_label_org_example_team"] == "" for lab in theirs)
    assert not any("container_label_org_example_other" in lab for lab in mine)


def _block_device_of(path):
    """MAJ:MIN of the block device holding PATH, or None (tmpfs, overlay...)."""
    dev = os.stat(path).st_dev
    majmin = f"{os.major(dev)}:{os.minor(dev)}"
    return majmin if os.path.exists(f"/sys/dev/block/{majmin}") else None


def _v1_blkio_counts(directory, dev):
    """Whether this kernel charges a v1 blkio cgroup for direct writes to DEV:
    since 6.x blk-throttle counts only on queues with a throttle rule, and the
    bfq files only under bfq (cAdvisor reads the same files and sees zeros)."""
    probe = f"/sys/fs/cgroup/blkio/ow-probe-{os.getpid()}"
    os.mkdir(probe)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                with open(f"{probe}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
                fd = os.open(os.path.join(directory, "probe"),
                             os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
                import mmap
                buf = mmap.mmap(-1, 1 << 20)
                os.write(fd, buf)
                os.close(fd)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        with open(f"{probe}/blkio.throttle.io_service_bytes_recursive") as f:
            counted = any(line.startswith(dev + " Write") and int(line.split()[2]) > 0
                          for line in f)
    finally:
        os.rmdir(probe)
        try:
            os.unlink(os.path.join(directory, "probe"))
        except FileNotFoundError:
            pass
    return counted


def test_block_writes_show_in_fs_writes(rt, running, tmp_path):
    """dd with O_DIRECT and then fsync into a directory on a real block device
    (bound into the container): blkio (v1) charges the container's cgroup."""
    import pytest
    data = tmp_path / "ow-data"
    data.mkdir()
    dev = _block_device_of(str(data))
    if dev is None:
        pytest.skip(f"{data} is not on a block device: no blkio figures to drive")
    if not os.path.exists("/sys/fs/cgroup/blkio/blkio.throttle.io_service_bytes_recursive"):
        pytest.skip("no v1 blkio hierarchy on this host")
    if not _v1_blkio_counts(str(data), dev):
        pytest.skip(f"this kernel does not charge v1 blkio for writes to {dev} (no throttle "
                    "rule on its queue): nothing for the collector to read")
    cid = running(["sh", "-c", "sleep 1; dd if=/dev/zero of=/data/d bs=1M count=8 oflag=direct"
                               " && dd if=/dev/zero of=/data/f bs=1M count=8 conv=fsync"
                               " && sleep 300"],
                  edit=lambda c: c["mounts"].append({"destination": "/data", "type": "bind",
                                                     "source": str(data),
                                                     "options": ["rbind", "rw"]}))
    c = Collector(rt.root)
    try:
        c.collect()
        before = dict((e["device"], v) for e, v in
                      c.latest[cid].values.get("container_fs_writes_bytes_total", []))
        deadline = time.monotonic() + 30
        after = before
        while after.get(dev, 0) - before.get(dev, 0) < 16 << 20 and time.monotonic() < deadline:
            time.sleep(0.5)
            c.collect()
            after = dict((e["device"], v) for e, v in
                         c.latest[cid].values.get("container_fs_writes_bytes_total", []))
    finally:
        c.close()
    assert after.get(dev, 0) - before.get(dev, 0) >= 16 << 20, (dev, before, after)


IO_PROBE = r"""
import json, os, time
from emergence.overwatch.collector import Collector
c = Collector(os.environ["ROOT"])
time.sleep(4); c.collect()
print(json.dumps(c.latest[os.environ["CID"]].values.get("container_fs_writes_bytes_total")))
"""


def test_pure_cgroup2_block_writes(rt, restore_v2_root, tmp_path):
    """The same writes on the real cgroup2 hierarchy alone: io.stat's wbytes."""
    import pytest
    with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
        if "io" not in f.read().split():
            pytest.skip("the io controller is bound to the v1 blkio hierarchy on this host "
                        "(absent from the cgroup2 root's cgroup.controllers): no io.stat "
                        "exists on cgroup2 here")
    data = tmp_path / "ow-data"
    data.mkdir()
    dev = _block_device_of(str(data))
    if dev is None:
        pytest.skip(f"{data} is not on a block device: no io figures to drive")

    def edit(c):
        c["linux"]["namespaces"].remove({"type": "cgroup"})
        c["mounts"].append({"destination": "/data", "type": "bind", "source": str(data),
                            "options": ["rbind", "rw"]})
    cid = rt.new_id("ow")
    b = rt.bundle(["sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=8 conv=fsync; "
                               "sleep 300"], edit=edit)
    env = dict(os.environ, BUNDLE=b, CID=cid, ROOT=rt.root, PY=sys.executable, PROBE=IO_PROBE)
    p = subprocess.run(["unshare", "-m", "sh", "-c", V2_SCRIPT, "sh"] + rt.cmd +
                       ["--root", rt.root], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    writes = {e["device"]: v for e, v in json.loads(p.stdout.splitlines()[-1]) or []}
    assert writes.get(dev, 0) >= 8 << 20, (dev, writes)


def test_pick_reads_whole_keys_only():
    from emergence.overwatch.collector import _pick
    stat = b"cache 5\nrss 7\ntotal_rss 9\ntotal_cache 11\n"
    # "rss" is not the tail of "total_rss", nor "cache" of "total_cache"
    assert _pick(stat, b"total_rss", b"rss", b"cache", b"total_cache", b"swap") == \
        [9, 7, 5, 11, None]
    assert _pick(b"oom_kill_disable 0\nunder_oom 0\noom_kill 3", b"oom_kill") == [3]


def test_layout_reads_each_hierarchy_its_own_way():
    """The parse of one reading, per layout (a pure function: bytes in, values out)."""
    from emergence.overwatch.collector import GATES, Layout
    hybrid = Layout(False, False, False, unified_cpu=True)
    raw = {"unified/cpu.stat": b"usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
           "cpu/cpu.cfs_quota_us": b"-1\n", "cpu/cpu.stat": b"nr_periods 0\nnr_throttled 0\n"
           b"throttled_time 0\n", "memory/memory.usage_in_bytes": b"1000\n",
           "memory/memory.stat": b"total_inactive_file 300\ntotal_rss 600\ntotal_cache 400\n",
           "memory/memory.limit_in_bytes": b"9223372036854771712\n",
           "memory/memory.oom_control": b"oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
           "pids/cgroup.procs": b"1\n7\n", "pids/pids.current": b"3\n",
           "unified/cpu.pressure": b"some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n",
           "net/dev": b"h1\nh2\n    lo: 9 9 0 0 0 0 0 0 9 9 0 0 0 0 0 0\n"
           b"  eth0: 10 2 0 0 0 0 0 0 20 4 0 0 0 0 0 0\n"}
    v = hybrid.values(raw, 100.0, 200.0)
    first = {name: points[0][1] for name, points in v.items()}
    assert first["container_cpu_usage_seconds_total"] == 3.0
    assert (first["container_cpu_user_seconds_total"],
            first["container_cpu_system_seconds_total"]) == (2.0, 1.0)
    assert first["container_cpu_cfs_throttled_periods_total"] == 0
    assert "container_spec_cpu_quota" not in first  # -1: no quota
    assert (first["container_memory_working_set_bytes"], first["container_memory_rss"],
            first["container_memory_cache"]) == (700, 600, 400)
    assert first["container_oom_events_total"] == 2
    assert (first["container_processes"], first["container_threads"]) == (2, 3)
    assert first["container_pressure_cpu_waiting_seconds_total"] == 1.5
    assert v["container_network_receive_bytes_total"] == [({"interface": "eth0"}, 10)]
    assert (first["container_start_time_seconds"], first["container_last_seen"]) == (100.0, 200.0)
    # the gates: v1 counters read every pass only once a limit lets them move
    assert not GATES["cpu/cpu.stat"](raw, {})
    assert GATES["cpu/cpu.stat"]({"cpu/cpu.cfs_quota_us": b"50000\n"}, {})
    assert not GATES["memory/memory.failcnt"](raw, {})
    assert GATES["memory/memory.failcnt"]({"memory/memory.limit_in_bytes": b"134217728\n"}, {})

    v2 = Layout(True, True, True).values(
        {"cpu/cpu.stat": b"usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\n"
         b"nr_throttled 1\nthrottled_usec 7\n", "cpu/cpu.max": b"max 100000\n",
         "cpu/cpu.weight": b"100\n", "memory/memory.events": b"low 0\nhigh 0\nmax 5\noom 1\n"
         b"oom_kill 1\n", "memory/memory.max": b"max\n",
         "io/io.stat": b"8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n"}, None, 1.0)
    assert v2["container_cpu_cfs_throttled_periods_total"] == [({}, 1)]
    assert v2["container_spec_cpu_shares"] == [({}, 2597)]  # cAdvisor: 2 + (w - 1) * 262142 // 9999
    assert "container_spec_cpu_quota" not in v2 and v2["container_spec_memory_limit_bytes"] == \
        [({}, 0)]
    assert v2["container_memory_failcnt"] == [({}, 5)] and v2["container_oom_events_total"] == \
        [({}, 1)]
    assert v2["container_fs_writes_bytes_total"] == [({"device": "8:0"}, 8192)]
    assert "container_start_time_seconds" not in v2
