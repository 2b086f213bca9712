// Package nethttp lets plugins use Go's net/http client: its Transport
// sends requests through the kata host (wasi:http) with kata.Do, so the
// host's grants and `{{secret:NAME}}` placeholders work as with kata.Get.
//
//	client := &http.Client{Transport: nethttp.Transport{}}
//	resp, err := client.Get(base + "/messages")
//
// or nethttp.Install() once to make http.Get, http.Post and
// http.DefaultClient use it. Go's net/http has no transport of its own on
// wasip1 (no sockets). The errors are the same *kata.HTTPError, wrapped in
// *url.Error by http.Client (errors.As finds them).
//
// The price is size: net/http brings crypto/tls and more, about 6 MB, so a
// channel using it is ~11 MB where one using kata.Get is ~5 MB. Prefer
// kata.Get/kata.Do unless you reuse code written for net/http.
//
// Placeholders in the path are sent percent-encoded (%7B%7Bsecret:NAME%7D%7D),
// which the host recognises as well.
package nethttp

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"

	"kata"
)

// Transport is an http.RoundTripper over the kata host. The zero value
// is ready to use.
type Transport struct {
	// MaxBody refuses response bodies larger than this (zero:
	// kata.MaxBodyBytes).
	MaxBody int
}

// RoundTrip sends req through the host and reads the whole response.
func (t Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the request body: %w", err)
		}
		body = b
	}
	header := kata.Headers{}
	for name, values := range req.Header {
		header[strings.ToLower(name)] = strings.Join(values, ", ")
	}
	resp, err := kata.Do(&kata.Request{Method: req.Method, URL: req.URL.String(), Header: header, Body: body, MaxBody: t.MaxBody})
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	for name, value := range resp.Header {
		h.Set(name, value)
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", resp.Status, http.StatusText(resp.Status)),
		StatusCode:    resp.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(resp.Body)),
		ContentLength: int64(len(resp.Body)),
		Request:       req,
	}, nil
}

// Install makes http.DefaultTransport (and so http.Get, http.Post and
// http.DefaultClient) send through the kata host.
func Install() { http.DefaultTransport = Transport{} }
