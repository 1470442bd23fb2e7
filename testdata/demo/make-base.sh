#!/bin/sh
# Make the build context of a tiny base image from the host's static busybox
# (Debian package busybox-static): /bin/busybox plus one symlink per applet, /etc/passwd,
# /etc/group, fixed mtimes. Build it with:  pybuild -t localhost/busybox:latest DEST
# Usage: make-base.sh DEST   (BUSYBOX=another static busybox, e.g. Debian's arm64 one;
# APPLETS_FROM=a busybox this host runs, to list the applets without emulation)
set -eu
DEST=${1:?usage: make-base.sh DEST}
BUSYBOX=${BUSYBOX:-/bin/busybox}
APPLETS_FROM=${APPLETS_FROM:-$BUSYBOX}
[ -x "$BUSYBOX" ] || { echo "make-base.sh: $BUSYBOX not found: apt-get install busybox-static" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DEST/rootfs/bin" "$DEST/rootfs/etc" "$DEST/rootfs/tmp" "$DEST/rootfs/root"
chmod 1777 "$DEST/rootfs/tmp"
cp "$BUSYBOX" "$DEST/rootfs/bin/busybox"
for applet in $("$APPLETS_FROM" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$DEST/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$DEST/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$DEST/rootfs/etc/group"
find "$DEST/rootfs" -exec touch -h -d @1700000000 {} +
cat > "$DEST/Dockerfile" <<'DF'
FROM scratch
COPY rootfs/ /
CMD ["/bin/sh"]
DF
