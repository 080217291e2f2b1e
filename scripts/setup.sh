#!/usr/bin/env bash
# Installs what this project needs on a Debian 12 machine (as root) and builds
# it. Safe to run any number of times: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  containerd runc crun            # the container stack the e2e tests drive
  qemu-system-x86 qemu-utils      # the VM (virtiofsd ships in qemu-system-common)
  busybox-static tini             # test images and the guest root
  socat cpio lz4 e2fsprogs erofs-utils util-linux iproute2
  containernetworking-plugins     # CNI bridge, host-local, loopback for CRI pods
  gcc libc6-dev                   # the small C helpers: the guest's, and QEMU's jailer on the host
  golang-go make python3          # critest and the real crictl (../shared/critest builds them offline)
)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs packages and the e2e tests start containerd and VMs)" >&2
  exit 1
fi

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "setup: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "building"
npm run --silent build

# QEMU's jailer (src/vm/native/jailer.c): the host side's one C helper.
mkdir -p build/host
if [ ! -x build/host/kata-ts-jailer ] || [ src/vm/native/jailer.c -nt build/host/kata-ts-jailer ]; then
  log "building build/host/kata-ts-jailer"
  cc -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong \
    -o build/host/kata-ts-jailer.tmp src/vm/native/jailer.c
  mv build/host/kata-ts-jailer.tmp build/host/kata-ts-jailer
fi

if [ -f scripts/bundle-agent.mjs ]; then
  node scripts/bundle-agent.mjs
fi
if [ -f scripts/build-guest.sh ]; then
  bash scripts/build-guest.sh
fi
# containerd looks the shim up on its PATH as containerd-shim-kata-v2
# (runtime_type "io.containerd.kata.v2"): link this checkout's into
# /usr/local/bin unless something else is installed there already (an
# install made by scripts/install.sh, say: its link is left alone).
shim="$PWD/bin/containerd-shim-kata-v2"
link=/usr/local/bin/containerd-shim-kata-v2
if [ ! -e "$link" ] || [ "$(readlink -f "$link")" = "$(readlink -f "$shim")" ] || { [ -L "$link" ] && [[ $(readlink "$link") == */bin/containerd-shim-kata-v2 ]] && [[ $(readlink "$link") != */current/bin/* ]]; }; then
  ln -sfn "$shim" "$link"
else
  log "not replacing $link (not ours); the tests use $shim directly"
fi
# The default configuration.toml at the end of Kata's lookup, naming this
# checkout's guest image (last setup wins, as for the link above; an operator's
# /etc/kata-containers/configuration.toml is read before it).
node scripts/install-config.mjs
log "ready"
