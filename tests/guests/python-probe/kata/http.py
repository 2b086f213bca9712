"""HTTP for kata plugins, shaped like ``requests``, over standard ``wasi:http``.

.. code-block:: python

    from kata import http

    resp = http.get("https://api.example.org/updates", params={"after": "41"},
                    headers={"Authorization": "Bearer {{secret:token}}"}, timeout=30)
    resp.raise_for_status()          # HTTPError unless 2xx
    for item in resp.json():
        ...
    http.post("https://api.example.org/send", json={"text": "hi"})

**Policy.** The host lets a request through only to the hosts kata.toml
grants the plugin (``[plugins.NAME] network``). A refused request raises
:class:`RequestDenied` (a :class:`PermissionError`) whose text is kata's
reason: ``request to https://evil.example/x was denied by the workspace
policy (kata.toml): grant its host in [plugins.NAME] network``. Other
failures to get a response raise :class:`ConnectionError` (a
:class:`builtins.ConnectionError`) or :class:`Timeout` with the host's
description of the ``wasi:http`` error code. Every error derives from
:class:`RequestException` (an :class:`OSError`), like requests'.

**Secrets.** Write ``{{secret:NAME}}`` (or ``kata.secret("NAME")``) in the
URL's path or query or in a header value: the client passes placeholders
through byte for byte (``params`` and form bodies never percent-encode them)
and the host substitutes the value for granted hosts only. The plugin never
sees it. In an f-string, write the placeholder through ``kata.secret(...)``:
``f"Bearer {{secret:token}}"`` would lose its braces.

**Differences from requests.** Bodies are read completely, up to
:data:`MAX_BODY_BYTES` (``max_body=`` changes it); redirects are not
followed, so :attr:`Response.ok` means 2xx; there are no sessions, cookies
or streaming. ``timeout`` (seconds) bounds the wait for the first byte and
between body chunks.
"""

import builtins
import json as _json
import re
import urllib.parse

from . import _host, _wit

#: The default limit on a response body: 16 MiB.
MAX_BODY_BYTES = 16 << 20

# The most bytes `blocking-write-and-flush` accepts in one call.
_WRITE_CHUNK = 4096
# How many bytes to ask for per read of a response body.
_READ_CHUNK = 64 * 1024

_PLACEHOLDER = re.compile(r"\{\{secret:[^{}\s]+\}\}")


class RequestException(OSError):
    """Base of every error of this module. ``url`` is the request's URL
    without its query (safe to log); ``response`` is set for
    :class:`HTTPError`."""

    def __init__(self, message, url=None, response=None):
        super().__init__(message)
        self.url = url
        self.response = response


class RequestDenied(RequestException, PermissionError):
    """The workspace policy (kata.toml) refused the destination
    (``wasi:http`` error code ``HTTP-request-denied``)."""


class ConnectionError(RequestException, builtins.ConnectionError):
    """No response: DNS, connection refused, TLS, a broken body stream."""


class Timeout(ConnectionError, TimeoutError):
    """The server did not answer (or connect, or resolve) in time."""


class InvalidURL(RequestException, ValueError):
    """The URL could not be split into scheme, host and path."""


class InvalidRequest(RequestException, ValueError):
    """The request could not be built: a bad header name or value, a body
    that is not bytes, text or JSON."""


class TooLarge(RequestException):
    """The response body is larger than ``max_body``."""


class HTTPError(RequestException):
    """Raised by :meth:`Response.raise_for_status` for a status other than 2xx."""


def url_without_query(url):
    """``url`` without its query and fragment: safe to show in errors and logs."""
    return re.split(r"[?#]", url, maxsplit=1)[0]


