// Package channel makes a Go value a kata channel plugin: it connects kata
// to a chat network. Implement Channel and call Export in an init function
// of package main:
//
//	type Plugin struct{ baseURL string }
//
//	func (p *Plugin) Describe() channel.Info { ... }
//	func (p *Plugin) Connect() error { ... }
//	func (p *Plugin) Poll(cursor kata.Option[string]) (channel.PollResult, error) { ... }
//	func (p *Plugin) Send(msg kata.OutboundMessage) (kata.SendReceipt, error) { ... }
//
//	func init() { channel.Export(&Plugin{}) }
//
//	func main() {}
//
// The host calls Describe and Connect once per instance, then Poll in a loop
// (or Subscribe and OnFrame for a stream), and Send for replies. Calls into
// one instance never overlap; the host may create a fresh instance at any
// time, so keep what must survive in kata.StateSet or the poll cursor.
//
// Errors: return kata.AuthFailed, kata.RateLimited, kata.NetworkError,
// kata.InvalidConfig, kata.Unsupported or kata.Fatal to tell the host what
// to do next; an *kata.HTTPError is mapped for you (a refused host becomes
// invalid-config naming it, a transport failure network); any other error
// is fatal.
package channel

import (
	"kata/internal/export_kata_plugin_channel"
	ch "kata/wit/kata_plugin_channel"

	// The generated exports of the channel world.
	_ "kata/wit/exports/channel"

	"kata"
)

// Channel is a kata channel plugin.
type Channel interface {
	// Describe returns static facts about the plugin. It must not fail or
	// use the network.
	Describe() Info
	// Connect prepares to talk to the network: read configuration
	// (kata.Config), check credentials if that is cheap.
	Connect() error
	// Poll fetches messages newer than cursor (None on the very first poll).
	Poll(cursor kata.Option[string]) (PollResult, error)
	// Send delivers one message. Return kata.RateLimited or
	// kata.NetworkError to have the host retry with the same idempotency key.
	Send(msg kata.OutboundMessage) (kata.SendReceipt, error)
}

// Subscriber is implemented by channels that receive over a stream the host
// opens (websocket, server-sent events, TCP lines, webhooks); list
// IngressSubscribe first in Info.Ingress. Channels without it answer
// Subscribe and OnFrame with unsupported.
type Subscriber interface {
	// Subscribe describes the stream to open; it is called before every
	// connection attempt.
	Subscribe() (Subscription, error)
	// OnFrame handles one frame of the stream.
	OnFrame(frame kata.Frame) (FrameResult, error)
}

// Disconnecter is implemented by channels that close something when the
// host drops the instance.
type Disconnecter interface {
	Disconnect()
}

// Records of the WIT interface kata:plugin/channel.
type (
	// Info is what Describe returns: name, version, ingress modes.
	Info = ch.ChannelInfo
	// PollResult is what Poll returns: messages, the next cursor (None keeps
	// the current one) and when to poll again (None: the host decides).
	PollResult = ch.PollResult
	// Subscription is the stream Subscribe asks the host to open.
	Subscription = ch.Subscription
	// FrameResult is what OnFrame makes of one frame.
	FrameResult = ch.FrameResult
	// IngressMode is how a channel receives messages.
	IngressMode = ch.IngressMode
	// StreamKind is the kind of stream in a Subscription.
	StreamKind = ch.StreamKind
)

// Ingress modes.
const (
	IngressPoll      IngressMode = ch.IngressModePoll
	IngressSubscribe IngressMode = ch.IngressModeSubscribe
)

// Stream kinds.
const (
	Websocket        StreamKind = ch.StreamKindWebsocket
	ServerSentEvents StreamKind = ch.StreamKindServerSentEvents
	TCPLines         StreamKind = ch.StreamKindTcpLines
	Webhook          StreamKind = ch.StreamKindWebhook
)

// Export makes c the channel this plugin exports. Call it once, from an
// init function of package main.
func Export(c Channel) { export_kata_plugin_channel.Register(c) }
