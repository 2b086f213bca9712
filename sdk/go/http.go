package kata

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"
)

// HTTP over the host's standard wasi:http/outgoing-handler. Go's net/http
// has no transport on wasip1; this small client covers what plugins do:
//
//	resp, err := kata.Get(base+"/messages", kata.Headers{"authorization": "Bearer {{secret:token}}"})
//	if err != nil {
//		return err // a refused host is an *HTTPError with Kind HTTPDenied
//	}
//	if !resp.OK() { ... resp.Status ... }
//	err = resp.JSON(&items)
//
// Policy and secrets: the host only lets requests through to the hosts
// granted to the plugin in kata.toml (`[plugins.NAME] network`); a refused
// request fails with an *HTTPError of Kind HTTPDenied whose text says so.
// Secrets are written as `{{secret:NAME}}` placeholders in the URL (path or
// query) or in header values; this client passes them through byte for byte
// and the host substitutes the value for granted hosts only: the plugin
// never sees it.

// MaxBodyBytes is the default limit on a response body: 16 MiB.
const MaxBodyBytes = 16 << 20

// Headers are request headers, name to value (values may hold
// `{{secret:NAME}}` placeholders).
type Headers map[string]string

// Request is an HTTP request; send it with Do.
type Request struct {
	// Method is GET, POST, …; empty means GET.
	Method string
	// URL is scheme://host[:port]/path?query, placeholders allowed.
	URL string
	// Header holds the request headers.
	Header Headers
	// Body is sent as is (a Content-Length is added).
	Body []byte
	// Timeout bounds the wait for the first byte and between body chunks
	// (zero: the host's defaults).
	Timeout time.Duration
	// MaxBody refuses response bodies larger than this (zero: MaxBodyBytes).
	MaxBody int
}

// Response is a complete HTTP response.
type Response struct {
	// Status is the status code, e.g. 200.
	Status int
	// Header holds the response headers, names in lower case (the first
	// value of a repeated header).
	Header map[string]string
	// Body is the whole body.
	Body []byte
}

// OK reports whether the status is 2xx.
func (r *Response) OK() bool { return r.Status >= 200 && r.Status < 300 }

// Text is the body as a string.
func (r *Response) Text() string { return string(r.Body) }

// JSON decodes the body into v.
func (r *Response) JSON(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return &HTTPError{Kind: HTTPDecode, Reason: err.Error()}
	}
	return nil
}

// HTTPErrorKind says why a request got no response.
type HTTPErrorKind int

// The kinds of HTTPError.
const (
	// HTTPTransport: DNS, connection refused, TLS, timeout, a broken body.
	HTTPTransport HTTPErrorKind = iota
	// HTTPDenied: the workspace policy (kata.toml) refused the destination.
	HTTPDenied
	// HTTPInvalidURL: the URL could not be split into scheme, host and path.
	HTTPInvalidURL
	// HTTPInvalidRequest: a bad header or method.
	HTTPInvalidRequest
	// HTTPBodyTooLarge: the response body was larger than MaxBody.
	HTTPBodyTooLarge
	// HTTPDecode: Response.JSON could not decode the body.
	HTTPDecode
)

// HTTPError is why a request failed. Its text never holds the URL's query
// (which may carry placeholders or tokens).
type HTTPError struct {
	Kind HTTPErrorKind
	// URL is the request's URL without its query.
	URL string
	// Reason is the host's error as a short sentence.
	Reason string
}

func (e *HTTPError) Error() string {
	switch e.Kind {
	case HTTPDenied:
		return fmt.Sprintf("request to %s was denied by the workspace policy (kata.toml)", e.URL)
	case HTTPInvalidURL:
		return fmt.Sprintf("invalid URL %s: %s", e.URL, e.Reason)
	case HTTPInvalidRequest:
		return "invalid request: " + e.Reason
	case HTTPBodyTooLarge:
		return fmt.Sprintf("response from %s is larger than %s", e.URL, e.Reason)
	case HTTPDecode:
		return "cannot decode response: " + e.Reason
	}
	return fmt.Sprintf("request to %s failed: %s", e.URL, e.Reason)
}

