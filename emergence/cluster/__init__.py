"""The cluster itself: who is a member and with what rights.  It owns the
cluster's etcd (the server, its TLS, its users and roles), the client every
part uses to reach it, the certificates (a CA, one per node), the join
protocol that hands a node its certificate, and the signing of tasks.

  etcd.py       start a local etcd (TLS for clients and peers) and wait for it
  pki.py        keys, the CA, node certificates, CSRs, the CA pin (cryptography)
  files.py      a node's cluster directory: ca.pem, node.pem, node.key, ...
  client.py     the etcd client (etcd3gw over TLS, with the node's etcd user)
  rbac.py       etcd users and roles: command nodes, workers, readers
  bootstrap.py  `cluster init` / `cluster issue`: CA, first node, etcd, RBAC
  join.py       one-time join tokens and `POST /cluster/v1/join`
  signing.py    tasks signed by command nodes (Ed25519), checked by workers
  policy.py     what a task may ask of a worker's host (mounts, caps, ...)
  service.py    the join route inside `emergence node`

Placement (place/), Relay's cluster networks and the CI stage use this
package; it imports none of them (only the top-level helpers).
`cryptography` and etcd3gw are imported where used, never at import time.
"""
