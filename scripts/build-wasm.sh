#!/usr/bin/env bash
# Builds crates/batchnorm for wasm32 twice, with and without SIMD128, into
# dist/batchnorm-simd.wasm and dist/batchnorm-scalar.wasm. Cargo's own incremental build makes
# a second run cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if ! toolchain=$(rust_for_wasm); then
  explain_wasm_toolchain
  echo "  ('npm run setup' installs it, as root on Debian)" >&2
  exit 1
fi
read -r cargo rustc <<<"$toolchain"
mkdir -p dist
for build in simd scalar; do
  flags=""
  [ "$build" = simd ] && flags="-C target-feature=+simd128"
  RUSTC="$rustc" RUSTFLAGS="$flags" "$cargo" build --quiet --release --locked \
    --target wasm32-unknown-unknown --target-dir "target/$build"
  cp "target/$build/wasm32-unknown-unknown/release/batchnorm.wasm" "dist/batchnorm-$build.wasm"
done
echo "wasm-batchnorm: built dist/batchnorm-simd.wasm and dist/batchnorm-scalar.wasm" >&2
