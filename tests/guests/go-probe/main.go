// Test guest go-probe: the Go row of tests/languages.rs. Every language
// kata has a template for ships the same probe (tests/guests/<lang>-probe/),
// so one table-driven test shows the same sandbox guarantees in every
// language.
//
// Each Poll reads config `probe` and returns one message (id
// `probe-<now_ms>`, conversation and sender `probe`) whose text is:
//
//   - http: GET config `url` → `http: ok <status> <body>` or `http: err <error>`
//   - file: read config `path` → `file: ok <n> bytes` or `file: err <error>`
//   - secret: GET `url` with `token={{secret:token}}` in the query and the
//     header `Authorization: Bearer {{secret:token}}` → `secret: ok <status>
//     <body>` or `secret: err <error>`, also written to the log
//   - spin: burns CPU forever; bomb: allocates 1 MiB blocks forever
//   - gc (Go only): reads a 512 KiB state value 20 times, so the host hands
//     the plugin 10 MiB through cabi_realloc → `gc: ok <n> bytes, <c> collections`; Go's
//     collector must not start inside cabi_realloc (kata/internal/gc), or
//     this traps with "cannot leave component instance"
//   - anything else: `unknown probe <value>`
package main

import (
	"fmt"
	"os"
	"runtime/metrics"
	"strings"

	"kata"
	"kata/channel"
)

// placeholder is what the host replaces with the secret `token`.
const placeholder = "{{secret:token}}"

// withToken is url with token=<placeholder> appended to its query.
func withToken(url string) string {
	if strings.Contains(url, "?") {
		return url + "&token=" + placeholder
	}
	return url + "?token=" + placeholder
}

func get(what, url string, auth bool) string {
	header := kata.Headers{}
	if auth {
		header["authorization"] = "Bearer " + placeholder
	}
	resp, err := kata.Get(url, header)
	if err != nil {
		return fmt.Sprintf("%s: err %v", what, err)
	}
	return fmt.Sprintf("%s: ok %d %s", what, resp.Status, resp.Text())
}

var sink uint64

func run(probe string) string {
	switch probe {
	case "http":
		return get("http", kata.ConfigOr("url", ""), false)
	case "file":
		b, err := os.ReadFile(kata.ConfigOr("path", ""))
		if err != nil {
			return fmt.Sprintf("file: err %v", err)
		}
		return fmt.Sprintf("file: ok %d bytes", len(b))
	case "secret":
		text := get("secret", withToken(kata.ConfigOr("url", "")), true)
		kata.Info(text)
		return text
	case "spin":
		x := uint64(0)
		for {
			x = x*6364136223846793005 + 1
			sink = x
		}
	case "gc":
		if err := kata.StateSet("big", make([]byte, 512<<10)); err != nil {
			return fmt.Sprintf("gc: err %v", err)
		}
		cycles := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(cycles)
		before := cycles[0].Value.Uint64()
		var keep []byte
		for i := 0; i < 20; i++ {
			keep, _ = kata.StateGet("big")
		}
		kata.StateDelete("big")
		metrics.Read(cycles)
		return fmt.Sprintf("gc: ok %d bytes, %d collections", len(keep), cycles[0].Value.Uint64()-before)
	case "bomb":
		var blocks [][]byte
		for {
			block := make([]byte, 1<<20)
			block[(len(blocks)*7)%(1<<20)] = 1
			blocks = append(blocks, block)
		}
	}
	return "unknown probe " + probe
}

// Probe is the probing channel.
type Probe struct{}

func (Probe) Describe() channel.Info {
	return channel.Info{Name: "go-probe", Version: "0.1.0", Ingress: []channel.IngressMode{channel.IngressPoll}}
}

func (Probe) Connect() error { return nil }

func (Probe) Poll(cursor kata.Option[string]) (channel.PollResult, error) {
	text := run(kata.ConfigOr("probe", ""))
	msg := kata.TextMessage(fmt.Sprintf("probe-%d", kata.NowMs()), "probe", "probe", text)
	return channel.PollResult{Messages: []kata.Message{msg}}, nil
}

func (Probe) Send(msg kata.OutboundMessage) (kata.SendReceipt, error) {
	return kata.Sent("sent-" + msg.IdempotencyKey), nil
}

func init() { channel.Export(Probe{}) }

func main() {}
