#!/usr/bin/env bash
# Where a running kata's resident memory is: /proc/PID/smaps summed by what
# each mapping is (BENCHMARKS.md, "Memory and size"). Usage: rss-breakdown.sh PID
set -euo pipefail
pid=${1:?usage: rss-breakdown.sh PID}
exe=$(readlink "/proc/$pid/exe")
out=$(awk -v exe="$exe" '
  /^[0-9a-f]+-[0-9a-f]+ / {
    perm = $2; name = (NF >= 6) ? $6 : ""
    if (name == exe && perm ~ /x/)        what = "kata binary: code (.text)"
    else if (name == exe)                 what = "kata binary: read-only data, relocations, .data"
    else if (name ~ /\.cwasm$/)            what = "compiled plugins (.cwasm, mapped from the compile cache)"
    else if (name ~ /memfd:wasm-memory/)   what = "wasm memory images (copy-on-write)"
    else if (name ~ /\.so/)               what = "shared libraries (libc, libm, ld.so, libgcc)"
    else if (name == "[heap]")            what = "malloc: main heap"
    else if (name == "" && perm ~ /x/)    what = "code compiled in this process (anonymous)"
    else if (name == "" || name ~ /^\[stack/) what = "anonymous: thread arenas, stacks, wasm instances"
    else                                  what = "other (" name ")"
    next
  }
  /^Rss:/ { rss[what] += $2; total += $2 }
  END {
    for (w in rss) if (rss[w] > 0) printf "%8.1f MiB  %s\n", rss[w] / 1024, w
    printf "total: %.1f MiB (VmRSS counts the same pages)\n", total / 1024
  }' "/proc/$pid/smaps")
grep -v '^total' <<<"$out" | sort -rn
grep '^total' <<<"$out"
