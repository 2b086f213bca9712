//go:build wasip1

package kata

import (
	"fmt"
	"strconv"
	"strings"

	witTypes "go.bytecodealliance.org/pkg/wit/types"

	"kata/internal/gc"
	"kata/wit/wasi_http_outgoing_handler"
	"kata/wit/wasi_http_types"
	"kata/wit/wasi_io_streams"
)

// writeChunk is the most bytes blocking-write-and-flush accepts in one call.
const writeChunk = 4096

// readChunk is how many bytes to ask for per read of a response body.
const readChunk = 64 * 1024

func wasiMethod(m string) wasi_http_types.Method {
	switch strings.ToUpper(m) {
	case "GET":
		return wasi_http_types.MakeMethodGet()
	case "HEAD":
		return wasi_http_types.MakeMethodHead()
	case "POST":
		return wasi_http_types.MakeMethodPost()
	case "PUT":
		return wasi_http_types.MakeMethodPut()
	case "DELETE":
		return wasi_http_types.MakeMethodDelete()
	case "PATCH":
		return wasi_http_types.MakeMethodPatch()
	case "OPTIONS":
		return wasi_http_types.MakeMethodOptions()
	case "CONNECT":
		return wasi_http_types.MakeMethodConnect()
	case "TRACE":
		return wasi_http_types.MakeMethodTrace()
	}
	return wasi_http_types.MakeMethodOther(m)
}

func hostSend(method string, parts URLParts, req *Request, limit int) (*Response, error) {
	// A safe point to collect (see kata/internal/gc): a plugin that polls
	// in a loop within one call still gets its garbage collected.
	gc.MaybeCollect()
	shown := parts.Shown
	invalidURL := func(what string) error {
		return &HTTPError{Kind: HTTPInvalidURL, URL: shown, Reason: "the host rejected the " + what}
	}

	var fields []witTypes.Tuple2[string, []uint8]
	for name, value := range req.Header {
		fields = append(fields, witTypes.Tuple2[string, []uint8]{F0: name, F1: []byte(value)})
	}
	if req.Body != nil && !hasHeader(req.Header, "content-length") {
		fields = append(fields, witTypes.Tuple2[string, []uint8]{F0: "content-length", F1: []byte(strconv.Itoa(len(req.Body)))})
	}
	headers := wasi_http_types.FieldsFromList(fields)
	if headers.IsErr() {
		return nil, &HTTPError{Kind: HTTPInvalidRequest, Reason: fmt.Sprintf("invalid header (error %d)", headers.Err().Tag())}
	}

	request := wasi_http_types.MakeOutgoingRequest(headers.Ok())
	defer request.Drop()
	if request.SetMethod(wasiMethod(method)).IsErr() {
		return nil, &HTTPError{Kind: HTTPInvalidRequest, Reason: "bad method " + method}
	}
	var scheme wasi_http_types.Scheme
	switch strings.ToLower(parts.Scheme) {
	case "http":
		scheme = wasi_http_types.MakeSchemeHttp()
	case "https":
		scheme = wasi_http_types.MakeSchemeHttps()
	default:
		scheme = wasi_http_types.MakeSchemeOther(parts.Scheme)
	}
	if request.SetScheme(witTypes.Some(scheme)).IsErr() {
		return nil, invalidURL("scheme")
	}
	if request.SetAuthority(witTypes.Some(parts.Authority)).IsErr() {
		return nil, invalidURL("host")
	}
	if request.SetPathWithQuery(witTypes.Some(parts.PathWithQuery)).IsErr() {
		return nil, invalidURL("path")
	}
	outgoingBody := request.Body()
	if outgoingBody.IsErr() {
		return nil, &HTTPError{Kind: HTTPInvalidRequest, Reason: "request body already taken"}
	}

	options := witTypes.None[*wasi_http_types.RequestOptions]()
	if req.Timeout > 0 {
		o := wasi_http_types.MakeRequestOptions()
		nanos := uint64(req.Timeout.Nanoseconds())
		// Hosts may not support these options; then their defaults apply.
		o.SetFirstByteTimeout(witTypes.Some(nanos))
		o.SetBetweenBytesTimeout(witTypes.Some(nanos))
		options = witTypes.Some(o)
	}

	handled := wasi_http_outgoing_handler.Handle(request, options)
	if handled.IsErr() {
		return nil, errorFromCode(handled.Err(), shown)
	}
	future := handled.Ok()
	defer future.Drop()

	// Write the body after `handle` so large bodies stream instead of filling
	// a buffer nobody reads yet. If the host refused the request the write
	// fails; the response future then says why, so check it first.
	written := writeBody(outgoingBody.Ok(), req.Body)

	pollable := future.Subscribe()
	pollable.Block()
	pollable.Drop()
	got := future.Get()
	if got.IsNone() {
		return nil, &HTTPError{Kind: HTTPTransport, URL: shown, Reason: "response not ready after waiting"}
	}
	outer := got.Some()
	if outer.IsErr() {
		return nil, &HTTPError{Kind: HTTPTransport, URL: shown, Reason: "response already taken"}
	}
	inner := outer.Ok()
	if inner.IsErr() {
		return nil, errorFromCode(inner.Err(), shown)
	}
	if written != "" {
		return nil, &HTTPError{Kind: HTTPTransport, URL: shown, Reason: written}
	}
	response := inner.Ok()
	defer response.Drop()
	return readResponse(response, shown, limit)
}

