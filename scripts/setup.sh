#!/usr/bin/env bash
# Idempotent setup for kata on a fresh Debian machine: the guest toolchain
# (Rust -> wasm32-wasip1), Node.js + the telegram-test-api emulator used by the
# demo and tests, the test servers (ngircd, docker-registry, matrix-synapse, …),
# the kata binary, the plugin toolchains of the other languages (C, JavaScript,
# Go, Python; `kata plugin toolchain install`), and every guest component
# (plugins/ and tests/guests/) built once into target/guests/. Re-running does
# only what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# `setup.sh --demo` does only what scripts/demo.sh needs (guest toolchain,
# Node.js + the Telegram emulator, kata, the Telegram plugin); without it,
# everything the tests need (test servers, every plugin language's
# toolchain, every guest).
DEMO_ONLY=
[ "${1-}" = "--demo" ] && DEMO_ONLY=1
# The scripts build everything once, from scratch on a fresh clone: cargo's
# incremental state would only take ~2 GB of disk (CI has little) for
# nothing. (A cargo command typed by hand keeps its own default; switching
# between the two rebuilds kata's own crates once, not the dependencies.)
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

APT_UPDATED=
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  [ -n "$APT_UPDATED" ] || { $sudo apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# 1. Rust guest toolchain: rustup's wasm32-wasip1 target where it answers in
#    time, else Debian's rustc-web with -Zbuild-std (see shared toolchain notes).
have_rustup_target() {
  local dir; dir=$(rustc --print target-libdir --target wasm32-wasip1 2>/dev/null) || return 1
  ls "$dir"/libstd-*.rlib >/dev/null 2>&1
}
if have_rustup_target; then
  log "guest toolchain: rustup wasm32-wasip1 (installed)"
elif command -v rustup >/dev/null && timeout 120 rustup target add wasm32-wasip1 >&2 && have_rustup_target; then
  log "guest toolchain: rustup wasm32-wasip1 (just added)"
else
  log "guest toolchain: rustup could not add wasm32-wasip1; using Debian rustc-web + -Zbuild-std"
  apt_install rustc-web cargo-web rust-web-src lld-19 wasi-libc
  export KATA_GUEST_TOOLCHAIN=debian
fi

# 1b. rustfmt, for the formatting check in scripts/test.sh (rustup's minimal
#     profile leaves it out).
if ! cargo fmt --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
  timeout 120 rustup component add rustfmt >&2 || log "could not add rustfmt; scripts/test.sh's format check will fail"
fi

# 2. Node.js and the Telegram Bot API emulator (loopback only).
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
if [ ! -f tests/servers/telegram/node_modules/telegram-test-api/package.json ]; then
  log "installing telegram-test-api (npm)"
  (cd tests/servers/telegram && npm install --no-audit --no-fund --loglevel=error >&2)
fi

# Everything below in this block is for the tests only.
if [ -z "$DEMO_ONLY" ]; then
# 2b. ngircd, the IRC server tests/irc.rs runs on loopback, and
#     docker-registry (the CNCF distribution server), the OCI registry
#     tests/provenance.rs publishes to and installs from (each started by the
#     test itself, never as a system service).
apt_install ngircd docker-registry

# 2c. matrix-synapse, the homeserver tests/matrix.rs starts on loopback: pip,
#     in its own venv under target/servers/ (~240 MB, about a minute once).
SYNAPSE_VERSION=1.163.2
SYNAPSE_VENV=$ROOT/target/servers/synapse
if ! "$SYNAPSE_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('matrix-synapse') != '$SYNAPSE_VERSION')" 2>/dev/null; then
  log "installing matrix-synapse $SYNAPSE_VERSION into $SYNAPSE_VENV (pip)"
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -m venv "$SYNAPSE_VENV" || { apt_install python3-venv; python3 -m venv "$SYNAPSE_VENV"; }
  "$SYNAPSE_VENV/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION" >&2
fi

# 2d. Mail and XMPP servers for tests/email.rs and tests/xmpp.rs, each
#     started by its test on loopback (never as a system service): Dovecot
#     (IMAP) and Prosody from apt, aiosmtpd (SMTP) from pip in its own venv.
apt_install dovecot-imapd prosody
AIOSMTPD_VERSION=1.4.6
AIOSMTPD_VENV=$ROOT/target/servers/aiosmtpd
if ! "$AIOSMTPD_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('aiosmtpd') != '$AIOSMTPD_VERSION')" 2>/dev/null; then
  log "installing aiosmtpd $AIOSMTPD_VERSION into $AIOSMTPD_VENV (pip)"
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -m venv "$AIOSMTPD_VENV" || { apt_install python3-venv; python3 -m venv "$AIOSMTPD_VENV"; }
  "$AIOSMTPD_VENV/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" >&2
fi

fi # tests only

# 3. The kata binary (debug profile; dependencies are optimised, see Cargo.toml).
log "building kata (a cold build takes 5-15 min on 2 cores; after that, seconds)"
cargo build --quiet --bin kata --bin kata-dev
KATA=$ROOT/target/debug/kata

# 4. Guest components, built once into target/guests/ (cargo makes rebuilds cheap).
export CARGO_TARGET_DIR=$ROOT/target/wasm
mkdir -p target/guests
build_guest() { # build_guest DIR NAME
  "$KATA" plugin build "$1" --out "target/guests/$2.wasm" >/dev/null
}
log "building guest components into target/guests/"
build_guest plugins/telegram telegram
if [ -n "$DEMO_ONLY" ]; then
  ls -1 target/guests/telegram.wasm >&2
  exit 0
fi
build_guest plugins/irc irc
build_guest plugins/matrix matrix
build_guest plugins/webhook webhook
build_guest plugins/slack slack
build_guest plugins/discord discord
build_guest plugins/email email
build_guest plugins/xmpp xmpp
build_guest plugins/notes notes
build_guest plugins/web-fetch web-fetch
build_guest plugins/redact redact
build_guest plugins/reminders reminders
for d in tests/guests/guest-*/; do
  build_guest "$d" "$(basename "$d")"
done
ls -1 target/guests/*.wasm >&2

# 5. Toolchains for plugins in other languages (pinned versions, installed by
#    kata itself into its toolchain directory; see `kata plugin toolchain`),
#    then their test guests (tests/guests/<lang>-*/) into target/guests/.
#    `kata plugin build` skips a project whose inputs did not change.
PLUGIN_LANGS="${KATA_PLUGIN_LANGS-c js go python}"
for lang in $PLUGIN_LANGS; do
  log "plugin toolchain: $lang"
  "$KATA" plugin toolchain install "$lang" >&2
done
for lang in $PLUGIN_LANGS; do
  for d in tests/guests/"$lang"-*/; do
    [ -d "$d" ] || continue
    log "building $d"
    build_guest "$d" "$(basename "$d")"
  done
done
