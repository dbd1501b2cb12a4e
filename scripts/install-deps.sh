#!/usr/bin/env bash
# Installs every Debian 12 package steadyeval needs to build, test and run its demo.
# Idempotent: packages already present are left alone; apt-get update runs only when a
# package is missing. Must run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libtorch-dev libopenblas0-pthread
  libabsl-dev librocksdb-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev
  nlohmann-json3-dev libsentencepiece-dev sentencepiece libicu-dev
  libssl-dev libre2-dev openssl
  libcurl4-openssl-dev libxml2-dev libyaml-cpp-dev
  libcairo2-dev fonts-dejavu-core
  libmecab-dev mecab-ipadic-utf8
  prometheus python3 python3-torch python3-numpy
  clang
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: missing packages (${missing[*]}) and not root; run as root" >&2
    exit 1
  fi
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
