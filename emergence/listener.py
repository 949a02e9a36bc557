"""The node's one HTTP listener, served with limits on slow and idle clients
(`access.py` says who may use a route; this module, how long a connection may
take doing it).  Each limit is a `[node]` key of node.toml (and a flag):

- `header_timeout`: from a request's first byte to the end of its headers
  (a client sending a byte of headers a second is cut off then);
- `idle_timeout`: a connection that holds no request, before the first and
  between keep-alive requests;
- `min_body_rate` bytes a second, over every `body_rate_window` seconds, while
  the node waits for a request's body (time the node itself is not reading,
  because its buffer is full, does not count);
- `uploads_per_client`: write requests with a body in flight at once from one
  address (more: 429, refused on the headers as any refusal, see access.py).

Cut connections are closed, not answered: a client that trickles bytes gets
nothing more to read.  aiohttp has the idle limit (its keep-alive timeout,
armed from the connection's start); the others are its request handler's
`data_received` and one timer a connection, here.
"""

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

LIMITS = {
    "header_timeout": 10.0,     # seconds from a request's first byte to its last header
    "idle_timeout": 60.0,       # seconds a connection may hold no request
    "min_body_rate": 1024,      # bytes a second a body must arrive at...
    "body_rate_window": 10.0,   # ...over this many seconds (a slower one is cut)
    "uploads_per_client": 16,   # write requests with a body at once, per client address
}


def limits_of(node_cfg):
    """LIMITS as [node] of NODE_CFG sets them, checked: one line per mistake."""
    from .errors import EmergenceError
    out = {}
    for key, default in LIMITS.items():
        value = node_cfg.get(key, default)
        try:
            value = type(default)(value)
            if value <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise EmergenceError(f"[node] {key} must be a positive number, not "
                                 f"{value!r}") from None
        out[key] = value
    return out


class _Handler(RequestHandler):
    """aiohttp's request handler, with the header deadline and the body rate."""

    limits = LIMITS

    def connection_made(self, transport):
        self._cut_header = None  # the header deadline's timer, while one runs
        self._rate_timer = None
        self._body_seen = 0       # bytes received while a request was in progress
        self._samples = []        # (active seconds, body bytes) once a second
        self._active = 0.0
        super().connection_made(transport)

    def connection_lost(self, exc):
        for t in (self._cut_header, self._rate_timer):
            if t is not None:
                t.cancel()
        self._cut_header = self._rate_timer = None
        super().connection_lost(exc)

    def _between_requests(self):
        return not self._request_in_progress and not self._messages

    def data_received(self, data):
        between = self._between_requests()
        if between and self._cut_header is None and not self._force_close:
            self._cut_header = self._loop.call_later(self.limits["header_timeout"],
                                                     self._header_deadline)
        elif not between:
            self._body_seen += len(data)
        super().data_received(data)
        if self._cut_header is not None and not self._between_requests():
            self._cut_header.cancel()  # the headers are in
            self._cut_header = None
        if self._request_in_progress or self._messages:
            self._watch_body()

    def _header_deadline(self):
        self._cut_header = None
        if self._between_requests() and self._waiter is not None and not self._waiter.done():
            self.force_close()  # still no whole request: drop it, answer nothing

    # -- the body rate: one tick a second while a request is in progress --
    def _watch_body(self):
        if self._rate_timer is None and not self._force_close:
            self._rate_timer = self._loop.call_later(1.0, self._tick)

    def _waiting_for_body(self):
        req = self._current_request
        if req is None or req.content.is_eof():
            return False
        t = self.transport
        # the node's own buffer full (the handler is busy): not the client's fault
        return t is not None and not self._reading_paused and not self._buffer_paused and (
            not hasattr(t, "is_reading") or t.is_reading())

    def _tick(self):
        self._rate_timer = None
        if self._force_close or self.transport is None:
            return
        if not (self._request_in_progress or self._messages):
            self._samples.clear()
            return
        if self._waiting_for_body():
            self._active += 1.0
            self._samples.append((self._active, self._body_seen))
            window = self.limits["body_rate_window"]
            while len(self._samples) > 1 and self._samples[1][0] <= self._active - window:
                self._samples.pop(0)
            first = self._samples[0]
            if self._active - first[0] >= window and \
                    self._body_seen - first[1] < self.limits["min_body_rate"] * window:
                self.force_close()  # slower than min_body_rate for a whole window
                return
        self._rate_timer = self._loop.call_later(1.0, self._tick)


class _Server(web.Server):
    def __init__(self, *args, limits, **kwargs):
        super().__init__(*args, **kwargs)
        self._handler_class = type("Handler", (_Handler,), {"limits": limits})

    def __call__(self):
        return self._handler_class(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An AppRunner whose connections keep LIMITS."""

    def __init__(self, app, limits=None, **kwargs):
        limits = dict(limits or LIMITS)
        kwargs.setdefault("keepalive_timeout", limits["idle_timeout"])
        kwargs.setdefault("access_log", None)
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self):
        made = await super()._make_server()
        return _Server(made.request_handler, request_factory=made.request_factory,
                       handler_cancellation=made.handler_cancellation, loop=made._loop,
                       limits=self.limits, **made._kwargs)


async def serve(app, host, port, ssl_context=None, limits=None):
    """Start serving APP on HOST:PORT under LIMITS; the runner (cleanup() stops it)."""
    runner = Runner(app, limits)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner
