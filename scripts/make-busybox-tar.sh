#!/usr/bin/env bash
# Builds OUT.tar: a flat root filesystem tarball shaped like `docker export` of the busybox
# image: bin/busybox (Debian's statically linked busybox-static binary) plus one hard link
# per applet, a minimal /etc, empty system directories. Deterministic (sorted, mtime 0,
# owner 0:0), so the same script gives the same DiffID on the same busybox version.
# Needs busybox-static; installed with apt-get when missing (needs root).
# Usage: scripts/make-busybox-tar.sh OUT.tar
set -euo pipefail
out=${1:?usage: make-busybox-tar.sh OUT.tar}
bb=""
for cand in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
  # A usable binary lists its applets and is static (ldd refuses it).
  if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" --list >/dev/null 2>&1 && ! ldd "$cand" >/dev/null 2>&1; then
    bb=$cand; break
  fi
done
if [ -z "$bb" ]; then
  if [ "$(id -u)" != 0 ]; then echo "make-busybox-tar.sh: busybox-static missing; run as root or apt-get install busybox-static" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
  bb=/bin/busybox
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,dev,etc,home,proc,root,sys,tmp,usr/sbin,var/spool/mail,var/www}
chmod 1777 "$root/tmp"; chmod 700 "$root/root"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln "$root/bin/busybox" "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n' > "$root/etc/group"
: > "$root/etc/hostname"; : > "$root/etc/hosts"; : > "$root/etc/resolv.conf"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$out" .
echo "$out: $(tar -tf "$out" | wc -l) entries, $(stat -c %s "$out") bytes"
