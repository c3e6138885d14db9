#!/usr/bin/env bash
# Whole-process import benchmark: `layerctl import` (vfs and overlay2, DiffID computed)
# vs plain `tar -xf` of the same Debian minbase tar into the same filesystem (hyperfine),
# plus peak RSS (/usr/bin/time -v) for the 1x tar and a 2x larger tar (Debian + big
# files) to show memory stays constant. Then the criterion bench (in-process import).
# Needs root and the shared fixture script make-debian-rootfs-tar.sh (from ../shared or
# /work/shared, or $MAKE_DEBIAN_TAR). Results: $OUT (default /var/tmp/layerctl-bench).
# Usage: ./scripts/bench-import.sh [--no-criterion]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/var/tmp/layerctl-bench}
RUNS=${RUNS:-5}
mkdir -p "$OUT"
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
maker=${MAKE_DEBIAN_TAR:-}
for cand in ../shared/fixtures/make-debian-rootfs-tar.sh /work/shared/fixtures/make-debian-rootfs-tar.sh; do
  [ -z "$maker" ] && [ -x "$cand" ] && maker=$cand
done
[ -n "$maker" ] || { echo "bench-import.sh: make-debian-rootfs-tar.sh not found; set MAKE_DEBIAN_TAR" >&2; exit 1; }
tar1=$OUT/debian.tar
tar2=$OUT/debian-2x.tar
[ -s "$tar1" ] || bash "$maker" "$tar1"
if [ ! -s "$tar2" ]; then
  extra=$(mktemp -d "$OUT/extra.XXXX")
  mkdir -p "$extra/extra"
  # Incompressible big files about as large as the Debian tar itself.
  size_mb=$(( $(stat -c %s "$tar1") / 1048576 / 2 + 1 ))
  head -c "${size_mb}M" /dev/urandom > "$extra/extra/big1"
  head -c "${size_mb}M" /dev/urandom > "$extra/extra/big2"
  cp "$tar1" "$tar2.tmp"
  tar -rf "$tar2.tmp" -C "$extra" --numeric-owner ./extra
  mv "$tar2.tmp" "$tar2"; rm -rf "$extra"
fi
cargo build --release -q -p layerctl
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/layerctl
[ -x "$bin" ] || bin=${CARGO_TARGET_DIR:-target}/release/layerctl
scratch=$(mktemp -d /var/tmp/layerctl-bench-run.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
echo "tar 1x: $(stat -c %s "$tar1") bytes, $(tar -tf "$tar1" | wc -l) entries; tar 2x: $(stat -c %s "$tar2") bytes"
echo "backing fs of $scratch: $(stat -f -c %T "$scratch"); $(nproc) cores; kernel $(uname -r)"

# Each prepare step syncs, so one run's writeback does not land in the next run's time.
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$OUT/hyperfine.md" --export-json "$OUT/hyperfine.json" \
  -n "tar -xf" --prepare "rm -rf $scratch/t; mkdir -p $scratch/t; sync" "tar -xf $tar1 -C $scratch/t --numeric-owner" \
  -n "tar -xf + sync -f" --prepare "rm -rf $scratch/t; mkdir -p $scratch/t; sync" "tar -xf $tar1 -C $scratch/t --numeric-owner && sync -f $scratch/t" \
  -n "layerctl import (vfs)" --prepare "rm -rf $scratch/r; sync" "$bin --root $scratch/r --driver vfs import $tar1 --name debian" \
  -n "layerctl import (overlay2)" --prepare "rm -rf $scratch/r; sync" "$bin --root $scratch/r --driver overlay2 import $tar1 --name debian"
rm -rf "$scratch/t" "$scratch/r"

rss() { # prints peak RSS in KiB and wall seconds of one command
  /usr/bin/time -v "$@" 2>"$scratch/time.txt" >/dev/null
  echo "$(awk -F': ' '/Maximum resident/ {print $2}' "$scratch/time.txt") KiB, wall $(awk -F': ' '/Elapsed/ {print $2}' "$scratch/time.txt")"
}
{
  echo "| input | command | peak RSS | wall |"
  echo "| --- | --- | --- | --- |"
  for t in "$tar1" "$tar2"; do
    for d in vfs overlay2; do
      rm -rf "$scratch/r"
      r=$(rss "$bin" --root "$scratch/r" --driver $d import "$t" --name x)
      echo "| $(basename "$t") ($(( $(stat -c %s "$t") / 1048576 )) MiB) | layerctl import ($d) | ${r%%, wall*} | ${r##*wall } |"
    done
    rm -rf "$scratch/t"; mkdir -p "$scratch/t"
    r=$(rss tar -xf "$t" -C "$scratch/t" --numeric-owner)
    echo "| $(basename "$t") ($(( $(stat -c %s "$t") / 1048576 )) MiB) | tar -xf | ${r%%, wall*} | ${r##*wall } |"
  done
} | tee "$OUT/rss.md"
rm -rf "$scratch/r" "$scratch/t"
cat "$OUT/hyperfine.md"

if [ "${1:-}" != "--no-criterion" ]; then
  LAYERCTL_BENCH_TAR=$tar1 cargo bench -p layerctl-tests --bench import
fi
