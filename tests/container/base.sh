#!/usr/bin/env bash
# Builds localhost/debian:bookworm-slim with Debian's own debuerreotype (the
# tool behind the official images) when no registry is reachable. Skipped when
# the image already exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
if podman image exists "$BASE_IMAGE"; then
    echo "base: $BASE_IMAGE already present"
    exit 0
fi
root="$PODMAN_WORK/rootfs"
rm -rf "$root" && mkdir -p "$root"
debuerreotype-init --non-debian "$root" bookworm http://deb.debian.org/debian >/dev/null
debuerreotype-minimizing-config "$root"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
rm -f "$root/etc/apt/sources.list"
debuerreotype-apt-get "$root" update -qq >/dev/null
debuerreotype-apt-get "$root" dist-upgrade -yqq >/dev/null
debuerreotype-slimify "$root"
debuerreotype-recalculate-epoch "$root"
debuerreotype-tar "$root" "$PODMAN_WORK/base.tar"
podman import --change 'CMD ["bash"]' "$PODMAN_WORK/base.tar" "$BASE_IMAGE" >/dev/null
rm -rf "$root" "$PODMAN_WORK/base.tar"
echo "base: built $BASE_IMAGE"
