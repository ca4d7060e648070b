/**
 * Browsers: the .wasm files are fetched from next to this module. Written as
 * `new URL("./….wasm", import.meta.url)` so that bundlers (Vite, webpack, Rollup with an asset
 * plugin) emit them as assets and rewrite the address.
 *
 * @module
 */
import type { Platform } from "../init.js";
import { browserThreads } from "../threads/platform.browser.js";

export const browserPlatform: Platform = {
  defaultUrl: (kind) =>
    kind === "simd"
      ? new URL("./batchnorm-simd.wasm", import.meta.url)
      : kind === "scalar"
        ? new URL("./batchnorm-scalar.wasm", import.meta.url)
        : new URL("./batchnorm-simd-shared.wasm", import.meta.url),
  toUrl: (source) => new URL(source, globalThis.location?.href),
  fetch: (url) => fetch(url),
  ...(browserThreads === undefined ? {} : { threads: browserThreads }),
};
