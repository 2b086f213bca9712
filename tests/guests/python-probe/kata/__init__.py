"""kata: write kata plugins (WebAssembly components) in Python.

A plugin is a module (``app.py``) with a class per export of its world:
``Channel`` for a channel, ``Tools`` for tools, ``Service`` for a service,
``Hooks`` for a hook.
Subclass the base classes here and kata does the component plumbing:

.. code-block:: python

    import kata
    from kata import http

    class Channel(kata.Channel):
        def describe(self):
            return kata.channel_info("quiet", "0.1.0", ingress=["poll"])

        def connect(self):
            self.base = kata.config.require("base_url").rstrip("/")

        def poll(self, cursor):
            resp = http.get(f"{self.base}/updates", params={"after": cursor or ""},
                            headers={"Authorization": "Bearer {{secret:token}}"})
            resp.raise_for_status()
            items = resp.json()
            messages = [kata.message(i["id"], i["chat"], i["from"], i["text"], mentioned=True) for i in items]
            return kata.poll_result(messages, cursor=items[-1]["id"] if items else cursor)

        def send(self, msg):
            http.post(f"{self.base}/send", json={"chat": msg.conversation, "text": msg.text}).raise_for_status()
            return kata.sent(msg.idempotency_key)

Errors are exceptions: raise :class:`AuthFailed`, :class:`RateLimited`,
:class:`NetworkError`, :class:`InvalidConfig`, :class:`Unsupported` or
:class:`Fatal` from a channel, :class:`UnknownTool`, :class:`InvalidArgs`
or :class:`ToolFailed` from a tool, anything from a service. An
:mod:`kata.http` error that escapes a channel method becomes the matching
channel error (a refused host: ``invalid-config`` naming the grant to add; no
response: ``network``; a status from ``raise_for_status``: 401/403
``auth-failed``, 429 ``rate-limited``, 5xx ``network``, else ``fatal``).
Any other exception is a bug: kata logs its traceback through the host log
and the call traps (the host restarts the plugin with backoff).

**Build time.** componentize-py imports your module once, when the plugin is
*built*, and snapshots the interpreter; each instance starts from that
snapshot. So: import everything at the top of the module (there is no file
system to import from later), and do not call the host (config, state, log,
HTTP) at import time or in ``__init__`` — the export classes are
instantiated at build time too. Read configuration in ``connect`` / ``start``.

The records and enums of the WIT (:class:`Message`, :class:`PollResult`,
:class:`ChannelInfo`, …) are the dataclasses componentize-py generates,
re-exported here; see the SDK's README for how each WIT type maps.
"""

import dataclasses
import functools
import json
import sys
import traceback

from . import _host, _wit, http, net
from ._wit import Err, Ok, Some
from .errors import (
    AuthFailed,
    ChannelError,
    Fatal,
    HostError,
    InvalidArgs,
    InvalidConfig,
    NetworkError,
    RateLimited,
    ToolError,
    ToolFailed,
    Unsupported,
    UnknownTool,
    describe as _describe,
)

#: The version of kata's WIT contract (``kata:plugin@0.1.3``) this SDK targets.
WIT_VERSION = "0.1.3"

#: The generated bindings of the ``types`` interface (every WIT type the
#: host and plugins exchange), for what is not re-exported below.
types = _wit.types

Message = types.Message
OutboundMessage = types.OutboundMessage
SendReceipt = types.SendReceipt
Attachment = types.Attachment
ConversationKind = types.ConversationKind
LogLevel = types.LogLevel
ToolSpec = types.ToolSpec
#: A text frame (``Frame`` is ``FrameText | FrameBinary``).
FrameText = types.Frame_Text
#: A binary frame.
FrameBinary = types.Frame_Binary