// writeBody writes data (if any) to body and finishes it; the error text,
// or "".
func writeBody(body *wasi_http_types.OutgoingBody, data []byte) string {
	if data != nil {
		s := body.Write()
		if s.IsErr() {
			body.Drop()
			return "request body stream unavailable"
		}
		stream := s.Ok()
		for len(data) > 0 {
			n := min(len(data), writeChunk)
			if r := stream.BlockingWriteAndFlush(data[:n]); r.IsErr() {
				stream.Drop()
				body.Drop()
				return streamErrorText(r.Err())
			}
			data = data[n:]
		}
		// The stream is a child of the body: drop it before finishing.
		stream.Drop()
	}
	if r := wasi_http_types.OutgoingBodyFinish(body, witTypes.None[*wasi_http_types.Fields]()); r.IsErr() {
		return DescribeErrorCode(r.Err())
	}
	return ""
}

// streamErrorText describes a stream error, preferring the HTTP error code
// behind it.
func streamErrorText(err wasi_io_streams.StreamError) string {
	if err.Tag() == wasi_io_streams.StreamErrorClosed {
		return "the connection closed"
	}
	ioErr := err.LastOperationFailed()
	defer ioErr.Drop()
	if code := wasi_http_types.HttpErrorCode(ioErr); code.IsSome() {
		return DescribeErrorCode(code.Some())
	}
	return "I/O error: " + ioErr.ToDebugString()
}

// readResponse reads status, headers and the whole body (up to limit bytes).
func readResponse(response *wasi_http_types.IncomingResponse, url string, limit int) (*Response, error) {
	transport := func(reason string) error { return &HTTPError{Kind: HTTPTransport, URL: url, Reason: reason} }
	resp := &Response{Status: int(response.Status()), Header: map[string]string{}}
	fields := response.Headers()
	for _, e := range fields.Entries() {
		name := strings.ToLower(e.F0)
		if _, seen := resp.Header[name]; !seen {
			resp.Header[name] = string(e.F1)
		}
	}
	fields.Drop()
	consumed := response.Consume()
	if consumed.IsErr() {
		return nil, transport("response body already consumed")
	}
	body := consumed.Ok()
	s := body.Stream()
	if s.IsErr() {
		body.Drop()
		return nil, transport("response body stream unavailable")
	}
	stream := s.Ok()
	for {
		r := stream.BlockingRead(readChunk)
		if r.IsErr() {
			e := r.Err()
			if e.Tag() == wasi_io_streams.StreamErrorClosed {
				break
			}
			stream.Drop()
			body.Drop()
			return nil, transport(streamErrorText(e))
		}
		chunk := r.Ok()
		if len(resp.Body)+len(chunk) > limit {
			stream.Drop()
			body.Drop()
			return nil, &HTTPError{Kind: HTTPBodyTooLarge, URL: url, Reason: fmt.Sprintf("%d bytes", limit)}
		}
		resp.Body = append(resp.Body, chunk...)
	}
	stream.Drop()
	trailers := wasi_http_types.IncomingBodyFinish(body)
	trailers.Drop()
	return resp, nil
}
