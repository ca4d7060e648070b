#!/usr/bin/env bash
# Builds crates/batchnorm for wasm32 three times, into dist/batchnorm-simd.wasm (SIMD128),
# dist/batchnorm-scalar.wasm and dist/batchnorm-simd-shared.wasm (SIMD128 over an imported
# shared memory, for the threaded back end in ts/threads/: atomics, an exported
# __stack_pointer that each thread's instance points at a stack of its own, and __heap_base).
# Cargo's own incremental build makes a second run cheap.
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
shared="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128"
for arg in --shared-memory --import-memory --max-memory=4294967296 \
  --export=__stack_pointer --export=__heap_base; do
  shared="$shared -C link-arg=$arg"
done
for build in simd scalar simd-shared; do
  flags=""
  [ "$build" = simd ] && flags="-C target-feature=+simd128"
  [ "$build" = simd-shared ] && flags="$shared"
  RUSTC="$rustc" RUSTFLAGS="$flags" "$cargo" build --quiet --release --locked \
    --target wasm32-unknown-unknown --target-dir "target/$build"
  cp "target/$build/wasm32-unknown-unknown/release/batchnorm.wasm" "dist/batchnorm-$build.wasm"
done
echo "wasm-batchnorm: built dist/batchnorm-simd.wasm, dist/batchnorm-scalar.wasm and dist/batchnorm-simd-shared.wasm" >&2