if _wit.channel is not None:
    ChannelInfo = _wit.channel.ChannelInfo
    PollResult = _wit.channel.PollResult
    IngressMode = _wit.channel.IngressMode
    StreamKind = _wit.channel.StreamKind
    Subscription = _wit.channel.Subscription
    FrameResult = _wit.channel.FrameResult
    #: The generated bindings of the ``channel`` interface.
    channel_types = _wit.channel
    if hasattr(_wit.channel, "Feature"):  # WIT 0.1.3
        Feature = _wit.channel.Feature
        #: ``act`` actions (match on them): show typing in a target,
        #: replace a sent message's text, react to a message.
        ActionTyping = _wit.channel.ChannelAction_Typing
        ActionEdit = _wit.channel.ChannelAction_Edit
        ActionReact = _wit.channel.ChannelAction_React


def secret(name):
    """The placeholder ``{{secret:NAME}}`` the host fills in for granted hosts
    (handy in f-strings, where literal braces must be doubled)."""
    return "{{secret:" + name + "}}"


def now_ms():
    """The current wall-clock time in milliseconds since the Unix epoch, as
    the host sees it (natively: this machine's clock)."""
    return _host.backend.now_ms()


def message(id, conversation, sender, text, *, thread=None, sender_name=None, attachments=None, timestamp_ms=None, raw=None,
            group=False, mentioned=False):
    """A :class:`Message` for the inbox. ``id`` must be unique within the
    plugin (the host stores an id once). ``group=True`` marks a group
    conversation; ``mentioned`` says whether the message addresses the agent
    (set it for direct conversations too when the network says so).
    ``timestamp_ms`` defaults to :func:`now_ms`."""
    return _build(
        Message,
        id=str(id),
        conversation=str(conversation),
        thread=thread,
        sender=str(sender),
        sender_name=sender_name,
        text=text,
        attachments=list(attachments or []),
        timestamp_ms=now_ms() if timestamp_ms is None else int(timestamp_ms),
        raw=raw,
        conversation_kind=ConversationKind.GROUP if group else ConversationKind.DIRECT,
        mentioned=bool(mentioned),
    )


def _build(cls, **values):
    """``cls(**values)`` keeping only the fields ``cls`` has, and filling the
    fields it has but ``values`` lacks with ``[]`` (lists) or None (options):
    records that grow in a newer WIT version keep working with the same call."""
    args = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            args[f.name] = values[f.name]
        else:
            kind = str(f.type)
            if "List[" in kind or kind.startswith("list["):
                args[f.name] = []
            elif "Optional[" in kind:
                args[f.name] = None
    return cls(**args)


def channel_info(name, version, ingress=("poll",), features=()):
    """A :class:`ChannelInfo`. ``ingress`` lists :class:`IngressMode` values or
    their names (``"poll"``, ``"subscribe"``), preferred first; ``features``
    (WIT 0.1.3 and later) what ``act`` and ``send`` support."""
    def enum(kind, v):
        return kind[v.upper().replace("-", "_")] if isinstance(v, str) else v

    values = {"name": name, "version": version, "ingress": [enum(IngressMode, i) for i in ingress]}
    if features:
        values["features"] = [enum(_wit.channel.Feature, f) for f in features]
    return _build(ChannelInfo, **values)


def poll_result(messages=(), cursor=None, next_poll_ms=None):
    """A :class:`PollResult`: ``messages`` oldest first, the ``cursor`` for the
    next poll (None keeps the current one), ``next_poll_ms`` (None lets the
    host decide)."""
    return PollResult(messages=list(messages), cursor=cursor, next_poll_ms=next_poll_ms)


def outbound_message(conversation, text, *, idempotency_key="", thread=None, reply_to=None, **more):
    """An :class:`OutboundMessage`, as the host hands one to ``send`` (for tests)."""
    return _build(OutboundMessage, conversation=conversation, thread=thread, reply_to=reply_to, text=text, idempotency_key=idempotency_key, **more)


def sent(id=""):
    """The :class:`SendReceipt` of a message the plugin delivered itself,
    with the network's id for it (empty when it gives none)."""
    return _build(SendReceipt, id=str(id), frames=[])


