"""Overwatch: what the node's containers use, in cAdvisor's names, for Prometheus.

Modules:
  catalog    the metrics exported: cAdvisor's names, types, units and labels (data)
  collector  one pass per interval over every container's cgroup files (opened once)
  exporter   a prometheus_client Collector serving the latest sample, rendered once
  node_metrics  Emergence's own: containers by state, image store size, pulls, applies
  qos        RTT (p50/p99) and throughput probes between netns, bounded history on disk
  pairs      the standing probe's pairs from the containers' probe groups
  service    the node's long-running part: sampling loop, standing probe, GET /metrics
  views      podman stats' numbers from two passes (for `stats` and `top`)
  commands   the verbs (`stats`, `top`)

May import `emergence.runtime` (state, cgroups); the runtime never imports this.
"""
