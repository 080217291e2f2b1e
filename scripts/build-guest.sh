#!/usr/bin/env bash
# Builds the guest image every pod VM boots (design and measurements:
# docs/guest-image.md):
#
#   build/guest/vmlinux         uncompressed kernel (microvm needs it)
#   build/guest/bzImage         the same kernel as Debian ships it (q35)
#   build/guest/initrd.img      small initramfs: busybox, the modules to reach the root, /init
#   build/guest/rootfs.img      read-only root for virtio-blk: node, crun, tini, socat,
#                               busybox, the kernel modules, the agent
#   build/guest/bare-initrd.img initramfs whose init powers off at once (boot benchmark)
#   build/guest/cmdline         the kernel command line the image expects (no tsc_early_khz)
#   build/guest/manifest.json   kernel version, files, sizes, modules, agent start, input hash
#
# Cached: a hash of every input (this script, the options below, the kernel
# .deb's name and version, the versions of the other .debs used, the host
# binaries and libraries copied in, the agent bundle) is kept in
# build/guest/.stamp; when it matches, nothing is done. Safe to run twice and
# concurrently (flock). Root is needed only to apt-get install what is missing.
#
# Options (environment):
#   GUEST_ROOTFS_FS=erofs|erofs-lz4|ext4  root image file system (default erofs)
#   GUEST_INITRD_COMPRESS=lz4|gzip|none   initramfs compression (default lz4, the `lz4 -l` format)
#   GUEST_RUNC=0|1                        also put runc (and its libraries) in the root (default 0)
#   GUEST_KERNEL_FLAVOR=generic|cloud     Debian's kernel flavor (default generic: linux-image-amd64,
#                                         whose 9p modules VM templates need; cloud: linux-image-cloud-amd64,
#                                         about 0.3 s faster to boot under TCG, no 9p)
#   GUEST_KERNEL_DEB=FILE                 use this linux-image-*-amd64 .deb instead of apt's
#   GUEST_AGENT_DIR=DIR                   agent bundle directory (default build/agent)
#   GUEST_OUT=DIR                         output directory (default build/guest)
#   GUEST_FORCE=1                         rebuild even when the stamp matches
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/build-guest.sh"
OUT=${GUEST_OUT:-$ROOT/build/guest}
CACHE=${GUEST_CACHE:-$ROOT/build/cache/guest}
AGENT_DIR=${GUEST_AGENT_DIR:-$ROOT/build/agent}
ROOTFS_FS=${GUEST_ROOTFS_FS:-erofs}
INITRD_COMPRESS=${GUEST_INITRD_COMPRESS:-lz4}
WITH_RUNC=${GUEST_RUNC:-0}
FORCE=${GUEST_FORCE:-0}

KERNEL_FLAVOR=${GUEST_KERNEL_FLAVOR:-generic}
case "$KERNEL_FLAVOR" in
  generic) KERNEL_META=linux-image-amd64 ;;
  cloud) KERNEL_META=linux-image-cloud-amd64 ;;
  *) echo "build-guest: GUEST_KERNEL_FLAVOR must be generic or cloud (got $KERNEL_FLAVOR)" >&2; exit 1 ;;
esac

# What the guest runs as PID 1 (after /init): tini reaps orphans and forwards
# signals; node gets a larger young generation (allocation-heavy JS ran 5x
# faster under TCG) and libuv a larger pool (the virtio-serial read loop holds
# one thread).
# boot.cjs runs the CommonJS bundle with its V8 code cache (made with these
# NODE_FLAGS by scripts/bundle-agent.mjs: keep the two in step); agent.mjs
# (the ES module bundle) when there is no boot.cjs.
GUEST_AGENT=/agent/agent.mjs
[ -f "$AGENT_DIR/boot.cjs" ] && GUEST_AGENT=/agent/boot.cjs
NODE_FLAGS=(--max-semi-space-size=16)
UV_POOL=8

# Kernel modules (Debian's kernels build every virtio driver as a module).
# Stage 1 (initramfs) loads what reaching the root needs; the bus driver is
# picked by /init: virtio_mmio on microvm, virtio_pci on q35.
BUS_MODULES=(virtio_mmio virtio_pci)
# Loaded from the root image before the agent starts, always.
BOOT_MODULES=(virtio_console virtio_net)
# Loaded before the agent starts when such a virtio device is present
# ("<virtio device id>:<module>[+<module>…]": 26 = fs, 19 = vsock, 9 = 9p).
DEVICE_MODULES=(26:virtiofs 19:vmw_vsock_virtio_transport)
# Also shipped in the root image; the kernel loads them on first use (e.g.
# `mount -t overlay` asks /sbin/modprobe for fs-overlay), as can the agent.
LAZY_MODULES=(overlay fuse virtiofs vsock)
# What containers reach for under runc (privileged ones, or with NET_ADMIN):
# the kernel loads each on first use (`brctl addbr` → bridge, `ip link add
# type vxlan`, an nft or iptables rule → its table and matches), running the
# image's /sbin/modprobe. docs/guest-image.md lists them.
NET_MODULES=(bridge br_netfilter veth vxlan 8021q tun macvlan ipvlan dummy ipip ip_gre
  nf_tables nft_chain_nat nft_ct nft_compat nft_masq nft_nat nft_reject_inet nft_fib_inet nft_limit
  nf_conntrack nf_nat nfnetlink_log ip_set xt_set ip_vs
  ip_tables iptable_filter iptable_nat iptable_mangle iptable_raw ip6_tables ip6table_filter ip6table_nat ip6table_mangle
  xt_conntrack xt_MASQUERADE xt_nat xt_addrtype xt_comment xt_mark xt_multiport xt_tcpudp xt_REDIRECT xt_statistic xt_physdev
  ipt_REJECT ip6t_REJECT sch_htb sch_netem cls_u32 act_mirred)
