"""What a run tells people and CI systems: one line per event (a live
status line on a TTY), JUnit XML, a JSON report, GitHub Actions'
step summary and ::error annotations, GitLab's collapsible sections.
Logs are already masked when they get here."""

import os
import sys
import time

TAIL_LINES = 40


def xml_text(log):
    """LOG as text XML 1.0 can hold: colour codes and other control bytes that
    test runners print would make the whole report unreadable, so they go."""
    text = log.decode(errors="replace")
    return "".join(c for c in text if c in "\t\n\r" or (" " <= c and c not in "\ufffe\uffff"))


def tail(log, lines=TAIL_LINES):
    return "\n".join(xml_text(log).splitlines()[-lines:])


class LineView:
    """Plain lines for CI logs; on a TTY a status line of what is running."""

    def __init__(self, stream=None):
        import threading
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.running = {}
        self.gitlab = os.environ.get("GITLAB_CI") == "true"
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        if self.tty:  # the running stages' clocks tick between events
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self):
        while not self.stopped.wait(0.5):
            with self.lock:
                self._status()

    def close(self):
        self.stopped.set()
        with self.lock:
            if self.tty:
                self.stream.write("\r\033[K")
                self.stream.flush()

    def _status(self):
        if self.tty:
            now = time.monotonic()
            names = ", ".join(f"{n} {now - t:.0f}s" for n, t in self.running.items())
            self.stream.write(f"\r\033[K  running: {names}" if names else "\r\033[K")
            self.stream.flush()

    def __call__(self, kind, r):
        with self.lock:
            self._event(kind, r)

    def _event(self, kind, r):
        if self.tty:
            self.stream.write("\r\033[K")
        if kind == "line":  # a cluster stage's output as it runs (masked already)
            r, line = r  # no control bytes: a worker's output cannot drive the terminal
            text = xml_text(line.encode()).replace("\r", "")
            self.stream.write(f"{r.name} | {text}\n")
        elif kind == "start":
            self.running[r.name] = time.monotonic()
            self.stream.write(f"{r.name}: started ({r.key[7:19]})\n")
        elif kind == "retry":
            self.stream.write(f"{r.name}: attempt {len(r.attempts)} {r.message}; retrying\n")
        else:
            self.running.pop(r.name, None)
            extra = " (cached)" if r.cache_hit else ""
            tries = f", {len(r.attempts)} attempts" if len(r.attempts) > 1 else ""
            msg = f": {r.message}" if r.message and not r.cache_hit else ""
            self.stream.write(f"{r.name}: {r.state}{extra} in {r.duration:.2f} s{tries}{msg}\n")
            if r.state == "failed" and r.log:
                if self.gitlab:
                    sid = f"stage_{r.name}".replace("-", "_")
                    self.stream.write(f"\033[0Ksection_start:{int(time.time())}:{sid}"
                                      f"[collapsed=true]\r\033[0K{r.name} log\n")
                for line in tail(r.log).splitlines():
                    self.stream.write(f"  | {line}\n")
                if self.gitlab:
                    self.stream.write(f"\033[0Ksection_end:{int(time.time())}:{sid}\r\033[0K\n")
        self._status()
        self.stream.flush()


def summary_line(results):
    counts = {}
    for r in results.values():
        s = "cached" if r.cache_hit else r.state
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def write_json(path, pipeline, results, exit_code, total):
    import json
    doc = {"pipeline": pipeline.path, "exit_code": exit_code, "duration": round(total, 4),
           "stages": [r.as_json() for r in results.values()]}
    _atomic(path, json.dumps(doc, indent=2).encode() + b"\n")


def write_junit(path, pipeline, results, total):
    """One testsuite (the pipeline), one testcase per stage."""
    import xml.etree.ElementTree as ET
    rs = list(results.values())
    failures = sum(r.state == "failed" for r in rs)
    skipped = sum(r.state == "skipped" or r.cache_hit for r in rs)
    name = os.path.basename(pipeline.path)
    attrs = {"name": name, "tests": str(len(rs)), "failures": str(failures), "errors": "0",
             "skipped": str(skipped), "time": f"{total:.3f}"}
    top = ET.Element("testsuites", attrs)
    suite = ET.SubElement(top, "testsuite", attrs)
    for r in rs:
        tc = ET.SubElement(suite, "testcase", {"name": r.name, "classname": name,
                                               "time": f"{r.duration:.3f}"})
        if r.state == "failed":
            kind = "timeout" if any(a["timed_out"] for a in r.attempts) else "exit"
            message = xml_text(f"stage {r.name} {r.message}".encode())
            f = ET.SubElement(tc, "failure", {"message": message, "type": kind})
            f.text = tail(r.log)
        elif r.cache_hit:
            ET.SubElement(tc, "skipped", {"message": f"cache hit: {r.key}"})
        elif r.state == "skipped":
            ET.SubElement(tc, "skipped", {"message": r.message})
        if r.log:
            ET.SubElement(tc, "system-out").text = xml_text(r.log)
    _atomic(path, ET.tostring(top, encoding="utf-8", xml_declaration=True))


def github(results, total, environ=None):
    """::error lines on stdout; a Markdown table appended to $GITHUB_STEP_SUMMARY."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") != "true":
        return
    for r in results.values():
        if r.state == "failed":
            sys.stdout.write(f"::error title=stage {r.name} failed::{r.message}\n")
    path = env.get("GITHUB_STEP_SUMMARY")
    if path:
        lines = ["## emergence pipeline", "", "| stage | state | time | cache |",
                 "|---|---|---|---|"]
        for r in results.values():
            lines.append(f"| {r.name} | {r.state} | {r.duration:.2f} s | "
                         f"{'hit' if r.cache_hit else ''} |")
        lines.append(f"\n{summary_line(results)} in {total:.2f} s\n")
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")


def _atomic(path, data):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
