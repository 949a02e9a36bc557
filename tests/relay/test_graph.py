"""The graph's file format and validation: pure functions, no kernel."""

import json

import pytest

from emergence.errors import ConfigError
from emergence.relay.graph import Graph, load


def doc(**over):
    d = {"networks": {"red": {"bridge": "rlred", "subnets": ["10.88.0.0/24", "fd00:88::/64"]},
                      "blue": {"bridge": "rlblue", "subnets": ["10.89.0.0/24"]}},
         "attachments": [{"network": "red", "container": "c1", "netns": "/run/netns/x",
                          "address": "10.88.0.5"}],
         "port_forwards": [{"network": "red", "container": "c1", "host_port": 8080,
                            "container_port": 80}],
         "routes": [{"destination": "10.99.0.0/24", "via": "10.88.0.9"}]}
    d.update(over)
    return d


def test_keys_are_stable_and_roundtrip():
    g = Graph.from_dict(doc())
    assert set(g.networks) == {"red", "blue"}
    assert list(g.attachments) == ["att:red/c1/eth0"]
    assert list(g.forwards) == ["pf:tcp/*/8080"]
    assert list(g.routes) == ["route:10.99.0.0/24"]
    assert str(g.networks["red"].gateways[0]) == "10.88.0.1"
    assert str(g.networks["red"].gateways[1]) == "fd00:88::1"
    again = Graph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert again.to_dict() == g.to_dict()


@pytest.mark.parametrize("change, words", [
    ({"networks": {"a": {"bridge": "rla", "subnets": ["10.0.0.0/16"]},
                   "b": {"bridge": "rlb", "subnets": ["10.0.5.0/24"]}}},
     ["networks.b.subnets", "overlaps 10.0.0.0/16"]),
    ({"attachments": [{"network": "red", "container": "c1", "netns": "/x",
                       "address": "10.77.0.5"}]}, ["address", "outside the subnets"]),
    ({"port_forwards": [{"network": "red", "container": "c1", "host_port": 8080,
                         "container_port": 80},
                        {"network": "red", "container": "c1", "host_port": 8080,
                         "container_port": 81}]}, ["port_forwards[1].host_port",
                                                   "already forwarded"]),
    ({"networks": {"red": {"bridge": "rlred", "subnets": ["10.88.0.0/24"], "mtu": "big"}}},
     ["networks.red.mtu"]),
    ({"networks": {"red": {"bridge": "rlred", "subnets": ["10.88.0.1/24"]}}},
     ["networks.red.subnets", "host bits"]),
    ({"networks": {"red": {"bridge": "rlred", "subnet": ["10.88.0.0/24"]}}},
     ["networks.red.subnet", "unknown field"]),
    ({"networks": {"red": {"bridge": "this-name-is-too-long", "subnets": ["10.88.0.0/24"]}}},
     ["networks.red.bridge"]),
    ({"attachments": [{"network": "green", "container": "c1", "netns": "/x"}]},
     ["network", "no network 'green'"]),
    ({"port_forwards": [{"network": "red", "container": "c1", "host_port": 8080,
                         "container_port": 80, "proto": "sctp"}]}, ["proto"]),
])
def test_bad_input_is_one_line_naming_the_field(change, words):
    with pytest.raises(ConfigError) as e:
        Graph.from_dict(doc(**change))
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_two_attachments_one_address():
    d = doc(attachments=[{"network": "red", "container": c, "netns": "/x",
                          "address": "10.88.0.5"} for c in ("c1", "c2")])
    with pytest.raises(ConfigError, match="already used by att:red/c1/eth0"):
        Graph.from_dict(d)


def test_toml_file_and_errors_name_the_file(tmp_path):
    p = tmp_path / "net.toml"
    p.write_text('[networks.red]\nbridge = "rlred"\nsubnets = ["10.88.0.0/24"]\n\n'
                 '[[attachments]]\nnetwork = "red"\ncontainer = "c1"\nnetns = "/x"\n')
    g = load(str(p))
    assert list(g.attachments) == ["att:red/c1/eth0"]
    p.write_text('[networks.red]\nbridge = "rlred"\nsubnets = ["10.88.0.0/33"]\n')
    with pytest.raises(ConfigError, match=r"net.toml: networks.red.subnets"):
        load(str(p))
    p.write_text("[networks.red\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(p))
