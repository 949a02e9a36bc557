"""A prometheus_client Collector that serves the latest sample (scrapes never
read cgroup files; the node's sampling loop does)."""

from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from .catalog import BASE_LABELS, METRICS


def label_name(annotation):
    """cAdvisor's name for an annotation (a container label) as a Prometheus label."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in annotation)
    return "container_label_" + out


class SampleCollector:
    def __init__(self, collector, annotation_labels=()):
        self.collector = collector
        # the OCI annotations asked for, each as a label on every series of its container
        self.annotation_labels = {a: label_name(a) for a in annotation_labels}

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
            ann = entry.get("annotations") or {}
            for key, label in self.annotation_labels.items():
                base[label] = str(ann.get(key, ""))
            for name, points in entry["values"].items():
                fam = families[name]
                for extra, value in points:
                    fam.add_sample(name, {**base, **extra}, float(value))
        return [f for f in families.values() if f.samples]


def registry_for(collector, annotation_labels=()):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SampleCollector(collector, annotation_labels))
    return reg


def render(registry):
    from prometheus_client import generate_latest
    return generate_latest(registry)
