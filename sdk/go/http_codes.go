package kata

import (
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"

	"kata/wit/wasi_http_types"
)

// DescribeErrorCode is a wasi:http error code as a short sentence for
// people (it ends up in kata's log and `kata status`), with the details the
// code carries, e.g. "the host name could not be resolved (failed to lookup
// address information)".
func DescribeErrorCode(code wasi_http_types.ErrorCode) string {
	with := func(text string, detail witTypes.Option[string]) string {
		if d := detail.SomeOr(""); d != "" {
			return text + " (" + d + ")"
		}
		return text
	}
	size := func(text string, n witTypes.Option[uint64]) string {
		if n.IsSome() {
			return fmt.Sprintf("%s (%d bytes)", text, n.Some())
		}
		return text
	}
	switch code.Tag() {
	case wasi_http_types.ErrorCodeDnsTimeout:
		return "the DNS lookup timed out"
	case wasi_http_types.ErrorCodeDnsError:
		return with("the host name could not be resolved", code.DnsError().Rcode)
	case wasi_http_types.ErrorCodeDestinationNotFound:
		return "the host was not found"
	case wasi_http_types.ErrorCodeDestinationUnavailable:
		return "the host is unavailable"
	case wasi_http_types.ErrorCodeDestinationIpProhibited:
		return "the destination address is not allowed"
	case wasi_http_types.ErrorCodeDestinationIpUnroutable:
		return "the destination address cannot be reached"
	case wasi_http_types.ErrorCodeConnectionRefused:
		return "the server refused the connection"
	case wasi_http_types.ErrorCodeConnectionTerminated:
		return "the connection was closed unexpectedly"
	case wasi_http_types.ErrorCodeConnectionTimeout:
		return "connecting timed out"
	case wasi_http_types.ErrorCodeConnectionReadTimeout:
		return "the server stopped sending (read timeout)"
	case wasi_http_types.ErrorCodeConnectionWriteTimeout:
		return "the server stopped taking data (write timeout)"
	case wasi_http_types.ErrorCodeConnectionLimitReached:
		return "too many requests or connections (a rate or connection limit was reached)"
	case wasi_http_types.ErrorCodeTlsProtocolError:
		return "the TLS handshake failed"
	case wasi_http_types.ErrorCodeTlsCertificateError:
		return "the server's TLS certificate was not accepted"
	case wasi_http_types.ErrorCodeTlsAlertReceived:
		return with("the server ended TLS with an alert", code.TlsAlertReceived().AlertMessage)
	case wasi_http_types.ErrorCodeHttpRequestDenied:
		return "the request was denied by the workspace policy (kata.toml)"
	case wasi_http_types.ErrorCodeHttpRequestLengthRequired:
		return "the server requires a Content-Length"
	case wasi_http_types.ErrorCodeHttpRequestBodySize:
		return size("the request body does not match its declared size", code.HttpRequestBodySize())
	case wasi_http_types.ErrorCodeHttpRequestMethodInvalid:
		return "the request method is invalid"
	case wasi_http_types.ErrorCodeHttpRequestUriInvalid:
		return "the request URL is invalid"
	case wasi_http_types.ErrorCodeHttpRequestUriTooLong:
		return "the request URL is too long"
	case wasi_http_types.ErrorCodeHttpRequestHeaderSectionSize, wasi_http_types.ErrorCodeHttpRequestHeaderSize:
		return "the request headers are too large"
	case wasi_http_types.ErrorCodeHttpRequestTrailerSectionSize, wasi_http_types.ErrorCodeHttpRequestTrailerSize:
		return "the request trailers are too large"
	case wasi_http_types.ErrorCodeHttpResponseIncomplete:
		return "the response ended before it was complete"
	case wasi_http_types.ErrorCodeHttpResponseHeaderSectionSize, wasi_http_types.ErrorCodeHttpResponseHeaderSize:
		return "the response headers are too large"
	case wasi_http_types.ErrorCodeHttpResponseBodySize:
		return size("the response body is larger than allowed (limits.max_response) or than it said", code.HttpResponseBodySize())
	case wasi_http_types.ErrorCodeHttpResponseTrailerSectionSize, wasi_http_types.ErrorCodeHttpResponseTrailerSize:
		return "the response trailers are too large"
	case wasi_http_types.ErrorCodeHttpResponseTransferCoding:
		return with("the response uses a transfer coding that is not supported", code.HttpResponseTransferCoding())
	case wasi_http_types.ErrorCodeHttpResponseContentCoding:
		return with("the response uses a content coding that is not supported", code.HttpResponseContentCoding())
	case wasi_http_types.ErrorCodeHttpResponseTimeout:
		return "the server did not answer in time"
	case wasi_http_types.ErrorCodeHttpUpgradeFailed:
		return "the protocol upgrade failed"
	case wasi_http_types.ErrorCodeHttpProtocolError:
		return "the HTTP exchange broke the protocol"
	case wasi_http_types.ErrorCodeLoopDetected:
		return "a request loop was detected"
	case wasi_http_types.ErrorCodeConfigurationError:
		return "the HTTP client is misconfigured"
	case wasi_http_types.ErrorCodeInternalError:
		return with("the HTTP client failed internally", code.InternalError())
	}
	return fmt.Sprintf("HTTP error code %d", code.Tag())
}

// errorFromCode classifies a wasi:http error code for a request to url.
func errorFromCode(code wasi_http_types.ErrorCode, url string) *HTTPError {
	if code.Tag() == wasi_http_types.ErrorCodeHttpRequestDenied {
		return &HTTPError{Kind: HTTPDenied, URL: url, Reason: DescribeErrorCode(code)}
	}
	return &HTTPError{Kind: HTTPTransport, URL: url, Reason: DescribeErrorCode(code)}
}
