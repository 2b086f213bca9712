//go:build wasip1

package kata

import (
	"kata/internal/gc"
	"kata/wit/kata_plugin_host"
)

func hostLog(level LogLevel, message string) { kata_plugin_host.Log(level, message) }

func hostNowMs() uint64 { return kata_plugin_host.NowMs() }

func hostConfig(key string) (string, bool) {
	v := kata_plugin_host.ConfigGet(key)
	if v.IsNone() {
		return "", false
	}
	return v.Some(), true
}

func hostStateGet(key string) ([]byte, bool) {
	// State values can be large (up to 1 MiB): a safe point to collect.
	gc.MaybeCollect()
	v := kata_plugin_host.StateGet(key)
	if v.IsNone() {
		return nil, false
	}
	return v.Some(), true
}

func hostStateSet(key string, value []byte) (string, bool) {
	gc.MaybeCollect()
	r := kata_plugin_host.StateSet(key, value)
	if r.IsErr() {
		return r.Err(), false
	}
	return "", true
}

func hostStateDelete(key string) { kata_plugin_host.StateDelete(key) }

func hostStateKeys(prefix string) []string { return kata_plugin_host.StateKeys(prefix) }
