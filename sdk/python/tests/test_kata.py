"""Native tests of the kata Python SDK: ``python3 -m unittest discover sdk/python/tests``.

They import the SDK with the stubs of the ``channel-tools`` world (every
type a channel and a tools plugin use) and check what does not need the
component: URL handling, errors and their WIT values, the export wrappers'
Python side, config/state through FakeHost.
"""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bindings", "channel-tools"))
sys.path.insert(0, os.path.join(HERE, ".."))

import kata  # noqa: E402
from kata import http  # noqa: E402
from kata.testing import FakeHost  # noqa: E402


class UrlTest(unittest.TestCase):
    def test_split_keeps_placeholders(self):
        self.assertEqual(
            http.split_url("https://api.telegram.org/bot{{secret:bot_token}}/getUpdates?offset=5&timeout=25"),
            ("https", "api.telegram.org", "/bot{{secret:bot_token}}/getUpdates?offset=5&timeout=25"),
        )

    def test_split_edge_cases(self):
        self.assertEqual(http.split_url("http://127.0.0.1:9000"), ("http", "127.0.0.1:9000", "/"))
        self.assertEqual(http.split_url("http://h?q={{secret:t}}#frag"), ("http", "h", "/?q={{secret:t}}"))
        for bad in ("no-scheme/path", "http:///path", "http://h/a b", "1x://h/"):
            with self.assertRaises(http.InvalidURL, msg=bad):
                http.split_url(bad)

    def test_url_without_query(self):
        self.assertEqual(http.url_without_query("https://h/bot{{secret:t}}/x?token={{secret:t}}"), "https://h/bot{{secret:t}}/x")
        self.assertEqual(http.url_without_query("https://h/x#f"), "https://h/x")

    def test_params_and_forms_keep_placeholders(self):
        self.assertEqual(http.encode_params({"a": "x y&", "t": "{{secret:tok}}", "n": None, "l": [1, 2]}), "a=x%20y%26&t={{secret:tok}}&l=1&l=2")


class ErrorTest(unittest.TestCase):
    def test_channel_errors_have_wit_values(self):
        t = kata.types
        self.assertEqual(kata.AuthFailed("no").to_wit(), t.ChannelError_AuthFailed("no"))
        self.assertEqual(kata.RateLimited(1500).to_wit(), t.ChannelError_RateLimited(1500))
        self.assertEqual(kata.NetworkError("x").to_wit(), t.ChannelError_Network("x"))
        self.assertEqual(kata.InvalidConfig("k").to_wit(), t.ChannelError_InvalidConfig("k"))
        self.assertEqual(type(kata.Unsupported().to_wit()), t.ChannelError_Unsupported)
        self.assertEqual(kata.Fatal("f").to_wit(), t.ChannelError_Fatal("f"))
        self.assertEqual(kata.InvalidArgs("a").to_wit(), t.ToolError_InvalidArgs("a"))

    def test_http_errors_map_to_channel_errors(self):
        denied = http.error_from_code(_code("HttpRequestDenied"), "https://evil.example/x")
        self.assertIsInstance(denied, PermissionError)
        self.assertIn("denied by the workspace policy", str(denied))
        self.assertIsInstance(kata.channel_error_from(denied), kata.InvalidConfig)
        refused = http.error_from_code(_code("ConnectionRefused"), "http://127.0.0.1:1/")
        self.assertEqual(str(refused), "request to http://127.0.0.1:1/ failed: the server refused the connection")
        self.assertIsInstance(refused, ConnectionError)
        self.assertIsInstance(kata.channel_error_from(refused), kata.NetworkError)
        self.assertIsInstance(http.error_from_code(_code("ConnectionTimeout"), "u"), TimeoutError)
        self.assertIsNone(kata.channel_error_from(KeyError("x")), "a bug is not a channel error")

    def test_status_errors(self):
        self.assertIsInstance(kata.status_error(401), kata.AuthFailed)
        self.assertEqual(kata.status_error(429, retry_after="2").retry_after_ms, 2000)
        self.assertIsInstance(kata.status_error(502), kata.NetworkError)
        self.assertIsInstance(kata.status_error(404, "gone"), kata.Fatal)

    def test_error_codes_read_as_sentences(self):
        t = kata._wit.http_types
        dns = t.ErrorCode_DnsError(t.DnsErrorPayload(rcode="failed to lookup address information", info_code=None))
        self.assertEqual(http.describe_error_code(dns), "the host name could not be resolved (failed to lookup address information)")
        self.assertEqual(
            http.describe_error_code(t.ErrorCode_HttpResponseBodySize(9)),
            "the response body is larger than allowed (limits.max_response) or than it said (9 bytes)",
        )
        self.assertEqual(http.describe_error_code(t.ErrorCode_InternalError(None)), "the HTTP client failed internally")


