"""A prometheus_client Collector that serves the latest sample (scrapes never
read cgroup files; the node's sampling loop does)."""

from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from .catalog import BASE_LABELS, METRICS


class SampleCollector:
    def __init__(self, collector, annotation_labels=()):
        self.collector = collector
        self.annotation_labels = tuple(annotation_labels)

    def collect(self):
        sample = self.collector.latest
        families = {}
        for name, (kind, doc, _extra) in METRICS.items():
            # Metric keeps the name as given: cAdvisor's container_memory_failcnt is a
            # counter without _total, which CounterMetricFamily would rename
            if kind == "counter" and not name.endswith("_total"):
                # the 0.0.4 writer names every counter NAME_total; cAdvisor's
                # container_memory_failcnt has no suffix, so it goes out untyped
                families[name] = Metric(name, doc, "unknown")
            else:
                families[name] = Metric(name[:-6] if kind == "counter" else name, doc, kind)
        for entry in sample.values():
            base = {k: entry["labels"][k] for k in BASE_LABELS}
            for name, points in entry["values"].items():
                fam = families[name]
                for extra, value in points:
                    fam.add_sample(name, {**base, **extra}, float(value))
        return [f for f in families.values() if f.samples]


def registry_for(collector):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SampleCollector(collector))
    return reg


def render(registry):
    from prometheus_client import generate_latest
    return generate_latest(registry)
