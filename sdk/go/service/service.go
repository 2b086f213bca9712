// Package service makes a Go value a kata service plugin: a background job
// (a mail watcher, a feed reader, a scheduler) that runs on ticks it chooses
// and hands events to the agent with Emit. Implement Service and call
// Export in an init function of package main:
//
//	type Reminder struct{}
//
//	func (Reminder) Start() error { ... }
//	func (Reminder) Tick() (uint64, error) { ...; return everyMs, nil }
//	func (Reminder) Stop() {}
//
//	func init() { service.Export(Reminder{}) }
//
//	func main() {}
//
// The host calls Start once per instance, then Tick again after the
// milliseconds each Tick returns (at least 100 ms), and Stop at shutdown. A
// Tick that returns an error is retried with backoff; a crash restarts the
// service (a new instance, Start again), so keep what must survive in
// kata.StateSet.
package service

import (
	"kata/internal/export_kata_plugin_service"

	// The generated exports of the service world.
	_ "kata/wit/exports/service"

	"kata"
)

// Service is a kata service plugin.
type Service interface {
	// Start starts the service; read configuration with kata.Config. An
	// error stops the service and is shown in `kata status`.
	Start() error
	// Tick does one unit of work and returns how many milliseconds to wait
	// before the next tick.
	Tick() (uint64, error)
	// Stop: the service is being stopped; finish quickly.
	Stop()
}

// Export makes s the service this plugin exports. Call it once, from an
// init function of package main.
func Export(s Service) { export_kata_plugin_service.Register(s) }

// Emit puts msg into the inbox as if a channel had received it; the host
// stores an id once, so emitting an id again is harmless. The agent's reply
// goes to the conversation the workspace names in `deliver_to`.
func Emit(msg kata.Message) error { return emit(msg) }
