package kata

import (
	"strconv"
	"strings"
)

// Config is the value of key in the plugin's `[plugins.NAME] config = {...}`
// table in kata.toml, and whether it is set. Secrets are never returned
// here: write `{{secret:NAME}}` in a URL or header and the host fills it in
// for granted hosts.
func Config(key string) (string, bool) { return hostConfig(key) }

// ConfigOr is the value of key, or def when it is not set.
func ConfigOr(key, def string) string {
	if v, ok := Config(key); ok {
		return v
	}
	return def
}

// RequireConfig is the value of key, or an InvalidConfig error naming the
// key when it is not set or blank.
func RequireConfig(key string) (string, error) {
	v, ok := Config(key)
	if !ok || strings.TrimSpace(v) == "" {
		return "", InvalidConfig("config key `%s` is required but not set", key)
	}
	return v, nil
}

// ConfigUint is key parsed as an unsigned integer, def when it is not set,
// or an InvalidConfig error naming the key when it does not parse (a value
// that is set but wrong is never silently replaced by the default).
func ConfigUint(key string, def uint64) (uint64, error) {
	v, ok := Config(key)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, InvalidConfig("config key `%s` has value %q, which is not a whole number", key, v)
	}
	return n, nil
}
