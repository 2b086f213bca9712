"""Request/response connections over TCP or TLS, for protocols that are not
HTTP (SMTP and IMAP for e-mail, XMPP), through the host's
``kata:plugin/connections`` interface (WIT 0.1.3).

.. code-block:: python

    from kata import net

    with net.Connection.open("tcp://mail.example.org:587", timeout=10) as smtp:
        smtp.read_line()                       # "220 mail.example.org ESMTP"
        smtp.write_line("EHLO kata")
        ...
        smtp.write_line("STARTTLS")
        smtp.read_line()
        smtp.start_tls()
        # The host fills the secret in, then base64s it; the plugin never sees it.
        smtp.write_line("AUTH PLAIN {{base64:\\0kata@example.org\\0{{secret:smtp_password}}}}")

**Policy.** The host opens a connection only to a destination kata.toml
grants (``tcp://host:port`` or ``tls://host:port`` in the plugin's
``network``); a refused one raises :class:`Denied` (a
:class:`PermissionError`) whose text names the kata.toml line to add. TLS
and STARTTLS are done by the host. What you write may hold
``{{secret:NAME}}`` and ``{{base64:…}}`` placeholders; secret values in
what you read arrive redacted. Everything read from one connection counts
against ``limits.max_response`` (:class:`TooLarge` once spent).

A connection closes when it is dropped (or the ``with`` block ends), and
when the instance that opened it ends: keep what must outlive a call in
:data:`kata.state`, not the connection.
"""

import builtins

from . import _wit


class NetError(OSError):
    """Base of this module's errors."""


class Denied(NetError, PermissionError):
    """The workspace policy refused the destination or a placeholder."""


class IOFailure(NetError, builtins.ConnectionError):
    """Connecting, TLS or I/O failed (refused, reset, a bad certificate)."""


class Timeout(NetError, TimeoutError):
    """Nothing arrived (or could be written) within the timeout."""


class Closed(NetError, EOFError):
    """The peer closed the connection; nothing more can be read."""


class TooLarge(NetError):
    """This connection read all the plugin may read from one connection
    (``limits.max_response``)."""


def _error(value, url):
    name = type(value).__name__.removeprefix("ConnectionError_")
    text = getattr(value, "value", None)
    if name == "Denied":
        return Denied(f"connection to {url} refused by the workspace policy: {text}")
    if name == "Io":
        return IOFailure(f"connection to {url}: {text}")
    if name == "Timeout":
        return Timeout(f"connection to {url}: timed out")
    if name == "Closed":
        return Closed(f"connection to {url}: the peer closed the connection")
    return TooLarge(f"connection to {url}: read all the plugin may read from one connection (limits.max_response)")


def _ms(timeout):
    return max(0, min(int(timeout * 1000), 0xFFFFFFFF))


class Connection:
    """An open connection (:meth:`open` makes one)."""

    def __init__(self, raw, url):
        self._raw = raw
        #: The URL it was opened with.
        self.url = url

    @classmethod
    def open(cls, url, timeout=30.0):
        """Connect to ``url`` (``tcp://host:port`` or ``tls://host:port``),
        waiting at most ``timeout`` seconds."""
        if _wit.connections is None:
            raise NetError("connections need a world that imports kata:plugin/connections (WIT 0.1.3: channel, tools, service)")
        try:
            raw = _wit.connections.Connection.open(url, _ms(timeout))
        except _wit.Err as e:
            raise _error(e.value, url) from None
        return cls(raw, url)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except _wit.Err as e:
            raise _error(e.value, self.url) from None

    def write(self, data):
        """Write all of ``data`` (bytes, or text as UTF-8)."""
        if isinstance(data, str):
            data = data.encode()
        self._call(self._raw.write, bytes(data))

    def write_line(self, line):
        """Write ``line`` followed by ``\\r\\n``."""
        self.write(line + "\r\n")

    def read_line(self, timeout=30.0):
        """One line, without its ``\\r\\n`` or ``\\n``."""
        return self._call(self._raw.read_line, _ms(timeout))

    def read(self, max=65536, timeout=30.0):
        """Whatever has arrived, at most ``max`` bytes (never empty)."""
        return self._call(self._raw.read, int(max), _ms(timeout))

    def start_tls(self, timeout=30.0):
        """Upgrade a ``tcp://`` connection to TLS in place (STARTTLS)."""
        self._call(self._raw.start_tls, _ms(timeout))

    def close(self):
        """Close the connection."""
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