def _code(name):
    t = kata._wit.http_types
    return getattr(t, "ErrorCode_" + name)()


class FakeHostTest(unittest.TestCase):
    def test_config_state_log_and_http(self):
        def server(req):
            self.assertEqual(req.method, "POST")
            self.assertEqual(req.header("Content-Type"), "application/json")
            return http.Response(201, {"X-Id": "9"}, b'{"ok":true}')

        with FakeHost(config={"n": "5", "flag": "yes", "bad": "soon"}, http=server) as host:
            self.assertEqual(kata.config.get("n", type=int), 5)
            self.assertIs(kata.config.get("flag", type=bool), True)
            self.assertEqual(kata.config.get("missing", 7, type=int), 7)
            with self.assertRaises(kata.InvalidConfig):
                kata.config.get("bad", type=int)
            with self.assertRaises(kata.InvalidConfig):
                kata.config.require("missing")
            kata.state["a"] = "x"
            kata.state.set_json("j", {"k": 1})
            self.assertEqual((kata.state["a"], kata.state.get_json("j"), kata.state.keys()), (b"x", {"k": 1}, ["a", "j"]))
            del kata.state["a"]
            self.assertNotIn("a", kata.state)
            kata.log.info("hello")
            resp = http.post("https://h/x", json={"a": 1})
        self.assertEqual((resp.status, resp.ok, resp.json(), resp.headers["x-id"], resp.header("X-ID")), (201, True, {"ok": True}, "9", "9"))
        self.assertEqual(host.logs, [("info", "hello")])
        self.assertEqual(json.loads(host.requests[0].body), {"a": 1})

    def test_raise_for_status(self):
        with FakeHost(http=lambda req: (503, "down")):
            resp = http.get("https://h/x")
        self.assertFalse(resp.ok)
        with self.assertRaises(http.HTTPError) as cm:
            resp.raise_for_status()
        self.assertIsInstance(kata.channel_error_from(cm.exception), kata.NetworkError)

    def test_without_a_host_the_error_says_what_to_do(self):
        with self.assertRaises(RuntimeError) as cm:
            kata.config.get("x")
        self.assertIn("FakeHost", str(cm.exception))


