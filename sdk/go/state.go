package kata

import "errors"

// StateGet reads the bytes this plugin stored under key, and whether the
// key was ever set. State is private to the plugin, survives restarts and
// is shared by all its instances; keys are up to 256 bytes and values up to
// 1 MiB.
func StateGet(key string) ([]byte, bool) { return hostStateGet(key) }

// StateSet stores value under key. The error says why the host refused
// (key or value too large, database not writable).
func StateSet(key string, value []byte) error {
	if reason, ok := hostStateSet(key, value); !ok {
		return errors.New(reason)
	}
	return nil
}

// StateDelete removes key; removing a key that does not exist is not an error.
func StateDelete(key string) { hostStateDelete(key) }

// StateKeys lists the keys this plugin stored that start with prefix (all
// keys for ""), in byte order, at most 1000.
func StateKeys(prefix string) []string { return hostStateKeys(prefix) }

// StateGetString reads the value under key as text.
func StateGetString(key string) (string, bool) {
	b, ok := StateGet(key)
	return string(b), ok
}

// StateSetString stores value under key as UTF-8 text.
func StateSetString(key, value string) error { return StateSet(key, []byte(value)) }
