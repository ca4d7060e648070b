#!/usr/bin/env bash
# Installs what building and testing need, idempotently, and checks that it works: npm packages,
# a Rust toolchain that builds for wasm32 (Debian's, with its linker lld-14, unless rustup
# already has the target), wabt (to inspect the SIMD build) and, with --browser, Chromium for
# the browser tests; with --dataset, Fashion-MNIST for the demo.
# Usage: setup.sh [--browser] [--dataset]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

require_node

packages=()
for arg in "$@"; do
  case "$arg" in
    --browser) packages+=(chromium) ;;
    --dataset) packages+=(dataset-fashion-mnist) ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "wasm-batchnorm: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund >&2
fi

packages+=(wabt)
rust_for_wasm >/dev/null || packages+=("${DEBIAN_RUST_WASM[@]}")
ensure_debian_packages "${packages[@]}"
# Installed is not the same as working: build a probe, and say what is missing if it fails.
if ! rust_for_wasm >/dev/null; then
  explain_wasm_toolchain
  exit 1
fi
