"""kata's errors as Python exceptions.

Raise them from your plugin's methods; at the component boundary kata turns
them into the WIT ``result`` errors the host understands (``channel-error``,
``tool-error``, a service's error text). Natively (in unit tests) they stay
ordinary exceptions, so ``assertRaises(kata.AuthFailed)`` works.
"""

from . import _wit


class ChannelError(Exception):
    """Why a channel operation failed; the host decides what to do next from
    the subclass: it retries :class:`NetworkError` and :class:`RateLimited`
    with backoff, stops on :class:`AuthFailed` and :class:`InvalidConfig`
    until the user fixes the workspace, and gives up on :class:`Fatal`."""

    def to_wit(self):
        """The WIT ``channel-error`` value."""
        raise NotImplementedError


class AuthFailed(ChannelError):
    """The credentials were refused (e.g. HTTP 401). The text says which."""

    def to_wit(self):
        return _wit.types.ChannelError_AuthFailed(str(self))


class RateLimited(ChannelError):
    """The network asked us to slow down; retry after ``retry_after_ms``."""

    def __init__(self, retry_after_ms=1000, message=None):
        self.retry_after_ms = int(retry_after_ms)
        super().__init__(message or f"rate limited: retry after {self.retry_after_ms} ms")

    def to_wit(self):
        return _wit.types.ChannelError_RateLimited(max(0, self.retry_after_ms))


class NetworkError(ChannelError):
    """A transient failure (connection refused, timeout, HTTP 5xx); retried."""

    def to_wit(self):
        return _wit.types.ChannelError_Network(str(self))


class InvalidConfig(ChannelError):
    """The plugin's configuration in kata.toml is missing or wrong; the text
    names the key and what is expected."""

    def to_wit(self):
        return _wit.types.ChannelError_InvalidConfig(str(self))


class Unsupported(ChannelError):
    """The plugin does not implement this operation."""

    def __init__(self, message="unsupported"):
        super().__init__(message)

    def to_wit(self):
        return _wit.types.ChannelError_Unsupported()


class Fatal(ChannelError):
    """Anything else that retrying will not fix."""

    def to_wit(self):
        return _wit.types.ChannelError_Fatal(str(self))


class ToolError(Exception):
    """Why a tool call failed."""

    def to_wit(self):
        """The WIT ``tool-error`` value."""
        raise NotImplementedError


class UnknownTool(ToolError):
    """No tool of that name."""

    def to_wit(self):
        return _wit.types.ToolError_UnknownTool(str(self))


class InvalidArgs(ToolError):
    """The arguments did not match the schema; the text says how."""

    def to_wit(self):
        return _wit.types.ToolError_InvalidArgs(str(self))


class ToolFailed(ToolError):
    """The tool ran and failed; the text is shown to the agent."""

    def to_wit(self):
        return _wit.types.ToolError_Failed(str(self))


class HostError(RuntimeError):
    """The host refused a request: a state value too large, a message that
    cannot be stored. The text is the host's."""


def describe(exc):
    """An exception as one line: its text, or its type when it has none."""
    text = str(exc)
    name = type(exc).__name__
    if not text:
        return name
    return text if isinstance(exc, (ChannelError, ToolError, HostError)) else f"{name}: {text}"
