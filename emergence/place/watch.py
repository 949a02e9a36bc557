"""Waking on etcd changes instead of polling: a thread holds an etcd watch
on a key prefix and sets an Event on every change, so a worker sees its
assignment, and the leader a new task or result, within a round trip.

The watch is etcd's gRPC-gateway stream (POST /v3/watch), read with the
cluster client's own session (TLS, etcd user).  etcd3gw's Watcher reads it
with no timeout, so a cut link would leave it waiting for ever without a
word; here the stream has a read timeout, and whenever it ends — timeout,
error, etcd restarting — the Event is set too (the owner then reads the
state afresh, so nothing between two watches is missed) and the watch is
made again after a short back-off.  The owners still look on their own
every few seconds, for deadlines and as a last resort.
"""

import base64
import json
import socket
import threading

READ_TIMEOUT = 30.0  # no event for this long: make the watch again (cheap)


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def _range_end(prefix):
    """The key just past every key under PREFIX (etcd's prefix range)."""
    b = bytearray(prefix.encode())
    b[-1] += 1
    return bytes(b).decode()


class PrefixWatch:
    """Set WAKE on every change under PREFIX of CLUSTER's etcd until stop();
    with SECTIONS, only on changes of keys under PREFIX + one of them."""

    def __init__(self, cluster, prefix, wake, sections=None, read_timeout=READ_TIMEOUT):
        self.cluster, self.prefix, self.wake = cluster, prefix, wake
        self.sections = tuple(prefix + s for s in sections) if sections else None
        self.read_timeout = read_timeout
        self.stopping = threading.Event()
        self.response = None
        self.watches = 0  # how many streams were opened (a test reads it)
        self.thread = threading.Thread(target=self._run, name=f"watch {prefix}", daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        r = self.response
        # close() would wait for the reading thread's lock: shut the socket
        # down instead, which ends that read at once
        sock = getattr(getattr(getattr(r, "raw", None), "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _wanted(self, event):
        if self.sections is None:
            return True
        key = base64.b64decode(event.get("kv", {}).get("key", "")).decode("utf-8", "replace")
        return key.startswith(self.sections)

    def _run(self):
        client = self.cluster.client
        body = {"create_request": {"key": _b64(self.prefix),
                                   "range_end": _b64(_range_end(self.prefix))}}
        backoff = 0.2
        while not self.stopping.is_set():
            try:
                self.response = client.session.post(
                    client.get_url("/watch"), json=body, stream=True,
                    timeout=(3.0, self.read_timeout))
                self.watches += 1
                if self.response.status_code != 200:
                    raise OSError(f"etcd watch: HTTP {self.response.status_code}")
                for line in self.response.iter_lines(chunk_size=None):
                    if self.stopping.is_set():
                        return
                    if not line.strip():
                        continue
                    events = json.loads(line).get("result", {}).get("events") or ()
                    if any(self._wanted(e) for e in events):
                        self.wake.set()
                    backoff = 0.2
            except Exception:
                pass  # timeout, etcd away, closed by stop(): look again, then re-watch
            finally:
                r, self.response = self.response, None
                if r is not None:
                    r.close()
            if self.stopping.is_set():
                return
            self.wake.set()
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)