# (generic kernel: the cloud one is not checked for all of them)
[ "$KERNEL_FLAVOR" = generic ] && LAZY_MODULES+=("${NET_MODULES[@]}")
# virtio-9p (the shared dir of VM templates and their clones: it lives inside
# QEMU and migrates, unlike vhost-user-fs); the cloud kernel has no 9p.
if [ "$KERNEL_FLAVOR" = generic ]; then
  # 9p too: a clone mounts the share at once, without a modprobe under emulation.
  DEVICE_MODULES+=(9:9pnet_virtio+9p)
  LAZY_MODULES+=(9p)
fi

# Kernel parameters the image expects (measured: docs/guest-image.md). The
# launcher adds tsc_early_khz (host-dependent, microvm only).
#   cryptomgr.notests   the crypto self-tests cost about 0.8 s of every boot under TCG
#   tsc=reliable        no clocksource watchdog: a loaded TCG host must not get
#                       the TSC (and with it the vDSO clock Node uses) demoted
#   no_timer_check      skips the IO-APIC timer check (q35)
#   rcupdate.rcu_expedited=1  faster synchronize_rcu (mounts, namespaces, modules)
CMDLINE_BASE="console=ttyS0 quiet panic=-1 cryptomgr.notests tsc=reliable no_timer_check rcupdate.rcu_expedited=1"

log() { printf '\033[1m[build-guest]\033[0m %s\n' "$*" >&2; }
die() { printf '[build-guest] error: %s\n' "$*" >&2; exit 1; }

case $ROOTFS_FS in erofs|erofs-lz4|ext4) ;; *) die "GUEST_ROOTFS_FS must be erofs, erofs-lz4 or ext4 (got $ROOTFS_FS)" ;; esac
case $INITRD_COMPRESS in lz4|gzip|none) ;; *) die "GUEST_INITRD_COMPRESS must be lz4, gzip or none (got $INITRD_COMPRESS)" ;; esac
case $WITH_RUNC in 0|1) ;; *) die "GUEST_RUNC must be 0 or 1 (got $WITH_RUNC)" ;; esac
[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported"

# --- host packages -----------------------------------------------------------

APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}

# Installs the Debian packages that are missing.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}: run as root, or install them"
  log "installing ${missing[*]}"
  # A fresh machine has no package lists, and old lists give 404s: update and retry.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

PKGS=(busybox-static tini crun socat kmod cpio lz4 xz-utils e2fsprogs erofs-utils libc-bin util-linux)
[ "$WITH_RUNC" = 1 ] && PKGS+=(runc)
ensure_packages "${PKGS[@]}"
command -v node >/dev/null || die "node is not on PATH (the guest runs the host's node binary)"

mkdir -p "$ROOT/build" "$CACHE"
# One build at a time: a concurrent run waits here, then finds the stamp.
exec 9>"$ROOT/build/.guest.lock"
flock 9

pkg_version() { dpkg-query -W -f='${Version}' "$1"; }

# --- which kernel ------------------------------------------------------------

