//go:build !wasip1

package gc

// Natively the collector runs as usual: there is no cabi_realloc.
func maybeCollect() {}
