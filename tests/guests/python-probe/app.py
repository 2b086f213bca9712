"""Test guest ``python-probe``: the Python row of ``tests/languages.rs``.

Every language kata has a template for ships the same probe
(``tests/guests/<lang>-probe/``, the contract is in
``tests/guests/rust-probe/src/lib.rs``), so one table-driven test shows the
same sandbox guarantees in every language.

Each ``poll`` reads config ``probe`` and returns one message (id
``probe-<now_ms>``, conversation and sender ``probe``, direct, mentioned)
whose text is:

- ``http``: GET config ``url`` → ``http: ok <status> <body>`` or ``http: err <error>``
- ``file``: read config ``path`` with ``open()`` → ``file: ok <n> bytes`` or ``file: err <error>``
- ``secret``: GET ``url`` with ``token={{secret:token}}`` in the query and the
  header ``Authorization: Bearer {{secret:token}}`` → ``secret: ok <status>
  <body>`` or ``secret: err <error>``, also written to the log
- ``spin``: burns CPU forever; ``bomb``: allocates 1 MiB blocks forever
- anything else: ``unknown probe <value>``

The kata SDK (``kata/``) and the WIT (``wit/``) are copies kept current by
``sdk/python/generate.sh``.
"""

import kata
from kata import http

#: The placeholder the host replaces with the secret ``token``.
PLACEHOLDER = kata.secret("token")


def with_token(url):
    """``url`` with ``token=<placeholder>`` appended to its query."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}token={PLACEHOLDER}"


def get(what, url, auth):
    headers = {"authorization": f"Bearer {PLACEHOLDER}"} if auth else {}
    try:
        response = http.get(url, headers=headers)
    except http.RequestException as err:
        return f"{what}: err {err}"
    return f"{what}: ok {response.status} {response.text}"


def read_file(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return f"file: err {err}"
    return f"file: ok {len(data)} bytes"


def spin():
    x = 0
    while True:
        x = (x * 6364136223846793005 + 1) & 0xFFFFFFFFFFFFFFFF


def bomb():
    blocks = []
    while True:
        block = bytearray(1 << 20)
        block[(len(blocks) * 7) % (1 << 20)] = 1
        blocks.append(block)


def run(probe):
    if probe == "http":
        return get("http", kata.config.get("url", ""), False)
    if probe == "file":
        return read_file(kata.config.get("path", ""))
    if probe == "secret":
        text = get("secret", with_token(kata.config.get("url", "")), True)
        kata.log.info(text)
        return text
    if probe == "spin":
        spin()
    if probe == "bomb":
        bomb()
    return f"unknown probe {probe}"


class Channel(kata.Channel):
    def describe(self):
        return kata.channel_info("python-probe", "0.1.0", ingress=["poll"])

    def poll(self, cursor):
        text = run(kata.config.get("probe", ""))
        message = kata.message(f"probe-{kata.now_ms()}", "probe", "probe", text, mentioned=True)
        return kata.poll_result([message])

    def send(self, message):
        return kata.sent(f"sent-{message.idempotency_key}")
