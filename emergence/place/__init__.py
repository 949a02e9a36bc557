"""Placement and dispatch across nodes: which host runs a task, and making
sure it runs to completion once in effect even when nodes die.

  commands.py      the verbs: cluster, submit, tasks, place
  score.py         D[h], D_max, D_green, fit, earliest finish, QoS (pure)
  demand.py        a task's demand when undeclared: per-image EWMA of its runs
  state.py         the cluster's state in etcd: keys, leases, first-result-wins
  commander.py     a command node: leader election, placement, timeouts, re-dispatch
  worker.py        a worker node: lease + heartbeat, telemetry, runs its assignments
  service.py       the long-running work inside `emergence node`, and the HTTP API

May import: the top-level helpers; cluster/ for everything about the
cluster itself (the etcd server and client, certificates, joining, task
signatures and the worker's policy); image/ and runtime/ only through the
`emergence` command (a worker runs tasks as `emergence run`).  score.py and
demand.py import nothing but the standard library, so bench/place_sim.py
runs the same scoring code.
"""
