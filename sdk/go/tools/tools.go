// Package tools makes a Go value a kata tools plugin: tools the agent can
// call. Implement Tools and call Export in an init function of package main:
//
//	type Tools struct{}
//
//	func (Tools) List() []kata.ToolSpec { ... }
//	func (Tools) Call(name, argsJSON string) (string, error) { ... }
//
//	func init() { tools.Export(Tools{}) }
//
//	func main() {}
//
// Errors: kata.UnknownTool(name), kata.InvalidArgs(...) and
// kata.ToolFailed(...) say what went wrong; any other error is "failed"
// with its text, which the agent sees.
//
// A channel may offer tools too: export both from one program.
package tools

import (
	"kata/internal/export_kata_plugin_tools"

	// The generated exports of the tools world.
	_ "kata/wit/exports/tools"

	"kata"
)

// Tools is a kata tools plugin.
type Tools interface {
	// List returns the tools this plugin offers. It must not fail or use
	// the network.
	List() []kata.ToolSpec
	// Call runs tool name with argsJSON, a JSON object matching the tool's
	// ArgsSchema, and returns the result as text (often JSON) for the agent.
	Call(name, argsJSON string) (string, error)
}

// Export makes t the tools this plugin exports. Call it once, from an init
// function of package main.
func Export(t Tools) { export_kata_plugin_tools.Register(t) }
