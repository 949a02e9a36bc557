#!/bin/sh
# Build bundles/busybox/rootfs from Debian's busybox-static: one static
# binary plus a symlink per applet, and the few files a shell expects.
# Usage: bundles/busybox/make-rootfs.sh [ROOTFS_DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
rootfs=${1:-$here/rootfs}
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "make-rootfs: needs Debian's static busybox at /bin/busybox (apt-get install busybox-static)" >&2
    exit 1
fi
rm -rf "$rootfs.tmp"
mkdir -p "$rootfs.tmp/bin" "$rootfs.tmp/etc" "$rootfs.tmp/tmp" "$rootfs.tmp/proc" \
         "$rootfs.tmp/sys" "$rootfs.tmp/dev" "$rootfs.tmp/root" "$rootfs.tmp/usr/bin" \
         "$rootfs.tmp/sbin" "$rootfs.tmp/usr/sbin"
chmod 1777 "$rootfs.tmp/tmp"
cp "$busybox" "$rootfs.tmp/bin/busybox"
for applet in $("$busybox" --list-full); do
    case "$applet" in bin/busybox) continue ;; esac
    ln -sf /bin/busybox "$rootfs.tmp/$applet" 2>/dev/null || true
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs.tmp/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' > "$rootfs.tmp/etc/group"
rm -rf "$rootfs"
mv "$rootfs.tmp" "$rootfs"
echo "$rootfs"