def over_stream(id, frames):
    """The :class:`SendReceipt` of a message the host delivers by writing
    ``frames`` (text or bytes) to the plugin's open stream."""
    return _build(SendReceipt, id=str(id), frames=[frame(f) for f in frames])


def frame(data):
    """A frame from text (:class:`FrameText`) or bytes (:class:`FrameBinary`)."""
    if isinstance(data, (FrameText, FrameBinary)):
        return data
    if isinstance(data, str):
        return FrameText(data)
    return FrameBinary(bytes(data))


def subscription(kind, url, *, headers=None, initial_frames=(), heartbeat_ms=None):
    """A :class:`Subscription`: the stream the host opens for the plugin.
    ``kind`` is a :class:`StreamKind` or its name (``"websocket"``,
    ``"server-sent-events"``, ``"tcp-lines"``, ``"webhook"``); ``headers`` a
    dict or pairs (placeholders allowed); ``initial_frames`` text or bytes
    sent right after connecting; ``heartbeat_ms`` makes the host call
    ``on_frame`` with an empty text frame at that interval."""
    if isinstance(kind, str):
        kind = StreamKind[kind.upper().replace("-", "_")]
    pairs = list(headers.items()) if hasattr(headers, "items") else list(headers or ())
    return Subscription(
        kind=kind,
        url=url,
        headers=[(str(n), str(v)) for n, v in pairs],
        initial_frames=[frame(f) for f in initial_frames],
        heartbeat_ms=heartbeat_ms,
    )


def frame_result(messages=(), replies=()):
    """A :class:`FrameResult`: messages for the inbox and frames (text or
    bytes) to write back."""
    return FrameResult(messages=list(messages), replies=[frame(f) for f in replies])


def is_heartbeat(f):
    """Whether ``f`` is the host's heartbeat tick (an empty text frame)."""
    return isinstance(f, FrameText) and f.value == ""


def emit(msg):
    """Service plugins: put ``msg`` (a :class:`Message`) into the inbox as if
    a channel had received it. The host deduplicates on ``msg.id``. Raises
    :class:`HostError` when it cannot be stored."""
    try:
        _host.backend.emit(msg)
    except Err as e:
        raise HostError(str(e.value)) from None


class _Config:
    """The plugin's non-secret configuration: ``[plugins.NAME] config = {...}``
    in kata.toml. Secrets are never here: use ``{{secret:NAME}}``."""

    def get(self, key, default=None, type=str):
        """The value of ``key`` converted with ``type`` (str, int, float or
        bool, or any callable), or ``default`` when it is not set. A value
        that is set but does not convert raises :class:`InvalidConfig`
        naming the key (it is not silently replaced by the default)."""
        raw = _host.backend.config_get(key)
        if raw is None:
            return default
        return self.parse(key, raw, type)

    def require(self, key, type=str):
        """The value of ``key``; :class:`InvalidConfig` when it is not set or empty."""
        raw = _host.backend.config_get(key)
        if raw is None or not raw.strip():
            raise InvalidConfig(f"config key `{key}` is required but not set")
        return self.parse(key, raw, type)

    @staticmethod
    def parse(key, raw, type=str):
        """Convert the text ``raw`` of config key ``key`` (surrounding
        whitespace ignored for numbers and booleans)."""
        if type is str:
            return raw
        try:
            if type is bool:
                word = raw.strip().lower()
                if word in ("true", "yes", "on", "1"):
                    return True
                if word in ("false", "no", "off", "0"):
                    return False
                raise ValueError("expected true or false")
            return type(raw.strip())
        except (TypeError, ValueError) as e:
            raise InvalidConfig(f"config key `{key}` has value {raw!r}, which is not valid: {e}") from None


