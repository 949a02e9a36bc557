"""Relay: container networking as a live declarative graph.

  graph.py     networks, attachments, port forwards, routes; TOML/JSON; validation
  fields.py    one value's checks at the edges: names, ifnames, CIDRs, ports, MTU
  owners.py    who declared what: what `net apply FILE` may change, `net rm` refusals
  instance.py  the instance a state dir is: nft table, bridge and veth names
  hostnet.py   subnet safety: the host's addresses and routes, read only
  journal.py   a dict on disk: snapshot + append-only log, O(change) per edit
  ipam.py      addresses: one flock-locked journal per network
  kernel.py    rtnetlink in-process (nlmsg.py): targeted requests, each recorded
  nft.py       NAT, port forwards, isolation: one nftables table, one transaction
  hairpin.py   a bridge port's hairpin mode (containers with published ports)
  engine.py    Relay: state, edits (attach, detach, apply, gc), the lock
  plan.py      the diff: desired vs applied (or observed)
  execute.py   the checks before any change, then removals, additions, nft
  commands.py  the `net` verb
  cni.py       `emergence-cni`: the CNI 1.1 plugin over the same engine
  hooks.py     `net attach|detach` as OCI hooks, so the runtime never imports relay
  service.py   the node's reconciler: netlink events, resync, periodic compare
  leases.py    cluster networks and node-subnet leases in the cluster's etcd
  overlay.py   a cluster network's VXLAN device and per-peer FDB, neighbour, route
  wg.py        the same over kernel WireGuard (--encrypt wireguard), its keys
  agent.py     `net agent`: lease, local network, device, peers from an etcd watch
  clusternet.py  the `net ... --cluster` verbs

May import: the top-level helpers (errors, command); the cluster networks
also place's etcd client (state.Cluster, watch.PrefixWatch, the CLI's
connection options) and cluster/ (TLS material), lazily.  Nothing imports relay;
the runtime reaches it only through OCI hooks that run `emergence net`.
Public API: `Relay` (engine.py) and `load` (graph.py).
"""
