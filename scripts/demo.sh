#!/usr/bin/env bash
# The main job end to end: build layerctl, make a busybox root filesystem tar, import it,
# create a container, mount it, run busybox inside with chroot, show the tree, tear down.
# Needs root (mounts, chroot, file owners). Usage: ./scripts/demo.sh [DRIVER]
#   DRIVER: overlay2, aufs or vfs (default: what layerctl picks, overlay2 when the kernel has it)
#   LAYERCTL_DEMO_ROOT: store to use (default: a fresh temp dir, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (mount, chroot)" >&2; exit 1; fi
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  dpkg -s busybox-static >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
fi
cargo build --release -q -p layerctl
bin=${CARGO_TARGET_DIR:-target}/release/layerctl
work=$(mktemp -d /var/tmp/layerctl-demo-work.XXXXXX)
root=${LAYERCTL_DEMO_ROOT:-$work/root}
driver_args=()
[ -n "${1:-}" ] && driver_args=(--driver "$1")
lc() { echo "+ layerctl $*" >&2; "$bin" --root "$root" "${driver_args[@]}" "$@"; }
cleanup() {
  "$bin" --root "$root" "${driver_args[@]}" rm --force demo >/dev/null 2>&1 || true
  if grep -q " $work/" /proc/self/mountinfo; then echo "demo.sh: mounts left under $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

./scripts/make-busybox-tar.sh "$work/busybox.tar"
lc import "$work/busybox.tar" --name busybox
lc images
lc create demo busybox
mnt=$(lc mount demo)
echo "mounted at $mnt"
echo "+ chroot $mnt /bin/busybox sh -c 'uname -a; cat /etc/hostname; ls /'"
chroot "$mnt" /bin/busybox sh -c 'uname -a; cat /etc/hostname; ls /'
echo "+ find $mnt -maxdepth 2 | sed -n 1,10p"
# sed reads to the end: `head` would exit early and, with pipefail, find's SIGPIPE
# would fail the demo whenever find is slower than head (seen with aufs).
find "$mnt" -maxdepth 2 | sed -n 1,10p
lc ps
lc info
lc umount demo
lc rm demo
lc rmi busybox
lc check
echo "demo: ok"
