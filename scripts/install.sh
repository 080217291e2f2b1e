#!/usr/bin/env bash
# Installs the runtime into one versioned prefix, as Kata's packages install
# into /opt/kata (docs/install.md):
#
#   bash scripts/install.sh [--prefix /opt/kata-ts] [--bindir /usr/local/bin]
#                           [--version NAME] [--containerd-config FILE [--handler kata]]
#   bash scripts/install.sh --uninstall [--prefix …] [--bindir …] [--force]
#
# <prefix>/versions/<version>/  everything one version needs, nothing from the checkout:
#   bin/node                      the Node binary the shim and CLIs run with (a copy)
#   bin/containerd-shim-kata-v2   wrappers naming that node, their bundle and
#   bin/kata-ts-runtime           this version's default configuration
#   bin/kata-crictl
#   lib/*.mjs                     the bundled shim and CLIs
#   libexec/kata-ts-jailer        starts each pod's QEMU jailed (docs/security.md)
#   share/guest/                  kernel, initrd, root image (with the agent), manifest
#   share/defaults/configuration.toml   the default, naming share/guest
# <prefix>/current -> versions/<version>   switched atomically (rename of a new link)
# <bindir>/{containerd-shim-kata-v2,kata-ts-runtime,kata-crictl} -> <prefix>/current/bin/…
#
# Upgrades install beside the last version. A running pod's shim keeps the
# version that started it (its wrapper names its own node and bundle), so
# switching `current` touches no running pod. Old versions stay until
# --uninstall. Nothing is written outside <prefix> and the three links (and,
# with --containerd-config, that file, after a backup).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PREFIX=/opt/kata-ts
BINDIR=/usr/local/bin
VERSION=
UNINSTALL=0
FORCE=0
CTRD_CONFIG=
HANDLER=kata
COMMANDS=(containerd-shim-kata-v2 kata-ts-runtime kata-crictl)

die() { printf 'install: %s\n' "$*" >&2; exit 1; }
log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --bindir) BINDIR=${2:?--bindir needs a directory}; shift 2 ;;
    --version) VERSION=${2:?--version needs a name}; shift 2 ;;
    --containerd-config) CTRD_CONFIG=${2:?--containerd-config needs a file}; shift 2 ;;
    --handler) HANDLER=${2:?--handler needs a name}; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case $PREFIX in /*) ;; *) die "--prefix must be absolute (got $PREFIX)" ;; esac
case $BINDIR in /*) ;; *) die "--bindir must be absolute (got $BINDIR)" ;; esac
[ "$PREFIX" != / ] || die "--prefix / is not a prefix"
PREFIX=${PREFIX%/}
MARKER=.kata-ts-install

# The pods (serving shims) running from this prefix: "pid pod-id version" lines.
running_shims() {
  local p cmd id ver
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    case $cmd in *"$PREFIX/versions/"*containerd-shim-kata-v2.mjs*) ;; *) continue ;; esac
    id=$(sed -n 's/.* -id \([^ ]*\).*/\1/p' <<<"$cmd")
    ver=$(sed -n "s#.*$PREFIX/versions/\([^/]*\)/.*#\1#p" <<<"$cmd")
    printf '%s %s %s\n' "${p#/proc/}" "${id:-?}" "${ver:-?}"
  done
}

