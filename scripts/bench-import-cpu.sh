#!/usr/bin/env bash
# CPU time per thread (per command name) of one command, from `perf record` samples:
# the load-independent view of an import's critical path (issue 9).
# Usage: W=/dev/shm/layerctl-bench scripts/bench-import-cpu.sh NAME RUNS CMD...
# Before each run $W is emptied and $W/t made. Prints "NAME THREAD ms" (mean of RUNS)
# and the total; perf data stays in $OUT (default /var/tmp/layerctl-bench/cpu).
set -euo pipefail
W=${W:-/dev/shm/layerctl-bench}
OUT=${OUT:-/var/tmp/layerctl-bench/cpu}
name=$1 runs=$2
shift 2
mkdir -p "$OUT"
for i in $(seq "$runs"); do
  rm -rf "$W"; mkdir -p "$W/t"
  perf record -q -F 2999 -o "$OUT/$name-$i.data" -- "$@" >/dev/null 2>&1
done
rm -rf "$W"
for i in $(seq "$runs"); do perf script -i "$OUT/$name-$i.data" -F comm 2>/dev/null; done |
  sort | uniq -c |
  awk -v n="$runs" -v name="$name" '{printf "%s %s %.0f ms\n", name, $2, $1/n/2.999; t+=$1}
    END {printf "%s TOTAL %.0f ms\n", name, t/n/2.999}'
