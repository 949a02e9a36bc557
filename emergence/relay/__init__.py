"""Relay: container networking as a live declarative graph.

  graph.py     networks, attachments, port forwards, routes; TOML/JSON; validation
  journal.py   a dict on disk: snapshot + append-only log, O(change) per edit
  ipam.py      addresses: one flock-locked journal per network
  kernel.py    rtnetlink in-process (nlmsg.py): targeted requests, each recorded
  nft.py       NAT, port forwards, isolation: one nftables table, one transaction
  engine.py    Relay: diff desired vs applied (or observed), apply in order, GC
  commands.py  the `net` verb
  cni.py       `emergence-cni`: the CNI 1.1 plugin over the same engine
  hooks.py     `net attach|detach` as OCI hooks, so the runtime never imports relay
  service.py   the node's reconciler: netlink events, resync, periodic compare

May import: the top-level helpers (errors, command).  Nothing imports relay;
the runtime reaches it only through OCI hooks that run `emergence net`.
Public API: `Relay` (engine.py) and `load` (graph.py).
"""