if [ "$UNINSTALL" = 1 ]; then
  [ -d "$PREFIX" ] || { log "nothing installed in $PREFIX"; exit 0; }
  [ -e "$PREFIX/$MARKER" ] || die "$PREFIX was not made by this script (no $MARKER): left alone"
  busy=$(running_shims)
  keep=()
  if [ -n "$busy" ]; then
    if [ "$FORCE" = 0 ]; then
      printf 'install: pods still run from %s (pid, pod, version):\n%s\n' "$PREFIX" "$busy" >&2
      die "refusing to uninstall: stop them first (crictl stopp / ctr task kill), or --force to remove all but their versions"
    fi
    mapfile -t keep < <(awk '{print $3}' <<<"$busy" | sort -u)
  fi
  for c in "${COMMANDS[@]}"; do
    l="$BINDIR/$c"
    if [ -L "$l" ] && [[ $(readlink "$l") == "$PREFIX/"* ]]; then rm -f "$l"; log "removed $l"; fi
  done
  rm -f "$PREFIX/current"
  for v in "$PREFIX"/versions/*/; do
    [ -d "$v" ] || continue
    v=$(basename "$v")
    if printf '%s\n' "${keep[@]}" | grep -qxF "$v"; then log "left $PREFIX/versions/$v: its pods still run"; continue; fi
    rm -rf "${PREFIX:?}/versions/$v"
  done
  rmdir "$PREFIX/versions" 2>/dev/null || true
  if [ ${#keep[@]} -eq 0 ]; then
    rm -f "$PREFIX/$MARKER"
    rmdir "$PREFIX" 2>/dev/null || log "left $PREFIX: it holds files this script did not make"
    log "uninstalled $PREFIX"
  else
    log "uninstalled all but ${keep[*]} (pods run from them; run --uninstall again once they are gone)"
  fi
  exit 0
fi

# --- what is installed: built from this checkout (setup builds what is missing) ---
need=(build/shim/containerd-shim-kata-v2.mjs build/host/kata-ts-jailer build/guest/vmlinux build/guest/initrd.img build/guest/rootfs.img build/guest/manifest.json dist/src/runtime-cli/main.js)
for f in "${need[@]}"; do
  [ -e "$f" ] || { log "building (missing $f)"; bash scripts/setup.sh; break; }
done
node scripts/bundle-cli.mjs >/dev/null
NODE=$(readlink -f "$(command -v node)") || die "node not found on PATH"
GUEST_FILES=(vmlinux bzImage initrd.img rootfs.img bare-initrd.img cmdline manifest.json)

if [ -z "$VERSION" ]; then
  pkg=$(node -p 'require("./package.json").version')
  sum=$(cat build/shim/containerd-shim-kata-v2.mjs build/cli/*.mjs build/host/kata-ts-jailer build/guest/manifest.json config/configuration.toml "$NODE" | sha256sum | cut -c1-12)
  VERSION="$pkg-$sum"
fi
[[ $VERSION =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "--version must be letters, digits and ._+- (got $VERSION)"

mkdir -p "$PREFIX/versions"
touch "$PREFIX/$MARKER"
V=$PREFIX/versions/$VERSION
if [ -e "$V/.complete" ]; then
  log "version $VERSION is installed already"
else
  T=$PREFIX/versions/.$VERSION.tmp
  rm -rf "$T"
  mkdir -p "$T/bin" "$T/lib" "$T/libexec" "$T/share/guest" "$T/share/defaults"
  cp "$NODE" "$T/bin/node"
  # QEMU's jailer: root-owned, not setuid (the shim runs as root and starts it).
  install -m 0755 build/host/kata-ts-jailer "$T/libexec/kata-ts-jailer"
  cp build/shim/containerd-shim-kata-v2.mjs build/cli/kata-ts-runtime.mjs build/cli/kata-crictl.mjs "$T/lib/"
  for f in "${GUEST_FILES[@]}"; do [ -e "build/guest/$f" ] && cp "build/guest/$f" "$T/share/guest/"; done
  # The default configuration: the project's, naming this version's guest image and jailer.
  node scripts/install-config.mjs "$T/share/defaults/configuration.toml" \
    --relocate ../build/guest="$V/share/guest" --relocate ../build/host="$V/libexec" \
    --origin "Installed by scripts/install.sh: version $VERSION under $PREFIX."
  for c in "${COMMANDS[@]}"; do
    cat >"$T/bin/$c" <<EOF
#!/bin/sh
# $c, version $VERSION, installed by scripts/install.sh under $PREFIX.
# Its own node and bundle: a process started from here stays on this version.
export KATA_TS_DEFAULT_CONFIG="$V/share/defaults/configuration.toml"
export KATA_TS_VERSION="$VERSION"
export KATA_TS_SHIM="$V/bin/containerd-shim-kata-v2"
export KATA_TS_JAILER="$V/libexec/kata-ts-jailer"
exec "$V/bin/node" "$V/lib/$c.mjs" "\$@"
EOF
    chmod 0755 "$T/bin/$c"
  done
  printf '{"version":"%s","installed":"%s","from":"%s","node":"%s"}\n' "$VERSION" "$(date -u +%FT%TZ)" "$ROOT" "$NODE" >"$T/.complete"
  chmod -R go-w "$T"
  mv -T "$T" "$V"
  log "installed version $VERSION in $V"
fi

# Validate before switching: the new version reads its own default.
"$V/bin/kata-ts-runtime" env --json >/dev/null || die "version $VERSION cannot read its configuration: current not switched"

# current -> this version, atomically (a new link renamed over the old one).
ln -sfn "versions/$VERSION" "$PREFIX/.current.tmp"
mv -T "$PREFIX/.current.tmp" "$PREFIX/current"
log "current -> versions/$VERSION"

mkdir -p "$BINDIR"
for c in "${COMMANDS[@]}"; do
  l="$BINDIR/$c"
  if [ -e "$l" ] && ! [ -L "$l" ]; then
    log "not replacing $l (a file, not a link of ours)"
    continue
  fi
  ln -sfn "$PREFIX/current/bin/$c" "$l.tmp.$$"
  mv -T "$l.tmp.$$" "$l"
done
log "linked ${COMMANDS[*]} into $BINDIR"

if [ -n "$CTRD_CONFIG" ]; then
  "$V/bin/kata-ts-runtime" containerd-config --file "$CTRD_CONFIG" --handler "$HANDLER" \
    --runtime-config "$PREFIX/current/share/defaults/configuration.toml"
else
  log "containerd: $BINDIR/kata-ts-runtime containerd-config --runtime-config $PREFIX/current/share/defaults/configuration.toml (adds the CRI runtime \"kata\"; then restart containerd)"
fi