// Denied reports whether the host's policy refused the request.
func (e *HTTPError) Denied() bool { return e.Kind == HTTPDenied }

// ErrDenied matches, with errors.Is, a request the workspace policy refused
// (so does fs.ErrPermission).
var ErrDenied = errors.New("denied by the workspace policy (kata.toml)")

// Is makes errors.Is(err, kata.ErrDenied) and errors.Is(err,
// fs.ErrPermission) true for a refused request.
func (e *HTTPError) Is(target error) bool {
	return e.Kind == HTTPDenied && (target == ErrDenied || target == fs.ErrPermission)
}

// Do sends req and reads the whole response. Any status is a Response;
// errors are failures to get one (an *HTTPError).
func Do(req *Request) (*Response, error) {
	method := req.Method
	if method == "" {
		method = "GET"
	}
	parts, err := SplitURL(req.URL)
	if err != nil {
		return nil, err
	}
	limit := req.MaxBody
	if limit <= 0 {
		limit = MaxBodyBytes
	}
	return hostSend(method, parts, req, limit)
}

// Get sends a GET request.
func Get(url string, header Headers) (*Response, error) {
	return Do(&Request{Method: "GET", URL: url, Header: header})
}

// Post sends a POST request with body.
func Post(url string, header Headers, body []byte) (*Response, error) {
	return Do(&Request{Method: "POST", URL: url, Header: header, Body: body})
}

// PostJSON sends v as a JSON body (content-type application/json unless
// header says otherwise).
func PostJSON(url string, header Headers, v any) (*Response, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, &HTTPError{Kind: HTTPInvalidRequest, Reason: "cannot encode the JSON body: " + err.Error()}
	}
	h := Headers{}
	for k, v := range header {
		h[k] = v
	}
	if !hasHeader(h, "content-type") {
		h["content-type"] = "application/json"
	}
	return Do(&Request{Method: "POST", URL: url, Header: h, Body: body})
}

func hasHeader(h Headers, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// URLParts is a URL split the way wasi:http wants it.
type URLParts struct {
	// Scheme is http, https or another scheme, without "://".
	Scheme string
	// Authority is host[:port].
	Authority string
	// PathWithQuery always starts with "/"; the fragment is dropped.
	PathWithQuery string
	// Shown is the URL without query and fragment, for errors and logs.
	Shown string
}

// SplitURL splits url into scheme, authority and path-with-query without
// decoding or encoding anything, so `{{secret:NAME}}` placeholders pass
// through unchanged.
func SplitURL(url string) (URLParts, error) {
	shown := URLWithoutQuery(url)
	invalid := func(reason string) (URLParts, error) {
		return URLParts{}, &HTTPError{Kind: HTTPInvalidURL, URL: shown, Reason: reason}
	}
	for _, c := range url {
		if c <= ' ' || c == 0x7f {
			return invalid("contains whitespace or control characters")
		}
	}
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return invalid("expected scheme://host/path")
	}
	if !validScheme(scheme) {
		return invalid("bad scheme")
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if authority == "" {
		return invalid("missing host")
	}
	if i := strings.IndexByte(tail, '#'); i >= 0 {
		tail = tail[:i]
	}
	if !strings.HasPrefix(tail, "/") {
		tail = "/" + tail
	}
	return URLParts{Scheme: scheme, Authority: authority, PathWithQuery: tail, Shown: shown}, nil
}

func validScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// URLWithoutQuery is url without its query and fragment: safe to show in
// errors and logs.
func URLWithoutQuery(url string) string {
	if i := strings.IndexAny(url, "?#"); i >= 0 {
		return url[:i]
	}
	return url
}
