#!/usr/bin/env bash
# Whole-command cost of create, mount, umount and rm per driver on a host with a long
# mount table: two layerctl binaries (BEFORE and AFTER) side by side, alternating per
# round (which one goes first alternates), in a private mount namespace holding EXTRA (default 3000) extra tmpfs mounts.
# Each binary has its own store per driver with one imported image and KEEP (default 5)
# containers that stay (and stay mounted) meanwhile, as on a host running containers.
# Prints per driver and step the median over RUNS rounds (ms) of each binary and the
# ratio after/before. Needs root; the namespace (and every mount in it) goes when the
# script ends. Usage:
#   scripts/bench-mount-table.sh BEFORE AFTER IMAGE.tar [DRIVERS] [RUNS]
# e.g. scripts/make-busybox-tar.sh /var/tmp/busybox.tar
#      scripts/bench-mount-table.sh ./layerctl-before ./layerctl-after /var/tmp/busybox.tar
set -euo pipefail
before=$(realpath "${1:?usage: BEFORE AFTER IMAGE.tar [DRIVERS] [RUNS]}")
after=$(realpath "${2:?}")
image=$(realpath "${3:?}")
drivers=${4:-vfs,overlay2,aufs}
runs=${5:-9}
extra=${EXTRA:-3000}
keep=${KEEP:-5}
if [ -z "${MNT_BENCH_INNER:-}" ]; then
  exec env MNT_BENCH_INNER=1 unshare --mount --propagation private "$0" "$@"
fi
work=$(mktemp -d /var/tmp/mnt-bench.XXXX)
mount -t tmpfs mnt-bench-extra "$work"
mkdir "$work/extra"
for i in $(seq "$extra"); do mkdir "$work/extra/$i"; mount -t tmpfs "t$i" "$work/extra/$i"; done
echo "mountinfo: $(wc -l </proc/self/mountinfo) lines, $(wc -c </proc/self/mountinfo) bytes"
stores=/var/tmp/mnt-bench-stores.$$
mkdir -p "$stores"
trap 'for v in before after; do for d in ${drivers//,/ }; do r=$stores/$v-$d; [ -d "$r" ] || continue
  for c in $(seq "$keep"); do "$(eval echo \$$v)" --root "$r" --driver "$d" rm --force k$c >/dev/null 2>&1 || true; done; done; done
  rm -rf "$stores"; umount -l "$work"; rmdir "$work"' EXIT

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }

for v in before after; do for d in ${drivers//,/ }; do
  bin=$(eval echo \$$v); r=$stores/$v-$d
  "$bin" --root "$r" --driver "$d" import "$image" --name img >/dev/null
  for c in $(seq "$keep"); do
    "$bin" --root "$r" --driver "$d" create k$c img >/dev/null
    "$bin" --root "$r" --driver "$d" mount k$c >/dev/null
  done
done; done

res=$stores/results
: >"$res"
for round in $(seq "$runs"); do
  # Which binary goes first alternates per round (page cache, journal commits).
  order="before after"; [ $((round % 2)) = 0 ] && order="after before"
  for d in ${drivers//,/ }; do for v in $order; do
    bin=$(eval echo \$$v); r=$stores/$v-$d
    echo "$d $v create $(ms "$bin" --root "$r" --driver "$d" create c img)" >>"$res"
    echo "$d $v mount $(ms "$bin" --root "$r" --driver "$d" mount c)" >>"$res"
    echo "$d $v umount $(ms "$bin" --root "$r" --driver "$d" umount c)" >>"$res"
    echo "$d $v rm $(ms "$bin" --root "$r" --driver "$d" rm c)" >>"$res"
  done; done
done
# One more round under strace: how many times each command opens /proc/self/mountinfo
# (the command's own process; an aufs server it starts is not counted).
reads() { strace -qq -e trace=openat -o "$stores/strace" "$@" >/dev/null; grep -c 'proc/self/mountinfo' "$stores/strace" || true; }
for d in ${drivers//,/ }; do for v in before after; do
  bin=$(eval echo \$$v); r=$stores/$v-$d
  echo "$d $v $(reads "$bin" --root "$r" --driver "$d" create c img) $(reads "$bin" --root "$r" --driver "$d" mount c) \
$(reads "$bin" --root "$r" --driver "$d" umount c) $(reads "$bin" --root "$r" --driver "$d" rm c)" >>"$stores/reads"
done; done
echo "mountinfo reads per command (create mount umount rm):"
cat "$stores/reads"
printf '%-9s %-7s %10s %10s %8s\n' driver step before_ms after_ms ratio
for d in ${drivers//,/ }; do for s in create mount umount rm; do
  b=$(awk -v d=$d -v s=$s '$1==d && $2=="before" && $3==s {print $4}' "$res" | median)
  a=$(awk -v d=$d -v s=$s '$1==d && $2=="after" && $3==s {print $4}' "$res" | median)
  printf '%-9s %-7s %10s %10s %7.2fx\n' "$d" "$s" "$b" "$a" "$(echo "$a / $b" | bc -l)"
done; done
