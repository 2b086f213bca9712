// Package export_kata_plugin_channel is where the generated exports of the
// channel world (kata/wit/exports/channel) call in: it hands each call to
// the plugin registered with channel.Export and turns Go errors into the
// WIT's channel-error. Plugins use package kata/channel instead.
package export_kata_plugin_channel

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"kata/internal/gc"

	"kata"
	ch "kata/wit/kata_plugin_channel"
	types "kata/wit/kata_plugin_types"
)

// Plugin is the method set of channel.Channel.
type Plugin interface {
	Describe() ch.ChannelInfo
	Connect() error
	Poll(cursor kata.Option[string]) (ch.PollResult, error)
	Send(msg types.OutboundMessage) (types.SendReceipt, error)
}

type subscriber interface {
	Subscribe() (ch.Subscription, error)
	OnFrame(frame types.Frame) (ch.FrameResult, error)
}

type disconnecter interface{ Disconnect() }

var plugin Plugin

// Register makes p the channel this component exports.
func Register(p Plugin) { plugin = p }

func get() Plugin {
	// Every call into the plugin starts here, where imports may be called.
	gc.MaybeCollect()
	if plugin == nil {
		panic("kata: no channel registered: call channel.Export(yourChannel) in an init function of package main")
	}
	return plugin
}

// ChannelError is err as the WIT channel-error.
func ChannelError(err error) types.ChannelError {
	e := kata.ChannelErrorOf(err)
	switch e.Kind {
	case kata.KindAuthFailed:
		return types.MakeChannelErrorAuthFailed(e.Message)
	case kata.KindRateLimited:
		return types.MakeChannelErrorRateLimited(e.RetryAfterMs)
	case kata.KindNetwork:
		return types.MakeChannelErrorNetwork(e.Message)
	case kata.KindInvalidConfig:
		return types.MakeChannelErrorInvalidConfig(e.Message)
	case kata.KindUnsupported:
		return types.MakeChannelErrorUnsupported()
	}
	return types.MakeChannelErrorFatal(e.Message)
}

func result[T any](v T, err error) witTypes.Result[T, types.ChannelError] {
	if err != nil {
		return witTypes.Err[T](ChannelError(err))
	}
	return witTypes.Ok[T, types.ChannelError](v)
}

func Describe() ch.ChannelInfo { return get().Describe() }

func Connect() witTypes.Result[witTypes.Unit, types.ChannelError] {
	return result(witTypes.Unit{}, get().Connect())
}

func Poll(cursor witTypes.Option[string]) witTypes.Result[ch.PollResult, types.ChannelError] {
	return result(get().Poll(cursor))
}

func Subscribe() witTypes.Result[ch.Subscription, types.ChannelError] {
	if s, ok := get().(subscriber); ok {
		return result(s.Subscribe())
	}
	return witTypes.Err[ch.Subscription](types.MakeChannelErrorUnsupported())
}

func OnFrame(frame types.Frame) witTypes.Result[ch.FrameResult, types.ChannelError] {
	if s, ok := get().(subscriber); ok {
		return result(s.OnFrame(frame))
	}
	return witTypes.Err[ch.FrameResult](types.MakeChannelErrorUnsupported())
}

func Send(msg types.OutboundMessage) witTypes.Result[types.SendReceipt, types.ChannelError] {
	return result(get().Send(msg))
}

func Disconnect() {
	if d, ok := get().(disconnecter); ok {
		d.Disconnect()
	}
}
