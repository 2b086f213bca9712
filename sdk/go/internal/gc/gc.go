// Package gc keeps Go's garbage collector out of cabi_realloc.
//
// When the host hands a plugin a string or a list (the result of a host
// function, the arguments of an export), the component model has the guest
// allocate the memory by calling its cabi_realloc, and while that runs the
// guest must not call any import. The Go support package allocates from the
// garbage-collected heap there; if that allocation starts or assists a
// collection, the collector reads the clock (clock_time_get) and polls
// timers (poll_oneoff), which the WASI adapter turns into imports, and
// wasmtime traps with "cannot leave component instance" (known upstream:
// bytecodealliance/componentize-go#56 and #77, wasmtime#14318; the adapter's
// monotonic-clock pause covers only part of it).
//
// So on wasip1 automatic collection is off, and the SDK collects
// explicitly at points where calling imports is allowed: when a call into
// the plugin starts (Describe, Poll, Call, Tick…) and when the plugin calls
// the SDK's HTTP client or reads or writes state. A collection runs when the
// heap has grown past twice what was live after the last one (at least
// 4 MiB), which is Go's own default pacing (GOGC=100).
package gc

// MaybeCollect runs a garbage collection when the heap has grown past its
// goal. Call it only where imports may be called (never from cabi_realloc).
func MaybeCollect() { maybeCollect() }