class _State:
    """Plugin-private persistent state, kept by the host in the workspace's
    database: it survives restarts and is shared by every instance of the
    plugin. Keys up to 256 bytes, values (bytes) up to 1 MiB. Also a
    mapping: ``kata.state["k"] = b"v"``, ``kata.state.get("k")``, ``del kata.state["k"]``."""

    def get(self, key, default=None):
        """The bytes stored under ``key``, or ``default``."""
        value = _host.backend.state_get(key)
        return default if value is None else value

    def set(self, key, value):
        """Store ``value`` (bytes or text) under ``key``; :class:`HostError` when
        the key or value is too large or the database cannot be written."""
        if isinstance(value, str):
            value = value.encode()
        try:
            _host.backend.state_set(key, bytes(value))
        except Err as e:
            raise HostError(str(e.value)) from None

    def delete(self, key):
        """Remove ``key`` (no error when it does not exist)."""
        _host.backend.state_delete(key)

    def keys(self, prefix=""):
        """The keys starting with ``prefix``, in byte order, at most 1000."""
        return list(_host.backend.state_keys(prefix))

    def get_text(self, key, default=None):
        """The value of ``key`` decoded as UTF-8, or ``default``."""
        value = self.get(key)
        return default if value is None else value.decode("utf-8", "replace")

    def get_json(self, key, default=None):
        """The value of ``key`` decoded as JSON, or ``default``."""
        value = self.get(key)
        return default if value is None else json.loads(value)

    def set_json(self, key, value):
        """Store ``value`` as JSON."""
        self.set(key, json.dumps(value, separators=(",", ":")).encode())

    def __getitem__(self, key):
        value = _host.backend.state_get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        self.set(key, value)

    def __delitem__(self, key):
        self.delete(key)

    def __contains__(self, key):
        return _host.backend.state_get(key) is not None


class _Log:
    """Lines in the kata daemon's log, tagged with the plugin's name. Never log
    secrets (the plugin only ever holds placeholders anyway)."""

    def log(self, level, message):
        """Write ``message`` at ``level`` (a :class:`LogLevel` or its name)."""
        if isinstance(level, str):
            level = LogLevel[level.upper()]
        _host.backend.log(level, str(message))

    def trace(self, message):
        self.log(LogLevel.TRACE, message)

    def debug(self, message):
        self.log(LogLevel.DEBUG, message)

    def info(self, message):
        self.log(LogLevel.INFO, message)

    def warn(self, message):
        self.log(LogLevel.WARN, message)

    warning = warn

    def error(self, message):
        self.log(LogLevel.ERROR, message)


#: Configuration (:class:`_Config`).
config = _Config()
#: Persistent state (:class:`_State`).
state = _State()
#: The host log (:class:`_Log`).
log = _Log()


# ---------------------------------------------------------------------------
# The component boundary.


