#!/usr/bin/env bash
# Installs s3rver (the S3-compatible server the s3/ tests run against) into
# testing/s3rver/node_modules from the committed package-lock.json. Idempotent: does
# nothing when node_modules matches the lockfile. Installs Debian's nodejs and npm only
# when `npm` is absent (Debian's npm conflicts with some other Node.js builds).
set -euo pipefail
cd "$(dirname "$0")/../testing/s3rver"

if ! command -v npm >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      echo "install-s3rver: npm is missing and this is not root: install nodejs and npm" >&2
      exit 1
    fi
  fi
  echo "install-s3rver: installing Debian's nodejs and npm" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi

# node_modules is current when it was installed from this very lockfile.
stamp=node_modules/.steadyeval-lockfile.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -x node_modules/.bin/s3rver ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "install-s3rver: s3rver $(node_modules/.bin/s3rver --version) present" >&2
  exit 0
fi
echo "install-s3rver: npm ci in testing/s3rver" >&2
npm ci --no-audit --no-fund
echo "$want" > "$stamp"
echo "install-s3rver: s3rver $(node_modules/.bin/s3rver --version) installed" >&2