class ExportTest(unittest.TestCase):
    def test_channel_connects_before_the_first_call(self):
        calls = []

        class Channel(kata.Channel):
            def connect(self):
                calls.append("connect")

            def poll(self, cursor):
                calls.append("poll")
                return kata.PollResult(messages=[], cursor=cursor, next_poll_ms=None)

        c = Channel()
        c.poll(None)
        c.poll("1")
        self.assertEqual(calls, ["connect", "poll", "poll"])
        with self.assertRaises(kata.Unsupported):
            c.subscribe()

    def test_tools_from_decorated_methods(self):
        class Tools(kata.Tools):
            @kata.tool("Echo.", schema={"type": "object"})
            def echo(self, args):
                return args

            @kata.tool("Break.", name="break")
            def broken(self, args):
                return 1 / 0

        t = Tools()
        self.assertEqual([(s.name, s.args_schema) for s in t.list()], [("echo", '{"type":"object"}'), ("break", '{"type":"object"}')])
        self.assertEqual(t.call("echo", '{"a":1}'), '{"a":1}')
        with self.assertRaises(kata.InvalidArgs):
            t.call("echo", "[1]")
        with self.assertRaises(kata.UnknownTool):
            t.call("nope", "{}")
        with self.assertRaises(kata.ToolFailed) as cm:
            t.call("break", "{}")
        self.assertEqual(str(cm.exception), "ZeroDivisionError: division by zero")

    def test_messages_and_receipts(self):
        m = kata.message("1", "c", "ann", "hi", group=True, mentioned=True, timestamp_ms=5)
        self.assertEqual((m.conversation_kind, m.mentioned, m.timestamp_ms, m.attachments), (kata.ConversationKind.GROUP, True, 5, []))
        r = kata.over_stream("k", ["PRIVMSG #c :hi", b"\x00"])
        self.assertEqual(r.frames, [kata.FrameText("PRIVMSG #c :hi"), kata.FrameBinary(b"\x00")])
        self.assertEqual(kata.secret("token"), "{{secret:token}}")

    def test_factories_fill_what_they_are_not_given(self):
        info = kata.channel_info("x", "1.0", ingress=["subscribe", kata.IngressMode.POLL])
        self.assertEqual(info.ingress, [kata.IngressMode.SUBSCRIBE, kata.IngressMode.POLL])
        out = kata.outbound_message("c1", "hi", idempotency_key="k", reply_to="7")
        self.assertEqual((out.conversation, out.text, out.idempotency_key, out.reply_to, out.thread), ("c1", "hi", "k", "7", None))
        r = kata.poll_result([kata.message("1", "c", "s", "t", timestamp_ms=0)], cursor="1")
        self.assertEqual((len(r.messages), r.cursor, r.next_poll_ms), (1, "1", None))

    def test_streams(self):
        s = kata.subscription("tcp-lines", "ircs://irc.example.org", initial_frames=["NICK kata"], heartbeat_ms=30_000)
        self.assertEqual((s.kind, s.initial_frames, s.heartbeat_ms), (kata.StreamKind.TCP_LINES, [kata.FrameText("NICK kata")], 30_000))
        s = kata.subscription(kata.StreamKind.WEBSOCKET, "wss://h/gw", headers={"Authorization": "Bot {{secret:t}}"})
        self.assertEqual(s.headers, [("Authorization", "Bot {{secret:t}}")])
        r = kata.frame_result(replies=["PONG :x"])
        self.assertEqual((r.messages, r.replies), ([], [kata.FrameText("PONG :x")]))
        self.assertTrue(kata.is_heartbeat(kata.FrameText("")))
        self.assertFalse(kata.is_heartbeat(kata.FrameBinary(b"")))


class HookAndNetTest(unittest.TestCase):
    def test_a_hook_lists_the_points_it_overrides(self):
        import subprocess

        code = (
            "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "import kata\n"
            "class Hooks(kata.Hooks):\n"
            "    def before_tool_call(self, call):\n"
            "        raise kata.Refuse('no')\n"
            "print([p.name for p in Hooks().points()])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, os.path.join(HERE, "..", "bindings", "hook"), os.path.join(HERE, "..")],
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertEqual(out.stdout.strip(), "['BEFORE_TOOL_CALL']")

    def test_connection_errors_map_to_channel_errors(self):
        c = kata._wit.connections
        denied = kata.net._error(c.ConnectionError_Denied("add tcp://h:25"), "tcp://h:25")
        self.assertIsInstance(denied, PermissionError)
        self.assertIsInstance(kata.channel_error_from(denied), kata.InvalidConfig)
        self.assertIsInstance(kata.channel_error_from(kata.net._error(c.ConnectionError_Timeout(), "u")), kata.NetworkError)
        self.assertIsInstance(kata.net._error(c.ConnectionError_Closed(), "u"), EOFError)

    def test_channels_support_no_action_by_default(self):
        class Channel(kata.Channel):
            pass

        with self.assertRaises(kata.Unsupported):
            Channel().act(kata.ActionTyping(kata.channel_types.Target(conversation="c", thread=None)))
        info = kata.channel_info("x", "1", features=["typing"])
        self.assertEqual(info.features, [kata.Feature.TYPING])


if __name__ == "__main__":
    unittest.main()
