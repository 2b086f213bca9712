//go:build !wasip1

package kata

// Outside a kata host (native `go test`), the host functions use this
// stand-in so plugins can test their logic: logs go to stderr, Config reads
// what SetTestConfig set, state lives in memory, NowMs is the system clock.

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

var native struct {
	sync.Mutex
	config map[string]string
	state  map[string][]byte
}

// SetTestConfig sets what Config returns in native tests (outside a kata
// host). It does not exist in plugins built for kata.
func SetTestConfig(config map[string]string) {
	native.Lock()
	defer native.Unlock()
	native.config = config
}

func hostLog(level LogLevel, message string) {
	names := []string{"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}
	name := "LOG"
	if int(level) < len(names) {
		name = names[level]
	}
	fmt.Fprintf(os.Stderr, "kata %s: %s\n", name, message)
}

func hostNowMs() uint64 { return uint64(time.Now().UnixMilli()) }

func hostConfig(key string) (string, bool) {
	native.Lock()
	defer native.Unlock()
	v, ok := native.config[key]
	return v, ok
}

func hostStateGet(key string) ([]byte, bool) {
	native.Lock()
	defer native.Unlock()
	v, ok := native.state[key]
	return append([]byte(nil), v...), ok
}

func hostStateSet(key string, value []byte) (string, bool) {
	native.Lock()
	defer native.Unlock()
	if native.state == nil {
		native.state = map[string][]byte{}
	}
	native.state[key] = append([]byte(nil), value...)
	return "", true
}

func hostStateDelete(key string) {
	native.Lock()
	defer native.Unlock()
	delete(native.state, key)
}

func hostStateKeys(prefix string) []string {
	native.Lock()
	defer native.Unlock()
	var keys []string
	for k := range native.state {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