def _log_bug(where, exc):
    """Log an unexpected exception with its traceback (the plugin's stderr
    goes nowhere), before the call traps."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
        tb = tb.tb_next  # kata's own wrapper frames
    text = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    try:
        _host.backend.log(LogLevel.ERROR, f"{where} raised an unexpected exception:\n{text}")
    except BaseException:  # the host may be what failed
        pass


def channel_error_from(exc):
    """The :class:`ChannelError` for an exception escaping a channel method,
    or None for a bug: channel errors as they are, :mod:`kata.http` errors
    mapped the way a channel usually means them."""
    if isinstance(exc, ChannelError):
        return exc
    if isinstance(exc, http.RequestDenied):
        return InvalidConfig(f"{exc}")
    if isinstance(exc, http.InvalidURL):
        return InvalidConfig(str(exc))
    if isinstance(exc, http.ConnectionError):
        return NetworkError(str(exc))
    if isinstance(exc, http.HTTPError) and exc.response is not None:
        return status_error(exc.response.status, exc.response.text, exc.response.header("retry-after"))
    if isinstance(exc, http.RequestException):
        return Fatal(str(exc))
    if isinstance(exc, net.Denied):
        return InvalidConfig(str(exc))
    if isinstance(exc, (net.IOFailure, net.Timeout, net.Closed)):
        return NetworkError(str(exc))
    if isinstance(exc, net.NetError):
        return Fatal(str(exc))
    return None


def status_error(status, body="", retry_after=None):
    """The channel error an HTTP status usually means: 401/403
    :class:`AuthFailed`, 429 :class:`RateLimited` (after ``retry_after``
    seconds when the server says so, else 1 s), 5xx :class:`NetworkError`,
    anything else :class:`Fatal`."""
    if status in (401, 403):
        return AuthFailed(f"HTTP {status}")
    if status == 429:
        try:
            ms = int(float(retry_after) * 1000) if retry_after is not None else 1000
        except ValueError:
            ms = 1000
        return RateLimited(ms)
    if 500 <= status <= 599:
        return NetworkError(f"HTTP {status}")
    body = body if len(body) <= 200 else body[:200] + "…"
    return Fatal(f"HTTP {status}: {body}" if body else f"HTTP {status}")


class _LogWriter:
    """``sys.stdout`` / ``sys.stderr`` inside the component: complete lines go
    to the host log (the component's own stdio goes nowhere). Before the
    first call from the host (while componentize-py imports the module at
    build time) writes go to the build's output instead."""

    def __init__(self, level, fallback):
        self.level = level
        self.fallback = fallback
        self.pending = ""

    def write(self, text):
        if not _LIVE[0]:
            return self.fallback.write(text)
        if _LIVE[1] and self.level == LogLevel.WARN:
            return len(text)  # the trap's traceback, already logged whole
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            _host.backend.log(self.level, line)
        return len(text)

    def flush(self):
        if _LIVE[0] and self.pending:
            line, self.pending = self.pending, ""
            _host.backend.log(self.level, line)

    def isatty(self):
        return False


# [whether the host has called in yet (host functions work only then),
#  whether a bug was logged and the call is about to trap]
_LIVE = [False, False]

if _wit.ON_WASM:
    sys.stdout = _LogWriter(LogLevel.INFO, sys.stdout)
    sys.stderr = _LogWriter(LogLevel.WARN, sys.stderr)


def _boundary(convert, where):
    """Wrap an export method: inside the component, errors become the WIT
    ``result`` error ``convert`` makes of them (``Err(value)``); natively
    they stay Python exceptions, so unit tests see what the code raised."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, *args):
            if not _wit.ON_WASM:
                return fn(self, *args)
            _LIVE[0] = True
            try:
                return fn(self, *args)
            except Err:
                raise
            except Exception as exc:
                value = convert(exc)
                if value is None:
                    _log_bug(f"{type(self).__name__}.{where}", exc)
                    # componentize-py prints the exception to stderr and
                    # traps; the instance is not used again.
                    _LIVE[1] = True
                    raise
                raise Err(value) from None

        call.__kata_boundary__ = True
        return call

    return wrap


def _no_error(exc):
    return None


def _channel_value(exc):
    err = channel_error_from(exc)
    return None if err is None else err.to_wit()


def _tool_value(exc):
    if isinstance(exc, ToolError):
        return exc.to_wit()
    return None


def _service_value(exc):
    if not isinstance(exc, (HostError, ChannelError, ToolError, http.RequestException, ValueError)):
        _log_bug("the service", exc)
    return _describe(exc)


def _wrap_exports(cls, names, convert):
    for name in names:
        fn = cls.__dict__.get(name)
        if callable(fn) and not getattr(fn, "__kata_boundary__", False):
            setattr(cls, name, _boundary(convert, name)(fn))


class Channel:
    """Base class of a channel plugin's ``Channel`` (world ``channel``).

    Implement :meth:`describe`, :meth:`connect`, :meth:`poll` and
    :meth:`send`; :meth:`subscribe` and :meth:`on_frame` for a plugin that
    streams. The host calls ``connect`` once per instance before anything
    else (kata calls it first itself if the host did not), and never
    overlaps calls. Keep what must outlive an instance in the poll cursor or
    :data:`state`.
    """

    _kata_connected = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _wrap_exports(cls, ("connect", "poll", "subscribe", "on_frame", "send", "act"), _channel_value)
        _wrap_exports(cls, ("describe", "disconnect"), _no_error)
        for name in ("poll", "subscribe", "on_frame", "send", "act"):
            fn = cls.__dict__.get(name)
            if callable(fn):
                setattr(cls, name, _connect_first(fn))
        connect = cls.__dict__.get("connect")
        if callable(connect):
            setattr(cls, "connect", _mark_connected(connect))

    def describe(self):
        """Static facts (:class:`ChannelInfo`). Must not fail or use the network."""
        raise NotImplementedError("a kata Channel must define describe()")

    def connect(self):
        """Read configuration, check credentials if that is cheap."""

    def poll(self, cursor):
        """Messages newer than ``cursor`` (None the first time): a :class:`PollResult`."""
        raise Err(Unsupported().to_wit()) if _wit.ON_WASM else Unsupported()

    def subscribe(self):
        """The stream the host should open (:class:`Subscription`); by default
        the plugin only polls."""
        raise Err(Unsupported().to_wit()) if _wit.ON_WASM else Unsupported()

    def on_frame(self, frame):
        """Handle one frame of the stream: a :class:`FrameResult`."""
        raise Err(Unsupported().to_wit()) if _wit.ON_WASM else Unsupported()

    def send(self, message):
        """Deliver ``message`` (:class:`OutboundMessage`): a :class:`SendReceipt`."""
        raise Err(Unsupported().to_wit()) if _wit.ON_WASM else Unsupported()

    def act(self, action):
        """Do ``action`` (:data:`ActionTyping`, :data:`ActionEdit` or
        :data:`ActionReact`, WIT 0.1.3), one of the features ``describe``
        lists; by default nothing is supported."""
        raise Err(Unsupported().to_wit()) if _wit.ON_WASM else Unsupported()

    def disconnect(self):
        """The instance is about to be dropped."""


def _mark_connected(fn):
    @functools.wraps(fn)
    def connect(self):
        result = fn(self)
        self._kata_connected = True
        return result

    connect.__kata_boundary__ = True
    return connect


def _connect_first(fn):
    @functools.wraps(fn)
    def call(self, *args):
        if not self._kata_connected:
            self.connect()
        return fn(self, *args)

    call.__kata_boundary__ = True
    return call


def tool(description, schema=None, name=None):
    """Mark a method of a :class:`Tools` subclass as a tool the agent can call.

    ``schema`` is the JSON Schema (a dict or JSON text) of the object the
    tool takes (default: any object); ``name`` defaults to the method's.
    The method receives the arguments as a dict and returns text, or
    anything JSON-serialisable (sent as JSON). Which tools only read is
    said in plugin.toml (``[tools] read_only``), not here."""

    def mark(fn):
        fn.__kata_tool__ = {
            "name": name or fn.__name__,
            "description": description,
            "schema": schema if isinstance(schema, str) else json.dumps(schema or {"type": "object"}, separators=(",", ":")),
        }
        return fn

    return mark


def parse_args(args_json):
    """The tool arguments ``args_json`` as a dict; :class:`InvalidArgs` when
    they are not a JSON object."""
    try:
        args = json.loads(args_json)
    except ValueError as e:
        raise InvalidArgs(f"not JSON: {e}") from None
    if not isinstance(args, dict):
        raise InvalidArgs("the arguments must be a JSON object")
    return args


class Tools:
    """Base class of a plugin's ``Tools`` (worlds ``tools`` and ``channel-tools``).

    Decorate methods with :func:`tool`; ``list`` and ``call`` are derived
    from them. (Or override ``list`` and ``call`` yourself.) A tool that
    raises :class:`ToolError` reports it to the agent; any other exception is
    reported as ``failed`` with its text, and its traceback is logged.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _wrap_exports(cls, ("call",), _tool_value)
        _wrap_exports(cls, ("list",), _no_error)

    def _kata_tools(self):
        found = {}
        for klass in reversed(type(self).__mro__):
            for attr, fn in vars(klass).items():
                spec = getattr(fn, "__kata_tool__", None)
                if spec is not None:
                    found[spec["name"]] = (attr, spec)
        return found

    def list(self):
        """The tools (:class:`ToolSpec`) marked with :func:`tool`."""
        return [ToolSpec(name=n, description=s["description"], args_schema=s["schema"]) for n, (_, s) in self._kata_tools().items()]

    @_boundary(_tool_value, "call")
    def call(self, name, args_json):
        """Run tool ``name`` with the JSON arguments ``args_json``; its result as text."""
        entry = self._kata_tools().get(name)
        if entry is None:
            raise UnknownTool(name)
        args = parse_args(args_json)
        try:
            result = getattr(self, entry[0])(args)
        except ToolError:
            raise
        except Exception as exc:
            if _wit.ON_WASM:
                _log_bug(f"tool {name}", exc)
            raise ToolFailed(_describe(exc)) from exc
        return result if isinstance(result, str) else json.dumps(result, separators=(",", ":"))


class Service:
    """Base class of a service plugin's ``Service`` (world ``service``).

    Implement :meth:`tick` (and :meth:`start` to check configuration). An
    exception from ``start`` or ``tick`` becomes the error text the host shows
    and retries with backoff (a :class:`HostError`, :class:`ValueError` or
    kata error as its message alone; anything else with its type, and its
    traceback logged).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _wrap_exports(cls, ("start", "tick"), _service_value)
        _wrap_exports(cls, ("stop",), _no_error)

    def start(self):
        """Read configuration; raise to refuse to start."""

    def tick(self):
        """One unit of work; the milliseconds until the next tick."""
        raise NotImplementedError("a kata Service must define tick()")

    def stop(self):
        """The service is being stopped; finish quickly."""


class Drop(Exception):
    """Raise from :meth:`Hooks.message_received` to drop the message; the
    text is logged and audited."""


class Veto(Exception):
    """Raise from :meth:`Hooks.message_sending` to stop the reply; the text is
    logged and audited."""


class Refuse(Exception):
    """Raise from :meth:`Hooks.before_tool_call` to refuse the call; the agent
    is told the text."""


class Hooks:
    """Base class of a hook plugin's ``Hooks`` (world ``hook``, WIT 0.1.3): a
    plugin on the message path. Override the points you need; ``points`` is
    derived from them.

    - ``message_received(channel, message)``: before the agent sees a message.
      Return None to pass it, a :class:`Message` to replace it, or raise
      :class:`Drop`.
    - ``message_sending(channel, message)``: before a reply is sent. Return None,
      an :class:`OutboundMessage` to replace it, or raise :class:`Veto`.
    - ``before_tool_call(call)``: before a tool runs (``call.plugin``,
      ``call.tool``, ``call.args_json``, ``call.session``). Return None to
      allow it, or raise :class:`Refuse`.

    Any other exception is the hook failing; kata.toml's ``on_failure``
    decides what happens then.
    """

    _POINTS = ("message_received", "message_sending", "before_tool_call")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._POINTS:
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "__kata_boundary__", False):
                setattr(cls, name, _hook_point(name, fn))
        _wrap_exports(cls, ("points",), _no_error)

    def points(self):
        """The points this hook handles: the ones its class overrides."""
        kinds = _wit.hooks.HookPoint
        return [kinds[n.upper()] for n in self._POINTS if getattr(type(self), n) is not getattr(Hooks, n)]

    def message_received(self, channel, message):
        return None

    def message_sending(self, channel, message):
        return None

    def before_tool_call(self, call):
        return None


def _hook_point(name, fn):
    @functools.wraps(fn)
    def call(self, *args):
        h = _wit.hooks
        if _wit.ON_WASM:
            _LIVE[0] = True
        try:
            result = fn(self, *args)
        except (Drop, Veto, Refuse) as verdict:
            if not _wit.ON_WASM:
                raise
            text = str(verdict) or type(verdict).__name__.lower()
            if name == "message_received" and isinstance(verdict, Drop):
                return h.InboundVerdict_Drop(text)
            if name == "message_sending" and isinstance(verdict, Veto):
                return h.OutboundVerdict_Veto(text)
            if name == "before_tool_call" and isinstance(verdict, Refuse):
                return h.ToolVerdict_Refuse(text)
            raise Err(f"{name}: {type(verdict).__name__} is not a verdict of this point") from None
        except Err:
            raise
        except Exception as exc:
            if not _wit.ON_WASM:
                raise
            raise Err(_service_value(exc)) from None
        if not _wit.ON_WASM:
            return result
        if name == "message_received":
            return h.InboundVerdict_Pass() if result is None else h.InboundVerdict_Rewrite(result)
        if name == "message_sending":
            return h.OutboundVerdict_Pass() if result is None else h.OutboundVerdict_Rewrite(result)
        return h.ToolVerdict_Allow()

    call.__kata_boundary__ = True
    return call


class SchedulerError(HostError):
    """The scheduler refused (not granted, a bad schedule, the limit reached,
    an unknown task, no target). ``value`` is the WIT ``scheduler-error``."""

    def __init__(self, value):
        self.value = value
        text = getattr(value, "value", None)
        kind = type(value).__name__.removeprefix("SchedulerError_")
        super().__init__(f"{kind}: {text}" if text is not None else kind)


class _Scheduler:
    """Tools plugins with the ``scheduler`` grant (WIT 0.1.3): prompts for the
    agent later ("remind me tomorrow at 9")."""

    def _call(self, fn, *args):
        if _wit.scheduler is None:
            raise HostError("the scheduler is only available to tools plugins (worlds `tools`, `channel-tools`)")
        try:
            return fn(*args)
        except Err as e:
            raise SchedulerError(e.value) from None

    def create(self, schedule, prompt, channel=None, conversation=None, thread=None):
        """Schedule ``prompt``: ``schedule`` is an RFC 3339 time for once or a
        cron expression with seconds to repeat; the reply goes to
        ``channel``/``conversation`` (default: where the tool was called from)."""
        s = _wit.scheduler
        target = None
        if channel is not None:
            target = s.TaskTarget(channel=channel, conversation=conversation or "", thread=thread)
        return self._call(s.create, s.TaskRequest(schedule=schedule, prompt=prompt, target=target))

    def list(self):
        """This plugin's tasks."""
        return self._call(lambda: _wit.scheduler.list())

    def cancel(self, id):
        """Cancel task ``id``."""
        self._call(lambda: _wit.scheduler.cancel(int(id)))


#: The scheduler (:class:`_Scheduler`).
scheduler = _Scheduler()


__all__ = [
    "Attachment",
    "AuthFailed",
    "Channel",
    "ChannelError",
    "Drop",
    "ConversationKind",
    "Err",
    "Fatal",
    "FrameBinary",
    "FrameText",
    "HostError",
    "Hooks",
    "InvalidArgs",
    "InvalidConfig",
    "LogLevel",
    "Message",
    "NetworkError",
    "Ok",
    "OutboundMessage",
    "RateLimited",
    "Refuse",
    "SchedulerError",
    "SendReceipt",
    "Service",
    "Some",
    "ToolError",
    "ToolFailed",
    "ToolSpec",
    "Tools",
    "UnknownTool",
    "Unsupported",
    "Veto",
    "WIT_VERSION",
    "config",
    "emit",
    "frame",
    "http",
    "is_heartbeat",
    "log",
    "message",
    "net",
    "now_ms",
    "outbound_message",
    "over_stream",
    "parse_args",
    "scheduler",
    "secret",
    "sent",
    "state",
    "status_error",
    "tool",
    "types",
]

if _wit.channel is not None:
    __all__ += [
        "ChannelInfo",
        "FrameResult",
        "IngressMode",
        "PollResult",
        "StreamKind",
        "Subscription",
        "channel_info",
        "frame_result",
        "poll_result",
        "subscription",
    ]

