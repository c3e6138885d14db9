#!/usr/bin/env bash
# Concurrency benchmark (issue 10): two imports of different images at the same time vs
# one after the other, and the latency of `mount`/`ps`/`images` issued while a long
# import runs. Prints one line per measurement and the ratios.
#
#   scripts/bench-concurrency.sh [ROUNDS]
#
# Env: RATE=<MB/s of the streamed imports> (default 50); B=<layerctl binary> (default target/release/layerctl, else target/debug);
#      OLD=<layerctl binary to compare with, e.g. a build of the previous commit, whose
#      import held the store lock throughout> (optional); DRIVER (default overlay2);
#      W=<scratch dir on the filesystem to measure> (default /var/tmp/layerctl-conc-bench);
#      TAR=<big rootfs tar> (default /var/tmp/layerctl-bench/debian.tar, built with
#      /work/shared/fixtures/make-debian-rootfs-tar.sh if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DRIVER="${DRIVER:-overlay2}"
W="${W:-/var/tmp/layerctl-conc-bench}"
TAR="${TAR:-/var/tmp/layerctl-bench/debian.tar}"
if [ -z "${B:-}" ]; then
  if [ -x target/release/layerctl ]; then B=target/release/layerctl; else B=target/debug/layerctl; fi
fi
B="$(realpath "$B")"
if [ ! -f "$TAR" ]; then
  mkdir -p "$(dirname "$TAR")"
  /work/shared/fixtures/make-debian-rootfs-tar.sh "$TAR"
fi
rm -rf "$W"; mkdir -p "$W/in"
# Two different images of the same size: the rootfs, and the rootfs plus one file.
cp "$TAR" "$W/in/a.tar"
cp "$TAR" "$W/in/b.tar"
echo "other image" > "$W/in/marker"
tar -rf "$W/in/b.tar" -C "$W/in" marker
mkdir -p "$W/in/small/etc"; echo small > "$W/in/small/etc/small"
tar -cf "$W/in/small.tar" -C "$W/in/small" etc

now() { date +%s.%N; }
RATE="${RATE:-50}"
# Copies a file to stdout at $RATE MB/s (1 MiB chunks).
throttle() {
  python3 -c 'import sys,time
rate=float(sys.argv[2])*1e6; f=open(sys.argv[1],"rb"); out=sys.stdout.buffer; t0=time.time(); n=0
while True:
    b=f.read(1<<20)
    if not b: break
    out.write(b); n+=len(b)
    d=n/rate-(time.time()-t0)
    if d>0: time.sleep(d)' "$1" "$RATE"
}
ctl() { "$BIN" --root "$W/root" --driver "$DRIVER" "$@"; }
fresh() { rm -rf "$W/root"; }
cleanup() { for c in $(ls "$W/root/containers" 2>/dev/null); do ctl umount "$c" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

bench() { # $1 label; uses $BIN
  local label=$1 seq_total=0 par_total=0
  for r in $(seq "$ROUNDS"); do
    sync
    fresh; t0=$(now); ctl import "$W/in/a.tar" >/dev/null; ctl import "$W/in/b.tar" >/dev/null; t1=$(now)
    seq_s=$(echo "$t1 - $t0" | bc)
    sync
    fresh; ctl info >/dev/null; t0=$(now)
    ctl import "$W/in/a.tar" >/dev/null & p1=$!
    ctl import "$W/in/b.tar" >/dev/null & p2=$!
    wait $p1; wait $p2; t1=$(now)
    par_s=$(echo "$t1 - $t0" | bc)
    test "$(ctl --json images | grep -c '"id"')" -eq 2
    echo "$label round $r: one after the other ${seq_s}s, concurrently ${par_s}s, ratio $(echo "scale=2; $par_s / $seq_s" | bc)"
    seq_total=$(echo "$seq_total + $seq_s" | bc); par_total=$(echo "$par_total + $par_s" | bc)
  done
  echo "$label total: one after the other ${seq_total}s, concurrently ${par_total}s, concurrent/sequential $(echo "scale=2; $par_total / $seq_total" | bc)"

  # The same from a rate-limited stream (a pull: the network, not the CPU, is the
  # bottleneck, so the result does not depend on idle cores): `import -` fed at $RATE MB/s.
  fresh; ctl info >/dev/null; t0=$(now)
  throttle "$W/in/a.tar" | ctl import - >/dev/null; throttle "$W/in/b.tar" | ctl import - >/dev/null
  t1=$(now); seq_s=$(echo "$t1 - $t0" | bc)
  fresh; ctl info >/dev/null; t0=$(now)
  throttle "$W/in/a.tar" | ctl import - >/dev/null & p1=$!
  throttle "$W/in/b.tar" | ctl import - >/dev/null & p2=$!
  wait $p1; wait $p2; t1=$(now); par_s=$(echo "$t1 - $t0" | bc)
  test "$(ctl --json images | grep -c '"id"')" -eq 2
  echo "$label stream at ${RATE} MB/s: one after the other ${seq_s}s, concurrently ${par_s}s, concurrent/sequential $(echo "scale=2; $par_s / $seq_s" | bc)"

  # Latency of commands issued while a long import runs.
  fresh; ctl import "$W/in/small.tar" --name small >/dev/null; ctl create c small >/dev/null
  # The same commands on an idle store: what the machine costs without any import.
  local idle=0
  for i in 1 2 3; do
    for cmd in "mount c" "umount c" "ps" "images"; do
      t0=$(now); ctl $cmd >/dev/null; t1=$(now)
      ms=$(echo "($t1 - $t0) * 1000" | bc); ms=${ms%.*}
      [ "${ms:-0}" -gt "$idle" ] && idle=$ms
    done
  done
  echo "$label idle store: worst of mount/umount/ps/images x3: ${idle} ms"
  ctl import "$W/in/a.tar" >/dev/null & imp=$!
  sleep 1
  local worst=0
  for i in 1 2 3 4 5; do
    for cmd in "mount c" "umount c" "ps" "images"; do
      running=$(kill -0 $imp 2>/dev/null && echo yes || echo no)
      t0=$(now); ctl $cmd >/dev/null; t1=$(now)
      ms=$(echo "($t1 - $t0) * 1000" | bc); ms=${ms%.*}
      echo "$label during import: $cmd ${ms} ms (import running when issued: $running)"
      [ "$running" = yes ] && [ "${ms:-0}" -gt "$worst" ] && worst=$ms
    done
    sleep 0.5
  done
  wait $imp
  echo "$label worst command latency while the import ran: ${worst} ms"
  cleanup
}

echo "binary $B, driver $DRIVER, input $(du -h "$TAR" | cut -f1) x2, $ROUNDS rounds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
BIN="$B" bench new
if [ -n "${OLD:-}" ]; then BIN="$(realpath "$OLD")" bench old; fi
rm -rf "$W"
