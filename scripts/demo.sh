#!/usr/bin/env bash
# The demo: set everything up, start the telegram-test-api emulator on
# loopback, create a demo workspace running the real Telegram plugin under
# `kata run`, send a message as a Telegram user and print the bot's reply.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
./scripts/setup.sh --demo
KATA=$ROOT/target/debug/kata
DEMO=$ROOT/.kata-demo
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=123456:DEMO-TOKEN
API=http://127.0.0.1:$PORT

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "==> starting telegram-test-api on $API" >&2
PORT=$PORT node tests/servers/telegram/server.js > /tmp/kata-demo-telegram.log 2>&1 < /dev/zero &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

echo "==> demo workspace in $DEMO" >&2
rm -rf "$DEMO"
"$KATA" init "$DEMO" >/dev/null
mkdir -p "$DEMO/plugins" && cp target/guests/telegram.wasm "$DEMO/plugins/telegram.wasm"
cat >> "$DEMO/kata.toml" <<TOML

[plugins.telegram]
path = "plugins/telegram.wasm"
network = ["$API/bot*"]
secrets = { bot_token = "env:TELEGRAM_BOT_TOKEN" }
config = { api_base = "$API", poll_timeout_s = 0, poll_interval = "200ms" }
allow_from = ["*"]   # the demo talks to anyone; by default a stranger must pair first
TOML
sed -i 's/^template = .*/template = "kata heard {sender}: {text}"/' "$DEMO/kata.toml"

echo "==> kata run" >&2
TELEGRAM_BOT_TOKEN=$TOKEN "$KATA" run -w "$DEMO" 2> "$DEMO/kata.log" &
pids+=($!)

TEXT="hello from a Telegram user"
echo "==> user says: $TEXT" >&2
curl -sf -XPOST "$API/sendMessage" -H 'content-type: application/json' \
  -d "{\"botToken\":\"$TOKEN\",\"from\":{\"id\":1,\"first_name\":\"Ann\",\"username\":\"ann\",\"is_bot\":false},\"chat\":{\"id\":1,\"type\":\"private\"},\"date\":$(date +%s),\"text\":\"$TEXT\"}" >/dev/null
for _ in $(seq 150); do
  reply=$(curl -sf -XPOST "$API/getUpdates" -H 'content-type: application/json' \
    -d "{\"token\":\"$TOKEN\",\"chatId\":1}" | python3 -c 'import json,sys; r=json.load(sys.stdin).get("result",[]); print(r[-1]["message"]["text"] if r else "")')
  if [ -n "$reply" ]; then
    echo "==> bot replied: $reply"
    exit 0
  fi
  sleep 0.2
done
echo "no reply within 30 s; kata's log:" >&2
cat "$DEMO/kata.log" >&2
exit 1
