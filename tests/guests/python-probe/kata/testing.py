"""A stand-in host for native unit tests.

.. code-block:: python

    import unittest
    import kata
    from kata.testing import FakeHost

    import app

    class PollTest(unittest.TestCase):
        def test_poll(self):
            def server(req):
                self.assertEqual(req.header("authorization"), "Bearer {{secret:token}}")
                return 200, [{"id": "7", "chat": "c1", "from": "ann", "text": "hi"}]

            with FakeHost(config={"base_url": "https://chat.example.org/api"}, http=server) as host:
                result = app.Channel().poll(None)
            self.assertEqual(result.cursor, "7")
            self.assertEqual(host.requests[0].url, "https://chat.example.org/api/messages?after=")

Inside the block, :mod:`kata`'s helpers talk to this object instead of the
kata host: configuration from ``config``, state in :attr:`state`, log lines in
:attr:`logs`, messages a service emits in :attr:`emitted`, a fixed clock,
and every HTTP request handed to ``http`` (a function of a
:class:`kata.http.Request`), which returns a :class:`kata.http.Response`, a
``(status, body)`` or ``(status, body, headers)`` tuple (a body that is not
bytes or text is sent as JSON), or raises (e.g. :class:`kata.http.RequestDenied`
to act out a refused host). Secrets are not filled in: requests carry their
``{{secret:NAME}}`` placeholders, as the plugin always sees them.
"""

import json

from . import _host
from . import http as _http


class FakeHost:
    """A host for one test (a context manager; nests)."""

    def __init__(self, config=None, state=None, http=None, now_ms=1_700_000_000_000):
        #: The plugin's configuration (text values).
        self.config = {k: str(v) for k, v in (config or {}).items()}
        #: The plugin's state (bytes values).
        self.state = dict(state or {})
        #: ``(level name, text)`` of every log line.
        self.logs = []
        #: Every message emitted (services).
        self.emitted = []
        #: Every HTTP request sent (:class:`kata.http.Request`).
        self.requests = []
        #: What :func:`kata.now_ms` returns.
        self.clock_ms = now_ms
        self._http = http
        self._saved = None

    def __enter__(self):
        self._saved = _host.backend
        _host.backend = self
        return self

    def __exit__(self, *exc):
        _host.backend = self._saved
        return False

    # The backend interface (see kata._host).

    def log(self, level, message):
        self.logs.append((level.name.lower(), message))

    def config_get(self, key):
        return self.config.get(key)

    def state_get(self, key):
        return self.state.get(key)

    def state_set(self, key, value):
        self.state[key] = bytes(value)

    def state_delete(self, key):
        self.state.pop(key, None)

    def state_keys(self, prefix):
        return sorted(k for k in self.state if k.startswith(prefix))[:1000]

    def now_ms(self):
        return self.clock_ms

    def emit(self, message):
        self.emitted.append(message)

    def http(self, request):
        self.requests.append(request)
        if self._http is None:
            raise _http.RequestDenied(
                f"request to {request.shown_url} was denied by the workspace policy (kata.toml): "
                "this FakeHost has no http= handler",
                url=request.shown_url,
            )
        answer = self._http(request)
        if isinstance(answer, _http.Response):
            if not answer.url:
                answer.url = request.shown_url
            return answer
        status, body, headers = (tuple(answer) + (None,))[:3] if isinstance(answer, tuple) else (200, answer, None)
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers = {"content-type": "application/json", **(headers or {})}
        if isinstance(body, str):
            body = body.encode()
        if len(body) > request.max_body:
            raise _http.TooLarge(f"the response from {request.shown_url} is larger than {request.max_body} bytes", url=request.shown_url)
        return _http.Response(status, headers or {}, body, request.shown_url)