# "<package> <version>" of the kernel image the metapackage depends on.
resolve_kernel_pkg() {
  local dep ver
  dep=$(apt-cache show --no-all-versions "$KERNEL_META" 2>/dev/null | sed -n 's/^Depends: *//p' | tr ',' '\n' |
    sed -n 's/^ *\(linux-image-[^ ]*\).*/\1/p' | head -n1) || true
  [ -n "$dep" ] || return 1
  ver=$(apt-cache policy "$dep" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || return 1
  echo "$dep $ver"
}

# apt-cache takes seconds here (Debian's container images switch its binary
# cache off), so its answer is kept until the package lists change.
apt_lists_sig() {
  stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages* /etc/apt/sources.list /etc/apt/sources.list.d/* \
    /etc/apt/preferences /etc/apt/preferences.d/* 2>/dev/null | sha256sum | cut -c1-16
}
resolve_kernel_cached() {
  local sig memo="$CACHE/kernel-package-$KERNEL_FLAVOR" kp msig mpkg mver
  sig=$(apt_lists_sig)
  if [ -f "$memo" ] && read -r msig mpkg mver <"$memo" && [ "$msig" = "$sig" ] && [ -n "${mver:-}" ]; then
    echo "$mpkg $mver"
    return 0
  fi
  kp=$(resolve_kernel_pkg) || return 1
  echo "$sig $kp" >"$memo"
  echo "$kp"
}

if [ -n "${GUEST_KERNEL_DEB:-}" ]; then
  [ -f "$GUEST_KERNEL_DEB" ] || die "GUEST_KERNEL_DEB=$GUEST_KERNEL_DEB does not exist"
  KPKG=$(dpkg-deb -f "$GUEST_KERNEL_DEB" Package)
  KPKG_VER=$(dpkg-deb -f "$GUEST_KERNEL_DEB" Version)
else
  if ! kp=$(resolve_kernel_cached); then
    [ "$(id -u)" = 0 ] || die "apt knows no $KERNEL_META: run apt-get update as root"
    apt_update
    kp=$(resolve_kernel_cached) || die "apt has no $KERNEL_META (is bookworm's main component in the sources?)"
  fi
  read -r KPKG KPKG_VER <<<"$kp"
fi

# --- the input hash ----------------------------------------------------------

NODE_BIN=$(readlink -f "$(command -v node)")
BUSYBOX_BIN=/bin/busybox
CRUN_BIN=$(readlink -f "$(command -v crun)")
TINI_BIN=$(readlink -f /usr/bin/tini)
SOCAT_BIN=$(readlink -f "$(command -v socat)") # the agent's vsock transport runs socat
RUNC_BIN=
[ "$WITH_RUNC" = 1 ] && RUNC_BIN=$(readlink -f "$(command -v runc)")
[ -x "$CRUN_BIN" ] && [ -x "$TINI_BIN" ] && [ -x "$SOCAT_BIN" ] && [ -x "$BUSYBOX_BIN" ] || die "crun, tini, socat or busybox is missing"
ldd "$BUSYBOX_BIN" >/dev/null 2>&1 && die "$BUSYBOX_BIN is not static (install busybox-static)"

# Shared libraries (as ldd resolves them) of dynamic executables.
shared_libs() {
  local b
  for b in "$@"; do
    ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true
  done | sort -u
}
GUEST_BINS=("$NODE_BIN" "$CRUN_BIN" "$TINI_BIN" "$SOCAT_BIN")
[ -n "$RUNC_BIN" ] && GUEST_BINS+=("$RUNC_BIN")
mapfile -t LIBS < <(shared_libs "${GUEST_BINS[@]}")
[ ${#LIBS[@]} -gt 0 ] || die "ldd found no libraries for ${GUEST_BINS[*]}"

# The agent bundle: every regular file next to agent.mjs (source maps, data).
AGENT_FILES=()
if [ -f "$AGENT_DIR/agent.mjs" ]; then
  for f in "$AGENT_DIR"/*; do [ -f "$f" ] && AGENT_FILES+=("$f"); done
fi

# sha256 of files, remembered per (device, inode, size, mtime, path) so that an
# unchanged 100 MB node binary is not read again on every run.
file_sha256() {
  local memo="$CACHE/sha256-memo" f key sum
  local -A known=()
  if [ -f "$memo" ]; then
    while read -r key sum; do known[$key]=$sum; done <"$memo"
  fi
  for f in "$@"; do
    key=$(stat -L -c '%d:%i:%s:%.9Y' "$f")":$f"
    sum=${known[$key]:-}
    if [ -z "$sum" ]; then
      sum=$(sha256sum <"$f" | cut -d' ' -f1)
      known[$key]=$sum
    fi
    echo "$sum  $f"
  done
  for key in "${!known[@]}"; do echo "$key ${known[$key]}"; done >"$memo.tmp.$$"
  mv "$memo.tmp.$$" "$memo"
}

compute_hash() {
  {
    echo "script $(sha256sum <"$SELF" | cut -d' ' -f1)"
    echo "options rootfs=$ROOTFS_FS initrd=$INITRD_COMPRESS runc=$WITH_RUNC"
    echo "kernel $KPKG $KPKG_VER"
    local p
    for p in busybox-static tini crun socat kmod erofs-utils e2fsprogs; do echo "deb $p $(pkg_version "$p")"; done
    [ "$WITH_RUNC" = 1 ] && echo "deb runc $(pkg_version runc)"
    echo "node $(node --version)"
    # Contents, not dates: the same bytes make the same image.
    file_sha256 "$NODE_BIN" "$CRUN_BIN" "$TINI_BIN" "$SOCAT_BIN" "$BUSYBOX_BIN" ${RUNC_BIN:+"$RUNC_BIN"} "${LIBS[@]}"
    if [ ${#AGENT_FILES[@]} -gt 0 ]; then
      (cd "$AGENT_DIR" && sha256sum -- "${AGENT_FILES[@]##*/}")
    else
      echo "agent placeholder"
    fi
  } | sha256sum | cut -d' ' -f1
}
HASH=$(compute_hash)