def split_url(url):
    """Split ``url`` into ``(scheme, authority, path_with_query)`` without
    decoding or encoding anything, so placeholders pass through unchanged.
    The fragment is dropped; the path always starts with ``/``."""
    shown = url_without_query(url)

    def invalid(reason):
        return InvalidURL(f"invalid URL {shown}: {reason}", url=shown)

    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise invalid("contains whitespace or control characters")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise invalid("expected scheme://host/path")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise invalid("bad scheme")
    end = len(rest)
    for c in "/?#":
        i = rest.find(c)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    if not authority:
        raise invalid("missing host")
    tail = tail.split("#", 1)[0]
    return scheme, authority, tail if tail.startswith("/") else "/" + tail


def quote(text):
    """Percent-encode ``text`` for a query or form value, keeping
    ``{{secret:NAME}}`` placeholders as they are."""
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(text):
        out.append(urllib.parse.quote(text[pos : m.start()], safe=""))
        out.append(m.group(0))
        pos = m.end()
    out.append(urllib.parse.quote(text[pos:], safe=""))
    return "".join(out)


def encode_params(params):
    """``{"a": "1", "b": ["x", "y"]}`` (or a list of pairs) as ``a=1&b=x&b=y``;
    None values are left out, placeholders are kept."""
    items = params.items() if hasattr(params, "items") else params
    pairs = []
    for key, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None:
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            pairs.append(f"{quote(str(key))}={quote(str(v))}")
    return "&".join(pairs)


class Headers(dict):
    """Response headers: names lowercase, lookups case-insensitive; a header
    sent several times holds its values joined with ``", "``."""

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)


