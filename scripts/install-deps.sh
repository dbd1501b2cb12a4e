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
  prometheus python3 python3-torch python3-numpy python3-yaml
  systemd
  clang
  slurm-wlm munge  # the real Slurm test (tests/slurm_e2e_test.cc) runs a one-node cluster
  python3-kubernetes
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
# Debian's kubectl 1.20 (kubernetes-client) renders deploy/kubernetes in the tests. Where
# another package owns /usr/bin/kubectl (e.g. Google's `kubectl`), the two conflict: unpack
# Debian's into /opt/debian-kubernetes-client instead (deploy/CMakeLists.txt looks there).
install_kubernetes_client() {
  if dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed" ||
     [ -x /opt/debian-kubernetes-client/usr/bin/kubectl ]; then
    return 0
  fi
  local owner
  owner=$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)
  if [ -z "$owner" ]; then
    $SUDO apt-get install -y -q --no-install-recommends kubernetes-client
    return 0
  fi
  echo "install-deps: /usr/bin/kubectl belongs to package $owner; unpacking Debian's" \
       "kubernetes-client into /opt/debian-kubernetes-client" >&2
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download kubernetes-client)
  $SUDO mkdir -p /opt/debian-kubernetes-client
  $SUDO dpkg-deb -x "$tmp"/kubernetes-client_*.deb /opt/debian-kubernetes-client
  rm -rf "$tmp"
}

if [ ${#missing[@]} -eq 0 ]; then
  install_kubernetes_client
  echo "install-deps: all ${#PACKAGES[@]} packages present" >&2
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
  echo "install-deps: missing packages (${missing[*]}) and not root; run as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
install_kubernetes_client

