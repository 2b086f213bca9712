// Package export_kata_plugin_service is where the generated exports of the
// service world (kata/wit/exports/service) call in: it hands each call to
// the plugin registered with service.Export. Plugins use package
// kata/service instead.
package export_kata_plugin_service

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"

	"kata/internal/gc"
)

// Plugin is the method set of service.Service.
type Plugin interface {
	Start() error
	Tick() (uint64, error)
	Stop()
}

var plugin Plugin

// Register makes p the service this component exports.
func Register(p Plugin) { plugin = p }

func get() Plugin {
	// Every call into the plugin starts here, where imports may be called.
	gc.MaybeCollect()
	if plugin == nil {
		panic("kata: no service registered: call service.Export(yourService) in an init function of package main")
	}
	return plugin
}

func Start() witTypes.Result[witTypes.Unit, string] {
	if err := get().Start(); err != nil {
		return witTypes.Err[witTypes.Unit](err.Error())
	}
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

func Tick() witTypes.Result[uint64, string] {
	ms, err := get().Tick()
	if err != nil {
		return witTypes.Err[uint64](err.Error())
	}
	return witTypes.Ok[uint64, string](ms)
}

func Stop() { get().Stop() }
