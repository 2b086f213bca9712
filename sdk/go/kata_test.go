//go:build !wasip1

package kata

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	witTypes "go.bytecodealliance.org/pkg/wit/types"

	"kata/wit/wasi_http_types"
)

func TestSplitKeepsPlaceholders(t *testing.T) {
	p, err := SplitURL("https://api.telegram.org/bot{{secret:bot_token}}/getUpdates?offset=5&timeout=25")
	if err != nil {
		t.Fatal(err)
	}
	if p.Scheme != "https" || p.Authority != "api.telegram.org" || p.PathWithQuery != "/bot{{secret:bot_token}}/getUpdates?offset=5&timeout=25" {
		t.Errorf("%+v", p)
	}
	if p.Shown != "https://api.telegram.org/bot{{secret:bot_token}}/getUpdates" {
		t.Errorf("shown %q", p.Shown)
	}
}

func TestSplitEdgeCases(t *testing.T) {
	p, _ := SplitURL("http://127.0.0.1:9000")
	if p.Authority != "127.0.0.1:9000" || p.PathWithQuery != "/" {
		t.Errorf("%+v", p)
	}
	p, _ = SplitURL("http://h?q={{secret:t}}#frag")
	if p.Authority != "h" || p.PathWithQuery != "/?q={{secret:t}}" {
		t.Errorf("%+v", p)
	}
	for _, bad := range []string{"no-scheme/path", "http:///path", "http://h/a b", "1x://h/"} {
		var e *HTTPError
		if _, err := SplitURL(bad); !errors.As(err, &e) || e.Kind != HTTPInvalidURL {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestDeniedBecomesInvalidConfigNamingTheURL(t *testing.T) {
	err := error(errorFromCode(wasi_http_types.MakeErrorCodeHttpRequestDenied(), "https://evil.example/x"))
	if err.Error() != "request to https://evil.example/x was denied by the workspace policy (kata.toml)" {
		t.Errorf("%v", err)
	}
	if !errors.Is(fmt.Errorf("poll: %w", err), ErrDenied) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("errors.Is: %v", err)
	}
	if errors.Is(errorFromCode(wasi_http_types.MakeErrorCodeConnectionRefused(), "x"), ErrDenied) {
		t.Error("a refused connection is not a denial")
	}
	var h *HTTPError
	if !errors.As(fmt.Errorf("poll: %w", err), &h) || !h.Denied() {
		t.Errorf("not an HTTPError: %v", err)
	}
	e := ChannelErrorOf(fmt.Errorf("poll: %w", err))
	if e.Kind != KindInvalidConfig || !strings.Contains(e.Message, "grant its host in kata.toml") {
		t.Errorf("%+v", e)
	}
}

func TestTransportBecomesNetwork(t *testing.T) {
	err := errorFromCode(wasi_http_types.MakeErrorCodeConnectionRefused(), "http://127.0.0.1:1/")
	if err.Error() != "request to http://127.0.0.1:1/ failed: the server refused the connection" {
		t.Errorf("%v", err)
	}
	if e := ChannelErrorOf(err); e.Kind != KindNetwork {
		t.Errorf("%+v", e)
	}
}

func TestErrorCodesReadAsSentences(t *testing.T) {
	dns := wasi_http_types.MakeErrorCodeDnsError(wasi_http_types.DnsErrorPayload{Rcode: witTypes.Some("failed to lookup address information")})
	for code, want := range map[*wasi_http_types.ErrorCode]string{
		&dns: "the host name could not be resolved (failed to lookup address information)",
		ptr(wasi_http_types.MakeErrorCodeHttpResponseBodySize(witTypes.Some[uint64](9))): "the response body is larger than allowed (limits.max_response) or than it said (9 bytes)",
		ptr(wasi_http_types.MakeErrorCodeInternalError(witTypes.None[string]())):         "the HTTP client failed internally",
	} {
		if got := DescribeErrorCode(*code); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestErrorKinds(t *testing.T) {
	if e := ChannelErrorOf(RateLimited(500)); e.Kind != KindRateLimited || e.RetryAfterMs != 500 {
		t.Errorf("%+v", e)
	}
	if e := ChannelErrorOf(errors.New("boom")); e.Kind != KindFatal || e.Message != "boom" {
		t.Errorf("%+v", e)
	}
	if e := ToolErrorOf(InvalidArgs("need %s", "text")); e.Kind != KindInvalidArgs || e.Message != "need text" {
		t.Errorf("%+v", e)
	}
	if e := ToolErrorOf(AuthFailed("x")); e.Kind != KindToolFailed {
		t.Errorf("a channel kind from a tool is a failure: %+v", e)
	}
}

func TestNativeHostStandIn(t *testing.T) {
	SetTestConfig(map[string]string{"n": " 25 ", "bad": "soon"})
	if n, err := ConfigUint("n", 1); err != nil || n != 25 {
		t.Errorf("%d %v", n, err)
	}
	if n, _ := ConfigUint("missing", 7); n != 7 {
		t.Errorf("default %d", n)
	}
	var e *Error
	if _, err := ConfigUint("bad", 1); !errors.As(err, &e) || e.Kind != KindInvalidConfig || !strings.Contains(e.Message, "`bad`") {
		t.Errorf("%v", err)
	}
	if _, err := RequireConfig("missing"); err == nil {
		t.Error("missing key accepted")
	}
	_ = StateSetString("a/1", "x")
	_ = StateSetString("b", "y")
	if v, ok := StateGetString("a/1"); !ok || v != "x" {
		t.Errorf("%q %v", v, ok)
	}
	if keys := StateKeys("a/"); len(keys) != 1 || keys[0] != "a/1" {
		t.Errorf("%v", keys)
	}
	StateDelete("a/1")
	if _, ok := StateGet("a/1"); ok {
		t.Error("deleted key still there")
	}
	if _, err := Get("http://127.0.0.1:1/", nil); err == nil {
		t.Error("native HTTP must fail")
	}
}

func TestOptions(t *testing.T) {
	var m Message
	if m.Thread.IsSome() {
		t.Error("zero Option must be None")
	}
	s := "x"
	if OptionOf(&s).SomeOr("") != "x" || OptionOf[string](nil).IsSome() || *Ptr(Some(3)) != 3 || Ptr(None[int]()) != nil {
		t.Error("option helpers")
	}
	if text, ok := FrameText(TextFrame("PING")); !ok || text != "PING" {
		t.Error("frames")
	}
}

func TestHeaderPairs(t *testing.T) {
	h := Header("authorization", "Bearer {{secret:token}}")
	if h.F0 != "authorization" || h.F1 != "Bearer {{secret:token}}" {
		t.Errorf("%+v", h)
	}
}
