#!/bin/sh
# A CLI agent that reports what of kata's secrets reached its environment:
# every variable named KATA_*, and every variable whose value holds one of
# the test's secret values (passed in the daemon's environment under other
# names too). It answers "clean" when nothing did.
cat > /dev/null
found=""
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
  case "$name" in KATA_*) found="$found $name";; esac
done
for secret in sk-test-key-0123456789 chat-token-abcdef store-secret-98765 file-secret-424242; do
  if env | grep -q -- "$secret"; then found="$found value:$secret"; fi
done
if [ -n "$found" ]; then echo "leaked:$found"; else echo "clean; PATH kept: ${PATH:+yes}"; fi
