"""The one place kata's helpers reach the host.

Inside the component, :data:`backend` calls the WIT imports. Natively there
is no host: every call raises :class:`NoHostError`, except the clock (the
machine's) and logging (to stderr), unless a test installs
:class:`kata.testing.FakeHost`, which replaces :data:`backend`.
"""

import sys
import time

from . import _wit


class NoHostError(RuntimeError):
    """A host function was called outside the WebAssembly component."""


class WasmHost:
    """The real host: kata's WIT imports."""

    def log(self, level, message):
        _wit.host.log(level, message)

    def config_get(self, key):
        return _wit.host.config_get(key)

    def state_get(self, key):
        return _wit.host.state_get(key)

    def state_set(self, key, value):
        _wit.host.state_set(key, value)

    def state_delete(self, key):
        _wit.host.state_delete(key)

    def state_keys(self, prefix):
        return _wit.host.state_keys(prefix)

    def now_ms(self):
        return _wit.host.now_ms()

    def emit(self, message):
        if _wit.emitter is None:
            raise NoHostError("emit is only available to service plugins (world `service`)")
        _wit.emitter.emit(message)

    def http(self, request):
        from . import http  # the module is imported at build time (kata/__init__.py)

        return http._send_wasi(request)


class NativeHost:
    """No host (unit tests without :class:`kata.testing.FakeHost`)."""

    def _none(self, what):
        raise NoHostError(
            f"{what} needs the kata host, which only exists inside the WebAssembly component; "
            "in a native test, wrap the call in `with kata.testing.FakeHost(...)`"
        )

    def log(self, level, message):
        print(f"[{level.name.lower()}] {message}", file=sys.stderr)

    def config_get(self, key):
        self._none(f"reading config key {key!r}")

    def state_get(self, key):
        self._none(f"kata.state.get({key!r})")

    def state_set(self, key, value):
        self._none(f"kata.state.set({key!r}, ...)")

    def state_delete(self, key):
        self._none(f"kata.state.delete({key!r})")

    def state_keys(self, prefix):
        self._none(f"kata.state.keys({prefix!r})")

    def now_ms(self):
        return int(time.time() * 1000)

    def emit(self, message):
        self._none("kata.emit(...)")

    def http(self, request):
        self._none(f"an HTTP request to {request.shown_url}")


#: The host every helper calls; :class:`kata.testing.FakeHost` swaps it.
backend = WasmHost() if _wit.ON_WASM else NativeHost()
