"""`emergence net ...` end to end, run inside a test-made "host" netns."""

import json
import os
import signal
import subprocess
import time

from conftest import emergence_command

from emergence.relay.ipam import IPAM

from .conftest import nft_table, sh

EM = emergence_command()


def net(host, state, *args, check=True):
    p = subprocess.run(["ip", "netns", "exec", host] + EM + ["net", "--state", state]
                       + list(args), capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_create_ls_inspect_apply_diff_show_rm(tmp_path, netns, host):
    state = str(tmp_path / "s")
    a = netns.new("a")
    assert net(host, state, "create", "red", "--subnet", "10.88.0.0/24", "--bridge", "rlred",
               "--veth-prefix", "rl").stdout == "red\n"
    ls = json.loads(net(host, state, "ls", "--json").stdout)
    assert ls == [{"name": "red", "bridge": "rlred", "subnets": ["10.88.0.0/24"],
                   "owner": "cli", "attachments": 0}]
    out = net(host, state, "attach", "red", "c1", netns.path(a), "-p", "8080:80").stdout
    assert out.strip() == "10.88.0.2"
    doc = json.loads(net(host, state, "inspect", "red").stdout)
    assert doc["attachments"][0]["address"] == ["10.88.0.2"]
    assert doc["port_forwards"][0]["host_port"] == 8080
    # a file declaring a second network: diff says what apply then does
    f = tmp_path / "g.toml"
    f.write_text('[networks.red]\nbridge = "rlred"\nsubnets = ["10.88.0.0/24"]\n'
                 'veth_prefix = "rl"\n\n[networks.blue]\nbridge = "rlblue"\n'
                 'subnets = ["10.89.0.0/24"]\nveth_prefix = "rl"\n')
    d = json.loads(net(host, state, "diff", str(f), "--json").stdout)
    assert d == [{"action": "add", "key": "net:blue", "why": ""},
                 {"action": "update", "key": "nft:emergence", "why": "ruleset changed"}]
    assert "+ net:blue" in net(host, state, "apply", str(f)).stdout
    assert net(host, state, "diff", str(f)).stdout == "no changes\n"
    assert net(host, state, "apply", str(f)).stdout == "no changes\n"
    # the attachment made by `attach` survived the file's apply
    show = json.loads(net(host, state, "show").stdout)
    assert [x["container"] for x in show["attachments"]] == ["c1"]
    p = net(host, state, "rm", "red", check=False)     # c1 is attached: refused, named
    assert p.returncode == 1 and "(c1)" in p.stderr and "--force" in p.stderr
    net(host, state, "rm", "red", "--force")
    assert sh("ip", "-n", host, "-o", "link", "show", "type", "veth").stdout == ""
    assert [n["name"] for n in json.loads(net(host, state, "ls", "--json").stdout)] == ["blue"]
    net(host, state, "rm", "blue")
    assert "rlblue" not in sh("ip", "-n", host, "link").stdout
    assert sh("ip", "netns", "exec", host, "nft", "list", "ruleset").stdout.strip() == ""


def test_errors_are_one_line_and_leave_nothing(tmp_path, netns, host):
    state = str(tmp_path / "s")
    sh("ip", "-n", host, "link", "add", "rlforeign", "type", "bridge")
    p = net(host, state, "create", "red", "--subnet", "10.88.0.0/24", "--bridge", "rlforeign",
            check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert "exists and is not Emergence's" in p.stderr
    assert json.loads(net(host, state, "ls", "--json").stdout) == []
    net(host, state, "create", "red", "--subnet", "10.88.0.0/24", "--bridge", "rlred")
    p = net(host, state, "create", "blue", "--subnet", "10.88.0.128/25", "--bridge", "rlblue",
            check=False)
    assert p.returncode == 1 and "overlaps 10.88.0.0/24" in p.stderr
    p = net(host, state, "attach", "red", "c1", "/var/run/netns/rl-nope", check=False)
    assert p.returncode == 1 and "does not exist" in p.stderr and "\n" == p.stderr[-1]
    p = net(host, state, "attach", "red", "c1", "/x", "--ip", "10.1.1.1", check=False)
    assert p.returncode == 1 and "outside the subnets" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"networks": {"red": {"bridge": "rlred", "subnets": ["10.88.0.0/24"], '
                   '"mtu": 1}}}')
    p = net(host, state, "apply", str(bad), check=False)
    assert p.returncode == 1 and "networks.red.mtu" in p.stderr
    assert net(host, state, "bogus", check=False).returncode == 2
    assert net(host, state, check=False).returncode == 2
    net(host, state, "rm", "red")


def test_gc_frees_addresses_of_sigkilled_containers(tmp_path, netns, host):
    state = str(tmp_path / "s")
    net(host, state, "create", "red", "--subnet", "10.88.0.0/24", "--bridge", "rlred",
        "--veth-prefix", "rl")
    procs = [subprocess.Popen(["ip", "netns", "exec", host, "unshare", "-n", "sleep", "60"])
             for _ in range(3)]
    try:
        time.sleep(0.3)
        pids = []
        for p in procs:
            # the sleep's pid: the child of ip netns exec after its exec of unshare
            pids.append(p.pid)
        for i, pid in enumerate(pids):
            net(host, state, "attach", "red", f"c{i}", f"/proc/{pid}/ns/net",
                "-p", f"{9000 + i}:80")
        holders = IPAM(state).holders("red")
        assert len(holders) == 3
        os.kill(pids[0], signal.SIGKILL)
        os.kill(pids[1], signal.SIGKILL)
        procs[0].wait()
        procs[1].wait()
        out = net(host, state, "gc", "--json").stdout
        released = sorted(c["key"] for c in json.loads(out) if c["action"] == "release")
        assert released == ["att:red/c0/eth0", "att:red/c1/eth0"]
        holders = IPAM(state).holders("red")
        assert [v["key"] for v in holders.values()] == ["att:red/c2/eth0"]
        rules = sh("ip", "netns", "exec", host, "nft", "list", "table", "inet",
                   nft_table(state)).stdout
        assert "dport 9002" in rules and "dport 9000" not in rules
        assert len(sh("ip", "-n", host, "-o", "link", "show", "type", "veth")
                   .stdout.splitlines()) == 1
        assert json.loads(net(host, state, "gc", "--json").stdout) == []
    finally:
        for p in procs:
            p.kill()
            p.wait()
        net(host, state, "rm", "red", "--force")
