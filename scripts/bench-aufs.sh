#!/usr/bin/env bash
# Userspace aufs (layerctl, FUSE) side by side with kernel overlay (layerctl overlay2)
# and fuse-overlayfs over the same image layer, on the Debian rootfs image plus one
# large file. Prints one markdown table of medians (whole commands, milliseconds).
# Usage: scripts/bench-aufs.sh [WORKDIR]   (root; builds the release binary; needs
# debootstrap for the fixture and fuse-overlayfs, both installed if missing)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/var/tmp/layerctl-bench-aufs}
RUNS=${RUNS:-5}
BIG_MB=${BIG_MB:-1024}
command -v fuse-overlayfs >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse-overlayfs >/dev/null
(cd "$here" && cargo build --release -q -p layerctl)
L=$here/target/release/layerctl
mkdir -p "$W"
[ -f "$W/debian.tar" ] || bash "$here/../shared/fixtures/make-debian-rootfs-tar.sh" "$W/debian.tar" \
  || bash /work/shared/fixtures/make-debian-rootfs-tar.sh "$W/debian.tar"
if [ ! -f "$W/image.tar" ]; then
  rm -rf "$W/x"; mkdir -p "$W/x"
  head -c $((BIG_MB << 20)) /dev/urandom > "$W/x/big"
  cp "$W/debian.tar" "$W/image.tar.tmp"
  tar --numeric-owner -C "$W/x" -rf "$W/image.tar.tmp" ./big
  mv "$W/image.tar.tmp" "$W/image.tar"; rm -rf "$W/x"
fi

cleanup() {
  for m in "$W"/fo-*/m; do mountpoint -q "$m" && umount "$m"; done 2>/dev/null || true
  for d in overlay2 aufs; do
    for c in $($L --root "$W/$d" ps 2>/dev/null | awk 'NR>1 && $4>0 {print $1}' || true); do
      $L --root "$W/$d" umount "$c" >/dev/null 2>&1 || true
    done
  done
}
trap cleanup EXIT

for d in overlay2 aufs; do
  [ -d "$W/$d" ] || $L --root "$W/$d" --driver $d import "$W/image.tar" >/dev/null
done
img() { $L --root "$W/$1" images | awk 'NR==2 {print $2}'; }
# fresh <driver>: a new container's mount path. driver fuse-overlayfs: over overlay2's layer.
fresh() {
  n=$(date +%s%N)
  case $1 in
    fuse-overlayfs)
      local chain cache lower f="$W/fo-$n"
      chain=$(ls "$W/overlay2/layerdb/sha256" | head -1)
      cache=$(cat "$W/overlay2/layerdb/sha256/$chain/cache-id")
      lower="$W/overlay2/overlay2/$cache/diff"
      mkdir -p "$f"/{u,w,m}
      fuse-overlayfs -o "lowerdir=$lower,upperdir=$f/u,workdir=$f/w" "$f/m"
      echo "$f/m" ;;
    *) $L --root "$W/$1" create "c$n" "$(img "$1")" >/dev/null
       $L --root "$W/$1" mount "c$n" ;;
  esac
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s%N; }
# median of RUNS runs of "$@" in ms; PREP (a command) runs before each
median() {
  local ts=() i s e
  for i in $(seq "$RUNS"); do
    [ -n "${PREP:-}" ] && eval "$PREP"
    s=$(now); "$@" >/dev/null 2>&1; e=$(now)
    ts+=($(( (e - s) / 1000000 )))
  done
  printf '%s\n' "${ts[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"
}
creates() { python3 - "$1" <<'PY'
import os, sys
d = os.path.join(sys.argv[1], "creates-%d" % os.getpid()); os.mkdir(d)
for i in range(2000):
    with open(os.path.join(d, "f%d" % i), "wb") as f: f.write(b"x" * 4096)
PY
sync -f "$W"; }
appends() { python3 - "$1" "$2" <<'PY'
import sys
root, n = sys.argv[1], int(sys.argv[2])
import subprocess
files = subprocess.run(["sh", "-c", f"cd {root} && find usr/share -type f -size -64k | sort | head -{n}"], capture_output=True, text=True).stdout.split()
for f in files:
    with open(f"{root}/{f}", "ab") as h: h.write(b"\n")
PY
sync -f "$W"; }
chmods() { (cd "$1" && find usr/share -type f -size -64k | sort | sed -n "1,$2p" | xargs chmod 600); sync -f "$W"; }

