"""Overwatch: what the node's containers use, in cAdvisor's names, for Prometheus.

Modules:
  catalog    the metrics exported: cAdvisor's names, types, units and labels (data)
  collector  one pass per interval over every container's cgroup files (opened once)
  exporter   a prometheus_client Collector serving the latest sample
  service    the node's long-running part: sampling loop and GET /metrics
  commands   the verbs (`stats`)

May import `emergence.runtime` (state, cgroups); the runtime never imports this.
"""
