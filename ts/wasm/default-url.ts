/**
 * Where the .wasm builds are by default, on every platform: next to this code (in dist/, next to
 * the bundle). Each address is written as `new URL("./….wasm", import.meta.url)`, literally, so
 * that bundlers (Vite, webpack, Rollup with an asset plugin) emit the files as assets and
 * rewrite the address.
 *
 * @module
 */
export const defaultUrl = (kind: "simd" | "scalar" | "simd-shared"): URL =>
  kind === "simd"
    ? new URL("./batchnorm-simd.wasm", import.meta.url)
    : kind === "scalar"
      ? new URL("./batchnorm-scalar.wasm", import.meta.url)
      : new URL("./batchnorm-simd-shared.wasm", import.meta.url);
