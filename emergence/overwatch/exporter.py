"""A prometheus_client Collector that serves the latest sample (scrapes never
read cgroup files; the node's sampling loop does), and the cache that renders
that sample's exposition text once, ahead of the scrape where it can."""

import threading
import time

from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .catalog import BASE_LABELS, METRICS


def label_name(annotation):
    """cAdvisor's name for an annotation (a container label) as a Prometheus label."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in annotation)
    return "container_label_" + out


def _family(name, kind, doc):
    """NAME's empty family, as the 0.0.4 writer must see it to write NAME."""
    if kind == "counter" and not name.endswith("_total"):
        # the 0.0.4 writer names every counter NAME_total (so would
        # CounterMetricFamily); cAdvisor's container_memory_failcnt has no
        # suffix, so it goes out untyped
        return Metric(name, doc, "unknown")
    return Metric(name[:-6] if kind == "counter" else name, doc, kind)


def _header(family):
    """generate_latest's HELP and TYPE lines of FAMILY."""
    kind = {"counter": "counter", "unknown": "untyped"}.get(family.type, family.type)
    name = family.name + "_total" if family.type == "counter" else family.name
    doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _label_text(labels):
    """A label set as the 0.0.4 writer prints it: sorted, values escaped."""
    return "{" + ",".join('{}="{}"'.format(k, str(v).replace("\\", r"\\").replace(
        "\n", r"\n").replace('"', r'\"')) for k, v in sorted(labels.items())) + "}"


class SampleCollector:
    """The latest sample as prometheus_client families (`collect`), and as the
    text generate_latest makes of them (`text`), written directly."""

    def __init__(self, collector, annotation_labels=()):
        self.collector = collector
        # the OCI annotations asked for, each as a label on every series of its container
        self.annotation_labels = {a: label_name(a) for a in annotation_labels}
        # container id -> (its Target's labels, the series' labels, {extra: label text})
        self.bases = {}
        self.headers = {name: _header(_family(name, kind, doc))
                        for name, (kind, doc, _extra) in METRICS.items()}

    def _bases(self):
        """(container's entry, its series' labels, its label texts) for the latest
        sample; a container's labels are the same every scrape, so they are made
        once and shared by its series (the writers only read them)."""
        bases, self.bases = self.bases, {}
        for cid, entry in self.collector.latest.items():
            labels, base, texts = bases.get(cid) or (None, None, None)
            if labels is not entry.labels:
                labels = entry.labels
                base = {k: labels[k] for k in BASE_LABELS}
                for key, label in self.annotation_labels.items():
                    base[label] = str(entry.annotations.get(key, ""))
                texts = {}
            self.bases[cid] = (labels, base, texts)
            yield entry, base, texts

    def collect(self):
        families = {name: _family(name, kind, doc)
                    for name, (kind, doc, _extra) in METRICS.items()}
        for entry, base, _ in self._bases():
            for name, points in entry.values.items():
                out = families[name].samples
                for extra, value in points:
                    out.append(Sample(name, {**base, **extra} if extra else base, float(value)))
        return [f for f in families.values() if f.samples]

    def text(self):
        """generate_latest(registry of this collector), byte for byte (a test holds
        it to that), at about a seventh of its cost: the library formats and
        escapes every label of every series on every render (~8 us a series,
        20-30 ms for 100 containers, most of a scrape nobody expected); here a
        container's label text is made once and reused while its labels stay."""
        lines = {name: [] for name in METRICS}
        for entry, base, texts in self._bases():
            for name, points in entry.values.items():
                out = lines[name]
                for extra, value in points:
                    key = tuple(extra.items()) if extra else ()
                    text = texts.get(key)
                    if text is None:
                        text = texts[key] = _label_text({**base, **extra} if extra else base)
                    out.append(f"{name}{text} {floatToGoString(value)}\n")
        return "".join(self.headers[name] + "".join(out)
                       for name, out in lines.items() if out).encode()


def registry_for(collector, annotation_labels=()):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SampleCollector(collector, annotation_labels))
    return reg


def render(registry):
    from prometheus_client import generate_latest
    return generate_latest(registry)


class Rendered:
    """The exposition text of the latest sample, rendered once per sample.

    generate_latest costs ~10 us a series (30-70 ms for 100 containers), too much
    for every pass and too slow to do while a scraper waits.  Scrapers keep a
    steady interval, so each one's next scrape is expected: the pass whose text
    would be the latest when it comes renders (`publish`), early enough to be
    done by then (`lead`), and the scrape takes the bytes at once.  A scrape
    nobody expected (a new scraper's first two, an irregular one) renders then
    (`scrape`).  Keys order the samples; a text is replaced
    only by a newer one.
    """

    FORGET = 3  # a scraper silent for 3 of its intervals is forgotten

    def __init__(self, make_body):
        self.make_body = make_body
        self.current = (None, None)  # (key, text or None), replaced whole
        self.scrapers = {}  # peer -> (time of its last scrape, its interval or None)
        self.renders = self.ahead = 0  # all renders, and those done before a scrape
        self.render_seconds = 0.0  # wall time of the last render
        self.lock = threading.Lock()  # held only to replace `current`
        self.rendering = threading.Lock()

    def _make(self):
        t0 = time.perf_counter()
        body = self.make_body()
        self.render_seconds = time.perf_counter() - t0
        self.renders += 1
        return body

    def _set(self, key, body):
        with self.lock:
            if self.current[0] is None or key >= self.current[0]:
                self.current = (key, body)

    def note(self, peer, now=None):
        """PEER scrapes now: its rhythm says when to expect it next."""
        now = time.monotonic() if now is None else now
        last = self.scrapers.get(peer)
        self.scrapers[peer] = (now, now - last[0] if last else None)

    def fresh(self, key):
        """The text of KEY's sample (or a newer one) if rendered, else None."""
        have, body = self.current
        return body if body is not None and have >= key else None

    def scrape(self, key):
        """The text of KEY's sample, rendered now if no one did yet."""
        body = self.fresh(key)
        if body is None:
            with self.rendering:  # one render at a time: a second scrape waits for it
                body = self.fresh(key)
                if body is None:
                    body = self._make()
                    self._set(key, body)
        return body

    def publish(self, key, interval, now=None, lead=None):
        """A pass that started at NOW took sample KEY: render it now if a scraper
        is due before the next pass's render would be done (NOW + interval +
        LEAD); else leave it to the scrape."""
        now = time.monotonic() if now is None else now
        lead = max(0.05, 2 * self.render_seconds) if lead is None else lead
        due = False
        for peer, (last, every) in list(self.scrapers.items()):
            if every is None:  # one scrape so far: no rhythm yet
                if now - last > 300:
                    del self.scrapers[peer]
            elif now - last > self.FORGET * every + interval:
                del self.scrapers[peer]
            elif now <= last + every < now + interval + lead:
                # windows overlap by LEAD: a scrape a little early or late (or
                # noted late, behind a pass) still finds its text rendered
                due = True
        body = None
        if due:
            body = self._make()
            self.ahead += 1
        self._set(key, body)
