#!/usr/bin/env bash
# Installs what tshv's build and tests need on a fresh Debian (bookworm) machine, idempotently:
# the C toolchain for the freestanding test guests and the Debian tools the image builder uses.
# Runs apt-get only when something is missing. Needs root (or sudo) for that.
set -euo pipefail
need=()
for tool in gcc:gcc ld:binutils objcopy:binutils as:binutils apt-get:apt dpkg-deb:dpkg xz:xz-utils qemu-system-x86_64:qemu-system-x86 iasl:acpica-tools; do
  cmd=${tool%%:*}; pkg=${tool#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# apt-get download needs package lists; fetch them once if there are none.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
fi
node -e 'const [maj]=process.versions.node.split(".").map(Number); if (maj < 20) { console.error("setup: tshv needs Node >= 20, found " + process.version); process.exit(1); }'
