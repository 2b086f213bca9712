// Package export_kata_plugin_tools is where the generated exports of the
// tools world (kata/wit/exports/tools) call in: it hands each call to the
// plugin registered with tools.Export and turns Go errors into the WIT's
// tool-error. Plugins use package kata/tools instead.
package export_kata_plugin_tools

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"kata/internal/gc"

	"kata"
	types "kata/wit/kata_plugin_types"
)

// Plugin is the method set of tools.Tools.
type Plugin interface {
	List() []types.ToolSpec
	Call(name, argsJSON string) (string, error)
}

var plugin Plugin

// Register makes p the tools this component exports.
func Register(p Plugin) { plugin = p }

func get() Plugin {
	// Every call into the plugin starts here, where imports may be called.
	gc.MaybeCollect()
	if plugin == nil {
		panic("kata: no tools registered: call tools.Export(yourTools) in an init function of package main")
	}
	return plugin
}

// ToolError is err as the WIT tool-error.
func ToolError(err error) types.ToolError {
	e := kata.ToolErrorOf(err)
	switch e.Kind {
	case kata.KindUnknownTool:
		return types.MakeToolErrorUnknownTool(e.Message)
	case kata.KindInvalidArgs:
		return types.MakeToolErrorInvalidArgs(e.Message)
	}
	return types.MakeToolErrorFailed(e.Message)
}

func List() []types.ToolSpec { return get().List() }

func Call(name, argsJSON string) witTypes.Result[string, types.ToolError] {
	out, err := get().Call(name, argsJSON)
	if err != nil {
		return witTypes.Err[string](ToolError(err))
	}
	return witTypes.Ok[string, types.ToolError](out)
}
