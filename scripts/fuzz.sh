#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/) one after the other, each for SECONDS (default
# 600), one job, one worker (the machine is shared). Needs the nightly toolchain and
# cargo-fuzz (installed if missing).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: every target
#
# Each target starts from fuzz/seeds/<target>/ and keeps its growing corpus in
# fuzz/corpus/<target>/ (not committed). A crash stops that target and leaves
# fuzz/artifacts/<target>/crash-*: copy it into fuzz/regressions/<target>/ and fix the
# bug; `cargo test` replays every regression (driver-core/tests/fuzz_regressions.rs,
# layerstore/tests/fuzz_regressions.rs). The last lines of each run (executions,
# coverage) are printed and kept in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(tar_apply compression_detect docker_save_manifest oci_index)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo +nightly fuzz build -O
mkdir -p logs
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    # The binaries built above, run directly: edits made while a long run goes on do
    # not rebuild it halfway. -jobs=1 runs one fuzzing process (its output in
    # fuzz-0.log), -workers=1 one at a time.
    rm -f fuzz-0.log
    if "target/$triple/release/$t" "corpus/$t" "seeds/$t" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -jobs=1 -workers=1 \
        -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1; then
        echo "   no crash"
    else
        echo "   FAILED: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        status=1
    fi
    if [ -f fuzz-0.log ]; then
        cat fuzz-0.log >>"logs/$t.log"
        rm -f fuzz-0.log
    fi
    grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)|^#[0-9]+.*(DONE|pulse)" "logs/$t.log" | tail -6
done
exit $status