OUTPUTS=(vmlinux bzImage initrd.img rootfs.img bare-initrd.img cmdline manifest.json)
up_to_date() {
  [ "$FORCE" = 1 ] && return 1
  [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$HASH" ] || return 1
  local f
  for f in "${OUTPUTS[@]}"; do [ -s "$OUT/$f" ] || return 1; done
}
if up_to_date; then
  log "up to date ($OUT, ${HASH:0:12})"
  exit 0
fi

AGENT_KIND=placeholder
[ ${#AGENT_FILES[@]} -gt 0 ] && AGENT_KIND=bundle
log "building $OUT (kernel $KPKG $KPKG_VER, root $ROOTFS_FS, initrd $INITRD_COMPRESS, agent $AGENT_KIND)"
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d "$(dirname "$OUT")/.guest-work.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
STAGE="$WORK/out"
mkdir -p "$STAGE"

# --- the kernel .deb -----------------------------------------------------------

if [ -n "${GUEST_KERNEL_DEB:-}" ]; then
  KDEB=$GUEST_KERNEL_DEB
else
  # apt names the file <package>_<version, ':' as %3a>_amd64.deb.
  KDEB_NAME="${KPKG}_${KPKG_VER//:/%3a}_amd64.deb"
  KDEB="$CACHE/$KDEB_NAME"
  if [ ! -f "$KDEB" ] && [ -f "/var/cache/apt/archives/$KDEB_NAME" ]; then
    cp "/var/cache/apt/archives/$KDEB_NAME" "$KDEB.part"
    mv "$KDEB.part" "$KDEB"
  fi
  if [ ! -f "$KDEB" ]; then
    log "apt-get download $KPKG=$KPKG_VER"
    dl="$WORK/download"
    mkdir -p "$dl"
    # As root into a directory the _apt user cannot write: no sandbox user.
    if ! (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG=$KPKG_VER" >/dev/null); then
      [ "$(id -u)" = 0 ] || die "apt-get download $KPKG=$KPKG_VER failed"
      apt_update
      (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG=$KPKG_VER" >/dev/null)
    fi
    files=("$dl"/*.deb)
    [ ${#files[@]} -eq 1 ] || die "apt-get download left ${#files[@]} files"
    mv "${files[0]}" "$KDEB"
  fi
  # Keep only the kernel in use in the cache.
  for f in "$CACHE"/linux-image-*.deb; do [ "$f" = "$KDEB" ] || rm -f "$f"; done
fi
[ "$(dpkg-deb -f "$KDEB" Package)" = "$KPKG" ] || die "$KDEB is not $KPKG"

KX="$WORK/kernel"
dpkg-deb -x "$KDEB" "$KX"
kdirs=("$KX"/lib/modules/*)
[ ${#kdirs[@]} -eq 1 ] || die "expected one module tree in $KDEB, found ${#kdirs[@]}"
KVER=${kdirs[0]##*/}
VMLINUZ="$KX/boot/vmlinuz-$KVER"
[ -f "$VMLINUZ" ] || die "no boot/vmlinuz-$KVER in $KDEB"
cp "$VMLINUZ" "$STAGE/bzImage"

# --- vmlinux -------------------------------------------------------------------

is_elf() { [ -s "$1" ] && [ "$(head -c4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; }

# The approach of the kernel's scripts/extract-vmlinux: find a compressor's
# magic in the bzImage, decompress from there (the data after the payload
# makes the decompressor complain, so its status is ignored) and keep the
# first result that is an ELF file.
extract_vmlinux() {
  local img=$1 out=$2 fmt magic cmd off n
  local -a formats=(
    '\x02\x21\x4c\x18|lz4 -dc'        # LZ4 legacy frame (Debian's bookworm kernels)
    '\xfd\x37\x7a\x58\x5a\x00|xz -dc' # XZ
    '\x1f\x8b\x08|gzip -dc'           # gzip
    '\x28\xb5\x2f\xfd|zstd -dcq'      # zstd
  )
  for fmt in "${formats[@]}"; do
    magic=${fmt%%|*}
    cmd=${fmt#*|}
    command -v "${cmd%% *}" >/dev/null || continue
    n=0
    for off in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1); do
      tail -c +$((off + 1)) "$img" | $cmd >"$out" 2>/dev/null || true
      is_elf "$out" && return 0
      n=$((n + 1))
      [ $n -lt 8 ] || break
    done
  done
  rm -f "$out"
  return 1
}
extract_vmlinux "$VMLINUZ" "$STAGE/vmlinux" || die "could not extract vmlinux from $VMLINUZ"

# --- kernel modules ------------------------------------------------------------

depmod -b "$KX" "$KVER"
MODDEP="$KX/lib/modules/$KVER/modules.dep"

# Relative paths (kernel/…/x.ko) of the named modules and all they depend on.
module_closure() {
  local m line
  for m in "$@"; do
    line=$(grep -E "(^|/)${m//_/[_-]}\.ko(\.[a-z]+)?:" "$MODDEP" | head -n1) || true
    [ -n "$line" ] || die "kernel $KVER has no module $m"
    printf '%s\n' "${line%%:*}"
    # shellcheck disable=SC2086
    printf '%s\n' ${line#*:}
  done | sed '/^$/d' | LC_ALL=C sort -u
}

# Copies modules (relative paths) into DIR/lib/modules/KVER and runs depmod there.
install_modules() {
  local dir=$1 m kdir
  shift
  kdir="$dir/lib/modules/$KVER"
  mkdir -p "$kdir"
  for m in "$@"; do
    mkdir -p "$kdir/$(dirname "$m")"
    cp "$KX/lib/modules/$KVER/$m" "$kdir/$m"
  done
  cp "$KX/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$kdir/"
  depmod -b "$dir" "$KVER"
}

module_names() { local m; for m in "$@"; do m=${m##*/}; echo "${m%%.ko*}"; done | LC_ALL=C sort -u | tr '\n' ' '; }

case $ROOTFS_FS in
  erofs|erofs-lz4) ROOT_MOUNT_TYPE=erofs; ROOT_FS_MODULES=(erofs) ;;
  ext4) ROOT_MOUNT_TYPE=ext4; ROOT_FS_MODULES=() ;; # built into the cloud kernel
esac
# The generic kernel's erofs needs libcrc32c, whose crc32c algorithm is a module
# (a soft dependency that modules.dep does not list): load it first.
CRC_MODULES=()
[ "$KERNEL_FLAVOR" = generic ] && [ "$ROOT_MOUNT_TYPE" = erofs ] && CRC_MODULES=(crc32c_generic)
STAGE1_MODULES=(virtio_blk ${CRC_MODULES[@]+"${CRC_MODULES[@]}"} ${ROOT_FS_MODULES[@]+"${ROOT_FS_MODULES[@]}"})
# (Through files, not <(…), so that a missing module stops the build.)
module_closure "${BUS_MODULES[@]}" "${STAGE1_MODULES[@]}" >"$WORK/stage1-modules"
mapfile -t DEVICE_MODULE_NAMES < <(printf '%s\n' "${DEVICE_MODULES[@]#*:}" | tr '+' '\n')
module_closure "${BUS_MODULES[@]}" "${STAGE1_MODULES[@]}" "${BOOT_MODULES[@]}" \
  "${DEVICE_MODULE_NAMES[@]}" "${LAZY_MODULES[@]}" >"$WORK/root-modules"
mapfile -t STAGE1_FILES <"$WORK/stage1-modules"
mapfile -t ROOT_MODULE_FILES <"$WORK/root-modules"

# --- busybox and cpio ------------------------------------------------------------

# Static busybox in DIR/bin/busybox with a symlink per applet.
install_busybox() {
  local dir=$1 a
  mkdir -p "$dir/bin"
  cp "$BUSYBOX_BIN" "$dir/bin/busybox"
  for a in $("$BUSYBOX_BIN" --list); do
    [ "$a" = busybox ] || [ -e "$dir/bin/$a" ] || ln -s busybox "$dir/bin/$a"
  done
}

# cpio (newc, owned by root, reproducible) of DIR into FILE, compressed as asked.
make_cpio() {
  local dir=$1 out=$2
  find "$dir" -exec touch -h -d @0 {} +
  (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) >"$out.cpio"
  case $INITRD_COMPRESS in
    lz4) lz4 -l -9 -q -f "$out.cpio" "$out" && rm -f "$out.cpio" ;; # the kernel reads only the legacy format
    gzip) gzip -9 -n -c "$out.cpio" >"$out" && rm -f "$out.cpio" ;;
    none) mv "$out.cpio" "$out" ;;
  esac
}

# --- initrd.img: stage 1 ---------------------------------------------------------

IT="$WORK/initrd"
mkdir -p "$IT"/{dev,proc,sys,newroot}
install_busybox "$IT"
install_modules "$IT" "${STAGE1_FILES[@]}"
# busybox modprobe reads modules.dep (and modules.builtin): drop the rest.
rm -f "$IT/lib/modules/$KVER"/modules.{alias,alias.bin,dep.bin,symbols,symbols.bin,builtin.bin,builtin.alias.bin,devname,softdep,order,builtin.modinfo}

device_modules_case=
for dm in "${DEVICE_MODULES[@]}"; do
  device_modules_case+="      ${dm%%:*}) mods=\"\$mods ${dm#*:}\" ;;"$'\n'
  device_modules_case=${device_modules_case//+/ }
done

# The script is a quoted here-document; @NAME@ are filled in below.
cat >"$IT/init" <<'EOF'
#!/bin/sh
# Stage 1 of the guest, generated by scripts/build-guest.sh (kernel @KVER@).
# Loads the modules the root needs, mounts the read-only root image from
# virtio-blk, loads the device drivers from it, prepares /dev /proc /sys
# /sys/fs/cgroup /run /tmp there and switch_roots into the agent under tini,
# which reaps orphans. The agent's exit ends the VM: PID 1 exits, the kernel
# panics, panic=-1 reboots, and QEMU's -no-reboot makes QEMU exit.
#
# Kernel parameters read here: root= (default /dev/vda), rootfstype=,
# guest.agent=<path of the agent script in the root>, guest.debug (timings).
# Words after `--` on the kernel command line are this script's arguments;
# they are handed to the agent (e.g. `-- --serial-port agent.0 --debug`).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
fail() {
  echo "GUEST-INIT-ERROR: $*"
  poweroff -f
  exit 1
}
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || fail "mount devtmpfs"
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "mount proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "mount sysfs"

root=/dev/vda
rootfstype=@ROOTFSTYPE@
agent=@AGENT@
debug=
proc=/proc
read -r cmdline </proc/cmdline
for p in $cmdline; do
  case $p in
    root=*) root=${p#root=} ;;
    rootfstype=*) rootfstype=${p#rootfstype=} ;;
    guest.agent=*) agent=${p#guest.agent=} ;;
    guest.debug) debug=1 ;;
  esac
done
stamp() {
  [ -z "$debug" ] && return 0
  read -r up _ <$proc/uptime
  echo "guest-init: $up $*"
}
stamp start

# q35 has a PCI bus; microvm has only virtio-mmio devices (described by ACPI).
bus=virtio_mmio
for d in /sys/bus/pci/devices/*; do
  [ -e "$d" ] && bus=virtio_pci && break
done
modprobe -a $bus @STAGE1_MODULES@ || fail "modprobe $bus @STAGE1_MODULES@"
stamp "stage 1 modules"

i=0
while [ ! -b "$root" ]; do
  i=$((i + 1))
  [ $i -gt 500 ] && fail "no root device $root"
  sleep 0.01
done
mount -t "$rootfstype" -o ro "$root" /newroot || fail "mount $root ($rootfstype) on /newroot"
stamp "root mounted"

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
proc=/newroot/proc
mount --move /sys /newroot/sys
cd /newroot || fail "cd /newroot"

# Drivers: always the console (agent port) and net (q35 hot-plugs NICs);
# virtiofs and vsock only when such a device exists. Others load on demand
# (the kernel runs /sbin/modprobe, e.g. for `mount -t overlay`).
mods="@BOOT_MODULES@"
for d in sys/bus/virtio/devices/*; do
  [ -r "$d/device" ] || continue
  read -r id <"$d/device"
  case $((id)) in
@DEVICE_MODULES_CASE@  esac
done
chroot /newroot /sbin/modprobe -a $mods || fail "modprobe $mods"
stamp "modules: $mods"

mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 sys/fs/cgroup || fail "mount cgroup2"
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs run || fail "mount /run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs tmp || fail "mount /tmp"
mkdir -p dev/pts dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=0620,ptmxmode=0666 devpts dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 shm dev/shm
ln -sf /proc/self/fd dev/fd
ln -sf /proc/self/fd/0 dev/stdin
ln -sf /proc/self/fd/1 dev/stdout
ln -sf /proc/self/fd/2 dev/stderr
# No /dev/virtio-ports/<name> links: a port's name arrives from the host
# after virtio_console has loaded, so the agent looks the names up itself in
# /sys/class/virtio-ports/*/name (retrying until its port shows up).
ip link set lo up
stamp "switch_root"

export HOME=/root UV_THREADPOOL_SIZE=@UV_POOL@
exec switch_root /newroot /usr/bin/tini -- /usr/bin/node @NODE_FLAGS@ "$agent" "$@"
EOF
# sub FILE NAME VALUE: replaces every @NAME@ in FILE by VALUE, literally.
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2 would expand & in VALUE
sub() {
  local text
  text=$(cat "$1")
  printf '%s\n' "${text//"@$2@"/$3}" >"$1"
}
sub "$IT/init" KVER "$KVER"
sub "$IT/init" ROOTFSTYPE "$ROOT_MOUNT_TYPE"
sub "$IT/init" AGENT "$GUEST_AGENT"
sub "$IT/init" STAGE1_MODULES "${STAGE1_MODULES[*]}"
sub "$IT/init" BOOT_MODULES "${BOOT_MODULES[*]}"
sub "$IT/init" DEVICE_MODULES_CASE "$device_modules_case"
sub "$IT/init" UV_POOL "$UV_POOL"
sub "$IT/init" NODE_FLAGS "${NODE_FLAGS[*]}"
if grep -q '@[A-Z_0-9]*@' "$IT/init"; then die "unfilled placeholder in init"; fi
chmod 0755 "$IT/init"
make_cpio "$IT" "$STAGE/initrd.img"

# --- bare-initrd.img: the boot benchmark's floor -----------------------------------

BT="$WORK/bare"
mkdir -p "$BT"/{bin,dev,proc}
cp "$BUSYBOX_BIN" "$BT/bin/busybox"
cat >"$BT/init" <<'EOF'
#!/bin/busybox sh
# Boot benchmark: the kernel reached user space; say so and power off at once.
/bin/busybox echo BARE-INIT-REACHED
/bin/busybox poweroff -f
EOF
chmod 0755 "$BT/init"
make_cpio "$BT" "$STAGE/bare-initrd.img"

# --- rootfs.img: node, crun, tini, busybox, modules, the agent ---------------------

RT="$WORK/rootfs"
mkdir -p "$RT"/{usr/bin,usr/sbin,usr/lib,usr/lib64,dev,proc,sys,run,tmp,mnt,root,etc,var,agent}
ln -s usr/bin "$RT/bin"
ln -s usr/sbin "$RT/sbin"
ln -s usr/lib "$RT/lib"
ln -s usr/lib64 "$RT/lib64"
ln -s ../run "$RT/var/run"
ln -s ../tmp "$RT/var/tmp"
chmod 0700 "$RT/root"
chmod 1777 "$RT/tmp"

install_busybox "$RT/usr"
# The kernel's module loader helper is /sbin/modprobe.
ln -s ../bin/busybox "$RT/usr/sbin/modprobe"
cp "$NODE_BIN" "$RT/usr/bin/node"
cp "$CRUN_BIN" "$RT/usr/bin/crun"
cp "$TINI_BIN" "$RT/usr/bin/tini"
cp "$SOCAT_BIN" "$RT/usr/bin/socat"
[ -n "$RUNC_BIN" ] && cp "$RUNC_BIN" "$RT/usr/sbin/runc"
# Libraries at the paths ldd found them (/lib → usr/lib, /lib64 → usr/lib64).
for lib in "${LIBS[@]}"; do
  dest=${lib#/usr}
  mkdir -p "$RT/usr$(dirname "$dest")"
  cp -L "$lib" "$RT/usr$dest"
done
for b in "${GUEST_BINS[@]}"; do
  while read -r _ _ path _; do
    [ -n "$path" ] && [ "${path:0:1}" = / ] || continue
    [ -e "$RT/usr${path#/usr}" ] || die "${b##*/} needs $path, which was not copied"
  done < <(ldd "$b" | grep '=>')
done
install_modules "$RT/usr" "${ROOT_MODULE_FILES[@]}"

cat >"$RT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$RT/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
echo sandbox >"$RT/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$RT/etc/hosts"
ln -s ../proc/self/mounts "$RT/etc/mtab"
# The agent writes the pod's machine id there at CreateSandbox (the root is read-only).
ln -s ../run/machine-id "$RT/etc/machine-id"
cat >"$RT/etc/os-release" <<EOF
NAME="containerd-shim-kata-v2 guest"
ID=kata-ts-guest
VERSION_ID=${HASH:0:12}
EOF

if [ "$AGENT_KIND" = bundle ]; then
  cp "${AGENT_FILES[@]}" "$RT/agent/"
else
  cat >"$RT/agent/agent.mjs" <<'EOF'
// Placeholder agent, installed by scripts/build-guest.sh when build/agent/agent.mjs
// is absent: proves that the guest boots to a running node and shows what the
// real agent finds. With `agent.exit` on the kernel command line it exits
// (which ends the VM); otherwise it stays up like the real agent.
import { readFileSync, readdirSync } from 'node:fs';

const ports = [];
try {
  for (const p of readdirSync('/sys/class/virtio-ports')) {
    ports.push(`${p}:${readFileSync(`/sys/class/virtio-ports/${p}/name`, 'utf8').trim()}`);
  }
} catch { /* no virtio-serial device */ }
const uptime = readFileSync('/proc/uptime', 'utf8').split(' ')[0];
process.stdout.write(`AGENT-PLACEHOLDER-READY uptime=${uptime} node=${process.version} pid=${process.pid} ports=${ports.join(',') || '-'}\n`);
if (readFileSync('/proc/cmdline', 'utf8').split(/\s+/).includes('agent.exit')) process.exit(0);
setInterval(() => {}, 1 << 30);
EOF
fi

# Same inputs, same bytes: fixed times, owners and a UUID taken from the hash.
FS_UUID="${HASH:0:8}-${HASH:8:4}-${HASH:12:4}-${HASH:16:4}-${HASH:20:12}"
case $ROOTFS_FS in
  erofs)
    mkfs.erofs --quiet --all-root -T0 -U "$FS_UUID" "$STAGE/rootfs.img" "$RT" >/dev/null ;;
  erofs-lz4)
    mkfs.erofs --quiet --all-root -T0 -U "$FS_UUID" -zlz4hc "$STAGE/rootfs.img" "$RT" >/dev/null ;;
  ext4)
    kib=$(du -sk --apparent-size "$RT" | cut -f1)
    inodes=$(($(find "$RT" | wc -l) + 256))
    truncate -s "$((kib + kib / 10 + 8192))k" "$STAGE/rootfs.img"
    mkfs.ext4 -q -F -L guestroot -b 4096 -m 0 -N "$inodes" -O ^has_journal,^resize_inode \
      -E root_owner=0:0,lazy_itable_init=0 -U "$FS_UUID" -d "$RT" "$STAGE/rootfs.img" >/dev/null ;;
esac

# --- cmdline, manifest, stamp ------------------------------------------------------

echo "$CMDLINE_BASE root=/dev/vda rootfstype=$ROOT_MOUNT_TYPE" >"$STAGE/cmdline"

M_HASH=$HASH M_KPKG=$KPKG M_KPKG_VER=$KPKG_VER M_KVER=$KVER M_DIR=$STAGE \
M_INITRD_COMPRESS=$INITRD_COMPRESS M_ROOTFS_FS=$ROOTFS_FS M_CMDLINE=$(cat "$STAGE/cmdline") \
M_BUS="${BUS_MODULES[*]}" M_STAGE1="${STAGE1_MODULES[*]}" M_BOOT="${BOOT_MODULES[*]}" \
M_DEVICE="${DEVICE_MODULES[*]}" M_LAZY="${LAZY_MODULES[*]}" \
M_INITRD_FILES=$(module_names "${STAGE1_FILES[@]}") M_ROOT_FILES=$(module_names "${ROOT_MODULE_FILES[@]}") \
M_AGENT_KIND=$AGENT_KIND M_AGENT=$GUEST_AGENT M_NODE_FLAGS="${NODE_FLAGS[*]}" M_UV=$UV_POOL \
M_NODE=$(node --version) M_CRUN=$(pkg_version crun) M_TINI=$(pkg_version tini) M_SOCAT=$(pkg_version socat) \
M_BUSYBOX=$(pkg_version busybox-static) M_RUNC=$([ "$WITH_RUNC" = 1 ] && pkg_version runc || true) \
node --input-type=commonjs -e '
const fs = require("fs");
const e = process.env;
const words = (s) => s.trim().split(/\s+/).filter(Boolean);
const size = (f) => fs.statSync(`${e.M_DIR}/${f}`).size;
const manifest = {
  hash: e.M_HASH,
  kernel: { package: e.M_KPKG, packageVersion: e.M_KPKG_VER, release: e.M_KVER },
  files: {
    vmlinux: { size: size("vmlinux"), use: "-kernel on microvm (uncompressed ELF, PVH entry)" },
    bzImage: { size: size("bzImage"), use: "-kernel on q35" },
    "initrd.img": { size: size("initrd.img"), compression: e.M_INITRD_COMPRESS, use: "-initrd" },
    "rootfs.img": { size: size("rootfs.img"), fs: e.M_ROOTFS_FS, use: "virtio-blk, read-only, the first disk (/dev/vda)" },
    "bare-initrd.img": { size: size("bare-initrd.img"), use: "boot benchmark: its init powers off at once" },
  },
  cmdline: e.M_CMDLINE,
  cmdlineAddedByLauncher: ["tsc_early_khz=<host TSC kHz> (microvm)"],
  modules: {
    bus: words(e.M_BUS),
    stage1: words(e.M_STAGE1),
    boot: words(e.M_BOOT),
    ifDevicePresent: Object.fromEntries(words(e.M_DEVICE).map((s) => s.split(":")).map(([id, m]) => [m, Number(id)])),
    onDemand: words(e.M_LAZY),
    initrdFiles: words(e.M_INITRD_FILES),
    rootfsFiles: words(e.M_ROOT_FILES),
  },
  agent: {
    kind: e.M_AGENT_KIND,
    path: e.M_AGENT,
    argv: ["/usr/bin/tini", "--", "/usr/bin/node", ...words(e.M_NODE_FLAGS), e.M_AGENT, "<words after -- on the kernel command line>"],
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root", UV_THREADPOOL_SIZE: e.M_UV },
    virtioPorts: "no /dev/virtio-ports links (no udev): match /sys/class/virtio-ports/vportNpM/name, open /dev/vportNpM; names arrive asynchronously, so retry",
  },
  rootfs: { node: e.M_NODE, crun: e.M_CRUN, runc: e.M_RUNC || null, tini: e.M_TINI, socat: e.M_SOCAT, busybox: e.M_BUSYBOX },
};
fs.writeFileSync(`${e.M_DIR}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
'
echo "$HASH" >"$STAGE/.stamp"

# Swap the new directory in whole: a VM booting from the old files keeps them
# open and unaffected, and nobody sees a half-built directory.
[ -e "$OUT" ] && mv "$OUT" "$WORK/old"
mv "$STAGE" "$OUT"
log "done: $OUT ($(du -sh "$OUT" | cut -f1), kernel $KVER, ${HASH:0:12})"