class Request:
    """One request, as :func:`request` builds it (and
    :class:`kata.testing.FakeHost` hands it to a test's handler)."""

    def __init__(self, method, url, headers=(), body=None, timeout=None, max_body=MAX_BODY_BYTES):
        self.method = method.upper()
        self.url = url
        self.headers = list(headers)
        self.body = body
        self.timeout = timeout
        self.max_body = max_body

    @property
    def shown_url(self):
        """The URL without its query."""
        return url_without_query(self.url)

    def header(self, name):
        """The first value of header ``name`` (case-insensitive), or None."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def json(self):
        """The body decoded as JSON."""
        return _json.loads(self.body or b"null")

    def __repr__(self):
        return f"<Request {self.method} {self.shown_url}>"


class Response:
    """A complete response."""

    def __init__(self, status, headers=None, content=b"", url=""):
        #: The status code, e.g. 200.
        self.status = int(status)
        #: The headers (:class:`Headers`).
        self.headers = headers if isinstance(headers, Headers) else Headers((k.lower(), v) for k, v in (headers or {}).items())
        #: The whole body.
        self.content = bytes(content)
        #: The request's URL without its query.
        self.url = url

    @property
    def status_code(self):
        """The status code (requests' name for :attr:`status`)."""
        return self.status

    @property
    def ok(self):
        """Whether the status is 2xx (redirects are not followed)."""
        return 200 <= self.status < 300

    @property
    def text(self):
        """The body as text (UTF-8; invalid bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self):
        """The body decoded as JSON (:class:`json.JSONDecodeError`, a
        :class:`ValueError`, when it is not)."""
        return _json.loads(self.content)

    def header(self, name, default=None):
        """The value of header ``name`` (case-insensitive)."""
        return self.headers.get(name, default)

    def raise_for_status(self):
        """Raise :class:`HTTPError` unless the status is 2xx; return self."""
        if not self.ok:
            body = self.text
            if len(body) > 200:
                body = body[:200] + "…"
            raise HTTPError(f"HTTP {self.status} from {self.url}: {body}".rstrip(": "), url=self.url, response=self)
        return self

    def __repr__(self):
        return f"<Response [{self.status}]>"


def request(method, url, *, params=None, headers=None, data=None, json=None, timeout=None, max_body=MAX_BODY_BYTES):
    """Send a request and read the whole response.

    ``params`` are appended to the query; ``headers`` is a dict or a list of
    pairs; the body is ``data`` (bytes, text, or a dict sent as a form) or
    ``json`` (serialised, with ``content-type: application/json`` unless a
    content type is given). Any status is a :class:`Response`; errors are
    the failures to get one (see the module's docs).
    """
    if params:
        query = encode_params(params)
        if query:
            base, _, fragment = url.partition("#")
            url = base + ("&" if "?" in base else "?") + query + ("#" + fragment if fragment else "")
    pairs = list(headers.items()) if hasattr(headers, "items") else list(headers or ())
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, (str, bytes)):
            raise InvalidRequest(f"header {name!r}: names and values must be text", url=url_without_query(url))

    def has(name):
        return any(n.lower() == name for n, _ in pairs)

    body = None
    if json is not None:
        if data is not None:
            raise InvalidRequest("give either data= or json=, not both", url=url_without_query(url))
        try:
            body = _json.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as e:
            raise InvalidRequest(f"cannot serialise the JSON body: {e}", url=url_without_query(url)) from None
        if not has("content-type"):
            pairs.append(("content-type", "application/json"))
    elif isinstance(data, dict):
        body = encode_params(data).encode()
        if not has("content-type"):
            pairs.append(("content-type", "application/x-www-form-urlencoded"))
    elif isinstance(data, str):
        body = data.encode()
    elif isinstance(data, (bytes, bytearray, memoryview)):
        body = bytes(data)
    elif data is not None:
        raise InvalidRequest(f"data= must be bytes, text or a dict, not {type(data).__name__}", url=url_without_query(url))
    split_url(url)  # fail early, the same way natively and in the component
    return _host.backend.http(Request(method, url, pairs, body, timeout, max_body))


def get(url, **kwargs):
    """``GET url`` (see :func:`request`)."""
    return request("GET", url, **kwargs)


def head(url, **kwargs):
    """``HEAD url`` (see :func:`request`)."""
    return request("HEAD", url, **kwargs)


def post(url, data=None, json=None, **kwargs):
    """``POST url`` (see :func:`request`)."""
    return request("POST", url, data=data, json=json, **kwargs)


def put(url, data=None, json=None, **kwargs):
    """``PUT url`` (see :func:`request`)."""
    return request("PUT", url, data=data, json=json, **kwargs)


def patch(url, data=None, json=None, **kwargs):
    """``PATCH url`` (see :func:`request`)."""
    return request("PATCH", url, data=data, json=json, **kwargs)


def delete(url, **kwargs):
    """``DELETE url`` (see :func:`request`)."""
    return request("DELETE", url, **kwargs)


# ---------------------------------------------------------------------------
# wasi:http error codes, as people read them.

_TEXTS = {
    "DnsTimeout": "the DNS lookup timed out",
    "DnsError": "the host name could not be resolved",
    "DestinationNotFound": "the host was not found",
    "DestinationUnavailable": "the host is unavailable",
    "DestinationIpProhibited": "the destination address is not allowed",
    "DestinationIpUnroutable": "the destination address cannot be reached",
    "ConnectionRefused": "the server refused the connection",
    "ConnectionTerminated": "the connection was closed unexpectedly",
    "ConnectionTimeout": "connecting timed out",
    "ConnectionReadTimeout": "the server stopped sending (read timeout)",
    "ConnectionWriteTimeout": "the server stopped taking data (write timeout)",
    "ConnectionLimitReached": "too many requests or connections (a rate or connection limit was reached)",
    "TlsProtocolError": "the TLS handshake failed",
    "TlsCertificateError": "the server's TLS certificate was not accepted",
    "TlsAlertReceived": "the server ended TLS with an alert",
    "HttpRequestDenied": "the request was denied by the workspace policy (kata.toml)",
    "HttpRequestLengthRequired": "the server requires a Content-Length",
    "HttpRequestBodySize": "the request body does not match its declared size",
    "HttpRequestMethodInvalid": "the request method is invalid",
    "HttpRequestUriInvalid": "the request URL is invalid",
    "HttpRequestUriTooLong": "the request URL is too long",
    "HttpRequestHeaderSectionSize": "the request headers are too large",
    "HttpRequestHeaderSize": "the request headers are too large",
    "HttpRequestTrailerSectionSize": "the request trailers are too large",
    "HttpRequestTrailerSize": "the request trailers are too large",
    "HttpResponseIncomplete": "the response ended before it was complete",
    "HttpResponseHeaderSectionSize": "the response headers are too large",
    "HttpResponseHeaderSize": "the response headers are too large",
    "HttpResponseBodySize": "the response body is larger than allowed (limits.max_response) or than it said",
    "HttpResponseTrailerSectionSize": "the response trailers are too large",
    "HttpResponseTrailerSize": "the response trailers are too large",
    "HttpResponseTransferCoding": "the response uses a transfer coding that is not supported",
    "HttpResponseContentCoding": "the response uses a content coding that is not supported",
    "HttpResponseTimeout": "the server did not answer in time",
    "HttpUpgradeFailed": "the protocol upgrade failed",
    "HttpProtocolError": "the HTTP exchange broke the protocol",
    "LoopDetected": "a request loop was detected",
    "ConfigurationError": "the HTTP client is misconfigured",
    "InternalError": "the HTTP client failed internally",
}

_TIMEOUTS = {"DnsTimeout", "ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout", "HttpResponseTimeout"}


def _code_name(code):
    return type(code).__name__.removeprefix("ErrorCode_")


def describe_error_code(code):
    """A ``wasi:http`` ``error-code`` value as a short sentence, with what the
    code carries that helps, e.g. ``the host name could not be resolved
    (failed to lookup address information)``."""
    name = _code_name(code)
    text = _TEXTS.get(name, name)
    value = getattr(code, "value", None)
    detail = None
    if name == "DnsError":
        detail = getattr(value, "rcode", None)
    elif name == "TlsAlertReceived":
        detail = getattr(value, "alert_message", None)
    elif name in ("HttpRequestBodySize", "HttpResponseBodySize") and value is not None:
        detail = f"{value} bytes"
    elif name in ("HttpResponseTransferCoding", "HttpResponseContentCoding", "InternalError"):
        detail = value
    return f"{text} ({detail})" if detail else text


def error_from_code(code, url):
    """The exception for a ``wasi:http`` error code of a request to ``url``
    (already without its query)."""
    name = _code_name(code)
    if name == "HttpRequestDenied":
        return RequestDenied(
            f"request to {url} was denied by the workspace policy (kata.toml): grant its host in [plugins.NAME] network", url=url
        )
    text = f"request to {url} failed: {describe_error_code(code)}"
    return Timeout(text, url=url) if name in _TIMEOUTS else ConnectionError(text, url=url)


# ---------------------------------------------------------------------------
# The wasi:http client (inside the component).

_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


def _wasi_method(name):
    t = _wit.http_types
    if name in _METHODS:
        return getattr(t, "Method_" + name.capitalize())()
    return t.Method_Other(name)


def _wasi_scheme(scheme):
    t = _wit.http_types
    s = scheme.lower()
    if s == "http":
        return t.Scheme_Http()
    if s == "https":
        return t.Scheme_Https()
    return t.Scheme_Other(scheme)


def _stream_error_text(err):
    if isinstance(err, _wit.streams.StreamError_Closed):
        return "the connection closed"
    code = _wit.http_types.http_error_code(err.value)
    if code is not None:
        return describe_error_code(code)
    return f"I/O error: {err.value.to_debug_string()}"


def _write_body(body, data):
    """Write ``data`` to the outgoing body and finish it; the error text or None."""
    Err = _wit.Err
    try:
        if data:
            with body.write() as stream:
                for i in range(0, len(data), _WRITE_CHUNK):
                    stream.blocking_write_and_flush(data[i : i + _WRITE_CHUNK])
        _wit.http_types.OutgoingBody.finish(body, None)
    except Err as e:
        value = e.value
        if value is None:
            return "the request body stream is unavailable"
        if isinstance(value, (_wit.streams.StreamError_Closed, _wit.streams.StreamError_LastOperationFailed)):
            return _stream_error_text(value)
        return describe_error_code(value)
    return None


def _send_wasi(req):
    t = _wit.http_types
    Err, Ok = _wit.Err, _wit.Ok
    shown = req.shown_url
    scheme, authority, path = split_url(req.url)
    fields = [(n, v.encode() if isinstance(v, str) else bytes(v)) for n, v in req.headers]
    if req.body is not None and req.header("content-length") is None:
        fields.append(("content-length", str(len(req.body)).encode()))
    try:
        headers = t.Fields.from_list(fields)
    except Err as e:
        raise InvalidRequest(f"invalid header for {shown}: {type(e.value).__name__.removeprefix('HeaderError_')}", url=shown) from None
    request = t.OutgoingRequest(headers)
    try:
        request.set_method(_wasi_method(req.method))
    except Err:
        raise InvalidRequest(f"bad method {req.method!r}", url=shown) from None
    for setter, value, what in (
        (request.set_scheme, _wasi_scheme(scheme), "scheme"),
        (request.set_authority, authority, "host"),
        (request.set_path_with_query, path, "path"),
    ):
        try:
            setter(value)
        except Err:
            raise InvalidURL(f"invalid URL {shown}: the host rejected the {what}", url=shown) from None
    body = request.body()
    options = None
    if req.timeout is not None:
        options = t.RequestOptions()
        nanos = max(0, int(req.timeout * 1_000_000_000))
        # Hosts may not support these options; then their defaults apply.
        for setter in (options.set_first_byte_timeout, options.set_between_bytes_timeout):
            try:
                setter(nanos)
            except Err:
                pass
    try:
        future = _wit.outgoing_handler.handle(request, options)
    except Err as e:
        raise error_from_code(e.value, shown) from None
    # Write the body after `handle` so a large body streams instead of
    # filling a buffer nobody reads yet. If the host refused the request the
    # write fails; the response then says why, so look at it first.
    written = _write_body(body, req.body)
    with future:
        with future.subscribe() as pollable:
            pollable.block()
        got = future.get()
    if got is None:
        raise ConnectionError(f"request to {shown} failed: the response was not ready after waiting", url=shown)
    if isinstance(got, Err):
        raise ConnectionError(f"request to {shown} failed: the response was already taken", url=shown)
    inner = got.value if isinstance(got, Ok) else got
    if isinstance(inner, Err):
        raise error_from_code(inner.value, shown)
    response = inner.value if isinstance(inner, Ok) else inner
    with response:
        if written is not None:
            raise ConnectionError(f"request to {shown} failed: {written}", url=shown)
        return _read_response(response, shown, req.max_body)


def _read_response(response, shown, limit):
    Err = _wit.Err
    status = response.status()
    headers = Headers()
    with response.headers() as fields:
        for name, value in fields.entries():
            name = name.lower()
            value = value.decode("utf-8", "replace")
            headers[name] = f"{dict.get(headers, name)}, {value}" if name in headers else value
    try:
        incoming = response.consume()
    except Err:
        raise ConnectionError(f"request to {shown} failed: the response body was already consumed", url=shown) from None
    chunks, total = [], 0
    # Child resources go first: the stream, then the body (the response is
    # dropped by the caller).
    with incoming:
        try:
            stream = incoming.stream()
        except Err:
            raise ConnectionError(f"request to {shown} failed: the response body stream is unavailable", url=shown) from None
        with stream:
            while True:
                try:
                    chunk = stream.blocking_read(_READ_CHUNK)
                except Err as e:
                    if isinstance(e.value, _wit.streams.StreamError_Closed):
                        break
                    raise ConnectionError(f"request to {shown} failed: {_stream_error_text(e.value)}", url=shown) from None
                total += len(chunk)
                if total > limit:
                    raise TooLarge(f"the response from {shown} is larger than {limit} bytes", url=shown)
                chunks.append(chunk)
    return Response(status, headers, b"".join(chunks), shown)
