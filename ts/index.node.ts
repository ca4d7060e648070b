/**
 * The Node entry point: the public API, with an {@link init} that reads the .wasm files from
 * disk next to this module.
 *
 * @module
 */
import { createInit, type InitOptions, type InitResult } from "./init.js";
import { nodePlatform } from "./wasm/load.node.js";

export * from "./index.js";

/**
 * Loads the wasm builds: the SIMD one where the runtime supports WebAssembly SIMD, and the
 * scalar one. Call (and await) it once before creating modules with `backend` `"auto"`,
 * `"simd"` or `"scalar"`; later calls return the same result. A failed call can be retried.
 * Where WebAssembly is unavailable it resolves with `backend: "js"` and a `reason`.
 *
 * @param options where to load each build from; defaults to the files shipped in the package.
 * @throws (rejects) when a .wasm file cannot be read or is not a build of this version.
 */
export const init: (options?: InitOptions) => Promise<InitResult> = createInit(nodePlatform);
