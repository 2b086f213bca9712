//go:build wasip1

package gc

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// minGoal is the smallest heap that triggers a collection, like Go's own
// 4 MiB minimum heap.
const minGoal = 4 << 20

var samples = []metrics.Sample{
	{Name: "/gc/heap/allocs:bytes"},
	{Name: "/gc/heap/frees:bytes"},
	{Name: "/gc/heap/live:bytes"},
}

func init() {
	debug.SetGCPercent(-1)
	// Heap profiling samples would also run inside cabi_realloc.
	runtime.MemProfileRate = 0
}

func maybeCollect() {
	metrics.Read(samples)
	allocs, frees, live := samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()
	goal := max(2*live, minGoal)
	if allocs-frees > goal {
		runtime.GC()
	}
}
