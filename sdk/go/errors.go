package kata

import (
	"errors"
	"fmt"
)

// ErrorKind is how the host treats a failed channel or tool call.
type ErrorKind int

// The kinds of ChannelError and ToolError.
const (
	// KindFatal: anything retrying will not fix (the channel default).
	KindFatal ErrorKind = iota
	// KindAuthFailed: the credentials were refused; the host stops the
	// channel until the user fixes the workspace.
	KindAuthFailed
	// KindRateLimited: retry after RetryAfterMs.
	KindRateLimited
	// KindNetwork: a transient failure; the host retries with backoff.
	KindNetwork
	// KindInvalidConfig: the plugin's configuration in kata.toml is missing
	// or wrong; the message names the key.
	KindInvalidConfig
	// KindUnsupported: the plugin does not implement the operation.
	KindUnsupported
	// KindUnknownTool: no tool of that name.
	KindUnknownTool
	// KindInvalidArgs: the tool's arguments did not match its schema.
	KindInvalidArgs
	// KindToolFailed: the tool ran and failed (the tool default).
	KindToolFailed
)

func (k ErrorKind) String() string {
	switch k {
	case KindAuthFailed:
		return "auth-failed"
	case KindRateLimited:
		return "rate-limited"
	case KindNetwork:
		return "network"
	case KindInvalidConfig:
		return "invalid-config"
	case KindUnsupported:
		return "unsupported"
	case KindUnknownTool:
		return "unknown-tool"
	case KindInvalidArgs:
		return "invalid-args"
	case KindToolFailed:
		return "failed"
	default:
		return "fatal"
	}
}

// Error is an error the host understands: it becomes the WIT channel-error
// or tool-error of its Kind. Make one with AuthFailed, RateLimited,
// NetworkError, InvalidConfig, Unsupported, Fatal, UnknownTool, InvalidArgs
// or ToolFailed; any other error a channel returns is fatal (an HTTPError
// is mapped by ErrorKindOf), any other error a tool returns is failed.
type Error struct {
	Kind ErrorKind
	// Message says what went wrong (empty for KindUnsupported).
	Message string
	// RetryAfterMs is the wait asked for by KindRateLimited.
	RetryAfterMs uint64
}

func (e *Error) Error() string {
	switch e.Kind {
	case KindRateLimited:
		return fmt.Sprintf("rate-limited: retry after %d ms", e.RetryAfterMs)
	case KindUnsupported:
		return "unsupported"
	}
	return e.Kind.String() + ": " + e.Message
}

// AuthFailed: the credentials were refused (e.g. HTTP 401); the text says which.
func AuthFailed(format string, args ...any) error {
	return &Error{Kind: KindAuthFailed, Message: fmt.Sprintf(format, args...)}
}

// RateLimited: the network asked to slow down; retry after ms milliseconds.
func RateLimited(ms uint64) error { return &Error{Kind: KindRateLimited, RetryAfterMs: ms} }

// NetworkError: a transient failure (connection refused, timeout, HTTP 5xx).
func NetworkError(format string, args ...any) error {
	return &Error{Kind: KindNetwork, Message: fmt.Sprintf(format, args...)}
}

// InvalidConfig: the configuration in kata.toml is missing or wrong; name the key.
func InvalidConfig(format string, args ...any) error {
	return &Error{Kind: KindInvalidConfig, Message: fmt.Sprintf(format, args...)}
}

// Unsupported: the plugin does not implement this operation.
func Unsupported() error { return &Error{Kind: KindUnsupported} }

// Fatal: anything else that retrying will not fix.
func Fatal(format string, args ...any) error {
	return &Error{Kind: KindFatal, Message: fmt.Sprintf(format, args...)}
}

// UnknownTool: a tools plugin was asked for a tool it does not have.
func UnknownTool(name string) error { return &Error{Kind: KindUnknownTool, Message: name} }

// InvalidArgs: a tool's arguments did not match its schema; say how.
func InvalidArgs(format string, args ...any) error {
	return &Error{Kind: KindInvalidArgs, Message: fmt.Sprintf(format, args...)}
}

// ToolFailed: the tool ran and failed; the text is shown to the agent.
func ToolFailed(format string, args ...any) error {
	return &Error{Kind: KindToolFailed, Message: fmt.Sprintf(format, args...)}
}

// ChannelErrorOf is how the host will see err returned from a channel call:
// an *Error keeps its kind; an *HTTPError for a request the workspace
// policy refused becomes KindInvalidConfig (the user must grant the host),
// a transport failure KindNetwork (retried), an invalid URL
// KindInvalidConfig; anything else is KindFatal with err's text.
func ChannelErrorOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var h *HTTPError
	if errors.As(err, &h) {
		switch h.Kind {
		case HTTPDenied:
			return &Error{Kind: KindInvalidConfig, Message: h.Error() + ": grant its host in kata.toml [plugins.NAME] network"}
		case HTTPTransport:
			return &Error{Kind: KindNetwork, Message: err.Error()}
		case HTTPInvalidURL:
			return &Error{Kind: KindInvalidConfig, Message: err.Error()}
		}
	}
	return &Error{Kind: KindFatal, Message: err.Error()}
}

// ToolErrorOf is how the host will see err returned from a tool call: an
// *Error of a tool kind keeps it; anything else is KindToolFailed with err's
// text.
func ToolErrorOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) && (e.Kind == KindUnknownTool || e.Kind == KindInvalidArgs || e.Kind == KindToolFailed) {
		return e
	}
	return &Error{Kind: KindToolFailed, Message: err.Error()}
}
