#!/usr/bin/env bash
# Whole-process comparison: `layerctl mount C && layerctl umount C` against
# `containers-storage mount C && containers-storage unmount C` on the same 60-layer
# image (overlay driver on both sides), timed with hyperfine; prints the ratio.
# Also times the driver alone (examples/mount_once) to show the CLI's own overhead.
#
# Needs root. Usage (from the workspace root):
#   driver-overlay2/bench/compare-containers-storage.sh
# Env: N (layers, 60), RUNS (hyperfine runs per round, 60), ROUNDS (4), WORK (scratch dir, a new temp dir),
#      CARGO_TARGET_DIR (where the release binaries are built).
set -euo pipefail

N=${N:-60}
RUNS=${RUNS:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
WS=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$WS/target}
WORK=${WORK:-$(mktemp -d /var/tmp/ov2-compare.XXXXXX)}

if ! command -v containers-storage >/dev/null || ! command -v hyperfine >/dev/null; then
    apt-get update -qq && apt-get install -y -qq containers-storage hyperfine >/dev/null
fi

(cd "$WS" && cargo build --release -q -p layerctl -p driver-overlay2 --examples)
LC="$TARGET/release/layerctl --root $WORK/lc --driver overlay2"
ONCE="$TARGET/release/examples/mount_once"
CS="containers-storage --storage-driver overlay --graph $WORK/cs/root --run $WORK/cs/run"

cleanup() {
    # Unmount whatever is left below WORK (deepest first), then remove it.
    grep -F " $WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building a $N-layer image in both stores under $WORK"
python3 "$HERE/make-oci-stack.py" "$WORK/oci" "$N"

$LC import "$WORK/oci" --name "stack$N" >/dev/null
$LC create c1 "stack$N" >/dev/null
MOUNT_ID=$($LC --json ps | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mount_id"])')

parent=""
for k in $(seq 0 $((N - 1))); do
    parent=$($CS import-layer -f "$WORK/oci/layers/$k.tar" $parent | tail -1 | awk '{print $NF}')
done
img=$($CS create-image "$parent" | tail -1 | awk '{print $NF}')
$CS create-container --name c1 "$img" >/dev/null

# Sanity: both show every layer's file.
for side in lc cs; do
    if [ $side = lc ]; then m=$($LC mount c1); else m=$($CS mount c1); fi
    for k in 0 $((N / 2)) $((N - 1)); do
        [ "$(cat "$m/layer$k")" = "$k" ] || { echo "$side: layer$k wrong in $m" >&2; exit 1; }
    done
    if [ $side = lc ]; then $LC umount c1; else $CS unmount c1 >/dev/null; fi
done

ROUNDS=${ROUNDS:-4}
echo "== hyperfine: $ROUNDS rounds x $RUNS runs per command, order reversed every round"
echo "   (the machine is shared: alternating the order spreads load changes over both sides;"
echo "    \`sync\` before each run, because unmounting an overlay with an upper layer syncs the"
echo "    whole upper filesystem, i.e. waits for every other process's dirty pages)"
A=(-n layerctl "$LC mount c1 >/dev/null && $LC umount c1")
B=(-n containers-storage "$CS mount c1 >/dev/null && $CS unmount c1 >/dev/null")
C=(-n driver-only "$ONCE $WORK/lc/overlay2 $MOUNT_ID mount >/dev/null && $ONCE $WORK/lc/overlay2 $MOUNT_ID umount")
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order=("${A[@]}" "${B[@]}" "${C[@]}"); else order=("${C[@]}" "${B[@]}" "${A[@]}"); fi
    hyperfine --style basic --warmup 3 --prepare sync --runs "$RUNS" --export-json "$WORK/hyperfine-$r.json" "${order[@]}" >/dev/null
done

python3 - "$WORK"/hyperfine-*.json <<'PY'
import json, statistics, sys
times = {}
for f in sys.argv[1:]:
    for x in json.load(open(f))["results"]:
        times.setdefault(x["command"], []).extend(x["times"])
med = {k: statistics.median(v) for k, v in times.items()}
for k, v in times.items():
    v = sorted(v)
    print(f"{k:20s} median {med[k]*1e3:7.2f} ms  p10 {v[len(v)//10]*1e3:7.2f} ms  p90 {v[len(v)*9//10]*1e3:7.2f} ms  (n={len(v)})")
print(f"ratio layerctl / containers-storage (pooled medians): {med['layerctl']/med['containers-storage']:.2f}")
print(f"ratio driver-only / containers-storage (pooled medians): {med['driver-only']/med['containers-storage']:.2f}")
PY
