//go:build !wasip1

package kata

func hostSend(method string, parts URLParts, req *Request, limit int) (*Response, error) {
	return nil, &HTTPError{Kind: HTTPTransport, URL: parts.Shown, Reason: "HTTP needs the kata host (this is a native build, e.g. go test)"}
}
