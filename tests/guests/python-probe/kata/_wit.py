"""Where the generated bindings come from.

When kata builds the plugin, componentize-py generates the real ``wit_world``
package for the project's world (``[tool.kata] world`` in pyproject.toml)
and pre-initialises the interpreter with it. Natively (unit tests, editors,
type checkers) the stubs in ``kata/_bindings`` stand in: the same classes,
with functions that raise ``NotImplementedError`` (kata routes host calls
through :mod:`kata._host`, which says what to do instead).

Not every world has every interface: only service plugins import
``emitter``, only tools plugins ``scheduler``; only channel plugins export
``channel``, only hooks ``hooks``. Missing ones are None.
"""

import os
import sys

#: True inside the WebAssembly component (CPython built for WASI).
ON_WASM = sys.platform == "wasi"

if not ON_WASM:
    try:
        import wit_world  # noqa: F401  (an environment that already provides them)
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bindings"))

from componentize_py_types import Err, Ok, Some  # noqa: E402,F401
from wit_world.imports import host  # noqa: E402,F401
from wit_world.imports import kata_plugin_types as types  # noqa: E402,F401

try:
    from wit_world.imports import emitter
except ImportError:  # not a service world
    emitter = None

try:
    from wit_world.exports import channel
except ImportError:  # not a channel world
    channel = None

try:
    from wit_world.exports import hooks
except ImportError:  # not a hook world
    hooks = None

try:
    from wit_world.imports import connections
except ImportError:  # the hook world (and contracts before 0.1.3)
    connections = None

try:
    from wit_world.imports import scheduler
except ImportError:  # only tools worlds import the scheduler
    scheduler = None

try:
    from wit_world.imports import error as io_error
    from wit_world.imports import outgoing_handler, poll, streams
    from wit_world.imports import wasi_http_types as http_types
except ImportError:  # a world without wasi:http (not one of kata's Python worlds)
    io_error = outgoing_handler = poll = streams = http_types = None
