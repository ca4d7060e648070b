/**
 * Loads the wasm builds from dist/ (built by `npm run build`, which `npm test` runs first) into
 * the source modules under test, and lists the back ends every conformance test runs against.
 */
import { fileURLToPath } from "node:url";
import { init } from "../ts/index.node.js";

/** A file in dist/, as a path (init() reads it; the same path twice is the same source). */
export const distPath = (name: string) =>
  fileURLToPath(new URL(`../dist/${name}`, import.meta.url));

export const BACKENDS = ["simd", "scalar", "js"] as const;

/** Loads both builds; resolves to what init() found (it must be the SIMD build on Node 20). */
export function initFromDist() {
  return init({ simd: distPath("batchnorm-simd.wasm"), scalar: distPath("batchnorm-scalar.wasm") });
}
