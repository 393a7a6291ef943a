#!/usr/bin/env bash
# Installs the Debian bookworm packages Tandem needs, and only the missing ones:
# a no-op (no apt call at all) when everything is present. Called by both README
# commands, so a fresh machine needs nothing else.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format
  # data path
  liburing-dev libaio-dev libisal-dev
  # tests
  libgtest-dev libgmock-dev
  # management API (gRPC) and CLI
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # data-port HMAC (libcrypto), the controller's stores (SQLite, etcd for tests; openssl
  # makes the etcd TLS test certificates)
  libssl-dev libsqlite3-dev etcd-server openssl
  # the node's block device: FUSE file + loop, filesystems
  libfuse3-dev fuse3 e2fsprogs xfsprogs libblkid-dev
  # benchmarks and NBD clients used by tests
  fio libnbd-bin libnbd-dev qemu-utils nbdkit
  # tools used by the scripts
  procps util-linux psmisc python3 coreutils
  # scripts/cluster.sh --netns (ip netns, veth, bridge; nsenter is util-linux)
  iproute2
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