# Drivers measured: kernel overlay (layerctl overlay2); userspace aufs twice, with
# `passthrough = true` (the default: an OPEN per file, FUSE passthrough for files
# >= 1 MiB) and with `passthrough = false` (`no_open`: no OPEN/RELEASE round trips,
# every file read through FUSE's page cache); fuse-overlayfs. Each run measures every
# driver in turn (interleaved), so the machine's load falls on all of them alike.
DRIVERS=${DRIVERS:-"overlay2 aufs-pt aufs-noopen fuse-overlayfs"}
printf '[driver_options.aufs]\npassthrough = true\n' > "$W/passthrough.toml"
printf '[driver_options.aufs]\npassthrough = false\n' > "$W/noopen.toml"
: > "$W/empty.toml"
drv() { case $1 in aufs*) echo aufs ;; *) echo "$1" ;; esac; }
cfg() { case $1 in aufs-pt) echo "$W/passthrough.toml" ;; aufs-noopen) echo "$W/noopen.toml" ;; *) echo "$W/empty.toml" ;; esac; }
# fresh2 <driver>: fresh with the driver's config
fresh2() {
  if [ "$1" = fuse-overlayfs ]; then fresh fuse-overlayfs; return; fi
  local n; n=$(date +%s%N)
  LAYERCTL_CONFIG=$(cfg "$1") $L --root "$W/$(drv "$1")" create "c$n" "$(img "$(drv "$1")")" >/dev/null
  LAYERCTL_CONFIG=$(cfg "$1") $L --root "$W/$(drv "$1")" mount "c$n"
}
ms() { local s e; s=$(now); "$@" >/dev/null 2>&1; e=$(now); echo $(( (e - s) / 1000000 )); }
med() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
declare -A M T
for d in $DRIVERS; do
  M[$d]=$(fresh2 "$d")
  tar -cf /dev/zero -C "${M[$d]}" . 2>/dev/null || true
  cat "${M[$d]}/big" >/dev/null
done
# Warm rows first (every run of every driver), then the cold rows (each after
# drop_caches), then the writes, which add files to the trees read above.
for i in $(seq "$RUNS"); do
  for d in $DRIVERS; do
    m=${M[$d]}
    T[$d,warm]+=" $(ms tar -cf /dev/zero -C "$m" .)"
    T[$d,find]+=" $(ms find "$m" -printf '%s %m\n')"
    T[$d,bigw]+=" $(ms cat "$m/big")"
  done
done
for i in $(seq "$RUNS"); do
  for d in $DRIVERS; do
    m=${M[$d]}
    drop; T[$d,cold]+=" $(ms tar -cf /dev/zero -C "$m" .)"
    drop; T[$d,bigc]+=" $(ms cat "$m/big")"
  done
done
for i in $(seq "$RUNS"); do
  for d in $DRIVERS; do
    T[$d,create]+=" $(ms creates "${M[$d]}")"
    mm=$(fresh2 "$d"); T[$d,copyup]+=" $(ms appends "$mm" 200)"
    mm=$(fresh2 "$d"); T[$d,chmod]+=" $(ms chmods "$mm" 500)"
  done
done
declare -A R
for d in $DRIVERS; do
  for k in warm find cold bigw bigc create copyup chmod; do
    # shellcheck disable=SC2086
    R[$d,$k]=$(med ${T[$d,$k]})
  done
done

echo "RUNS=$RUNS BIG_MB=$BIG_MB, medians in ms (all runs: ms per run)"
echo
echo "| row | kernel overlay | aufs, passthrough = true (default) | aufs, passthrough = false | fuse-overlayfs | pt=true / overlay | pt=false / overlay | pt=true / fuse-overlayfs | pt=false / fuse-overlayfs |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
r() { echo "$1 / ($2 + 0.001)" | bc -l; }
for row in "warm full read (tar -cf /dev/zero):warm" "warm stat walk (find -printf):find" \
  "cold full read (after drop_caches):cold" "${BIG_MB} MiB file, warm (cat):bigw" \
  "${BIG_MB} MiB file, cold (cat):bigc" "create 2,000 x 4 KiB + sync:create" \
  "copy-up 200 lower files (append) + sync:copyup" "chmod 500 lower files + sync:chmod"; do
  name=${row%:*}; k=${row##*:}
  o=${R[overlay2,$k]:-0}; p=${R[aufs-pt,$k]:-0}; n=${R[aufs-noopen,$k]:-0}; f=${R[fuse-overlayfs,$k]:-0}
  printf '| %s | %s | %s | %s | %s | %.2fx | %.2fx | %.2fx | %.2fx |\n' "$name" "$o" "$p" "$n" "$f" \
    "$(r "$p" "$o")" "$(r "$n" "$o")" "$(r "$p" "$f")" "$(r "$n" "$f")"
done
echo
for d in $DRIVERS; do for k in warm find cold bigw bigc create copyup chmod; do echo "$d $k:${T[$d,$k]}"; done; done
