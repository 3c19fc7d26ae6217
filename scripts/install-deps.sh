#!/usr/bin/env bash
# Installs livemig's build and test dependencies from Debian's archive.
# Idempotent: packages already present are skipped, apt-get runs only when
# something is missing.
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config g++ clang libclang-rt-14-dev
  # core libraries
  liblz4-dev libzstd-dev libxxhash-dev libtomlplusplus-dev nlohmann-json3-dev libcli11-dev
  libsodium-dev  # the handshake's MAC and key files
  libgnutls28-dev  # --tls (transport/tls_channel.cpp)
  # optional backends (meson features: io_uring, dpdk)
  liburing-dev dpdk-dev libdpdk-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  iproute2 iperf3 redis-server redis-tools python3
  # the QEMU peer baseline (tests/perf/bench_qemu_baseline.py) and the soft-dirty VM test (tests/vm/): QEMU, the
  # guest's initramfs (busybox, cpio), its filler program (gcc -static, libc6-dev)
  qemu-system-x86 busybox-static cpio libc6-dev
  # livemig report: its figures (matplotlib) and the test that renders the
  # page headless (chromium)
  python3-matplotlib chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# redis-server's package starts a system service; the project starts its own.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
