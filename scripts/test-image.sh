#!/usr/bin/env bash
# Build a small two-layer busybox OCI image with umoci and push it to a plain-HTTP
# registry with skopeo. Used by node/tests/image.rs; handy by hand too:
#
#   scripts/test-image.sh 127.0.0.1:5000 busybox:latest
#
# Layer 1: static busybox at /bin/busybox, a symlink per applet (`busybox --list-full`),
#          /etc/passwd, /etc/group, /tmp, and two marker files in /etc.
# Layer 2: deletes /etc/keelson-layer1-only (a whiteout, so pulling exercises whiteouts)
#          and adds /etc/keelson-layer2.
# Config:  Cmd ["sh"], Env ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], WorkingDir "/".
#
# Needs: umoci, skopeo, a static busybox ($BUSYBOX, default /bin/busybox from Debian's
# busybox-static). Runs as root (umoci unpack keeps ownership).
set -euo pipefail

usage() {
    echo "usage: $0 <registry host:port> <repo:tag>" >&2
    echo "  builds a busybox image and pushes it to http://<registry>/<repo>:<tag>" >&2
    exit 2
}

die() {
    echo "test-image.sh: $*" >&2
    exit 1
}

[[ $# -eq 2 ]] || usage
registry=$1
ref=$2
[[ $ref == *:* ]] || die "reference '$ref' must be <repo>:<tag>"
tag=${ref##*:}
busybox=${BUSYBOX:-/bin/busybox}

for tool in umoci skopeo; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' is not installed (Debian: apt-get install -y $tool)"
done
[[ -x $busybox ]] ||
    die "no executable busybox at '$busybox' (Debian: apt-get install -y busybox-static, or set BUSYBOX)"
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q 'statically linked'; then
    die "'$busybox' is not statically linked; the image has no libc (Debian: busybox-static)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keelson-test-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
layout=$tmp/oci
bundle=$tmp/bundle
rootfs=$bundle/rootfs

umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$bundle"

# --- layer 1: busybox and its applets
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
while read -r applet; do
    [[ -n $applet && $applet != bin/busybox ]] || continue
    mkdir -p "$rootfs/$(dirname "$applet")"
    ln -sf /bin/busybox "$rootfs/$applet"
done < <("$busybox" --list-full)
[[ -L $rootfs/bin/sh ]] || die "busybox at '$busybox' has no 'sh' applet"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
echo "deleted by layer 2" >"$rootfs/etc/keelson-layer1-only"
echo "layer 1" >"$rootfs/etc/keelson-layer1"
umoci repack --refresh-bundle --image "$layout:$tag" "$bundle"

# --- layer 2: a whiteout and a new file
rm "$rootfs/etc/keelson-layer1-only"
echo "layer 2" >"$rootfs/etc/keelson-layer2"
umoci repack --image "$layout:$tag" "$bundle"

umoci config --image "$layout:$tag" \
    --config.cmd sh \
    --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    --config.workingdir /

skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$tag" "docker://$registry/$ref"
echo "pushed $registry/$ref"
