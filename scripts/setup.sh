#!/usr/bin/env bash
# Installs what building and testing need, idempotently: npm packages, a Rust toolchain with the
# wasm32 target (Debian's, unless rustup already has the target), wabt (to inspect the SIMD
# build) and, with --browser, Chromium for the browser tests. Usage: setup.sh [--browser] [--dataset]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "wasm-batchnorm: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund >&2
fi

packages=(wabt)
rust_for_wasm >/dev/null || packages+=(rustc cargo libstd-rust-dev-wasm32)
for arg in "$@"; do
  case "$arg" in
    --browser) packages+=(chromium) ;;
    --dataset) packages+=(dataset-fashion-mnist) ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
ensure_debian_packages "${packages[@]}"
