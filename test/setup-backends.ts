/**
 * Loads the wasm builds from dist/ (built by `npm run build`, which `npm test` runs first) into
 * the source modules under test, and lists the back ends every conformance test runs against.
 *
 * Vitest's "threads" project (vitest.config.ts) runs the conformance suites again with
 * `WASM_BATCHNORM_TEST_THREADS` set: the `"simd"` back end is then the threaded one, with
 * that many threads, no threshold and tiny chunks, so that the suites' small tensors are cut
 * into many chunks and spread over the workers.
 */
import { fileURLToPath } from "node:url";
import { init } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import type { ThreadedBackend } from "../ts/threads/backend-threads.js";

/** A file in dist/, as a path (init() reads it; the same path twice is the same source). */
export const distPath = (name: string) =>
  fileURLToPath(new URL(`../dist/${name}`, import.meta.url));

/** Threads of the threaded run (1: the suites as they are). */
export const TEST_THREADS = Number(process.env.WASM_BATCHNORM_TEST_THREADS ?? 1);

/**
 * Floats per chunk in the threaded run: a tensor of more than 16 floats has several chunks,
 * as do [2, C] inputs with C > 16 (channels in groups).
 */
const TEST_CHUNK_FLOATS = 16;

/** Threaded, only the threaded back end: the others ran in the plain project already. */
export const BACKENDS: readonly ("simd" | "scalar" | "js")[] =
  TEST_THREADS > 1 ? ["simd"] : ["simd", "scalar", "js"];

/**
 * Loads both builds; resolves to what init() found (it must be the SIMD build on Node 20).
 * In the threaded run it also starts the threads (or rejects) and makes every pass chunked.
 */
export async function initFromDist() {
  const threads =
    TEST_THREADS > 1
      ? {
          simdShared: distPath("batchnorm-simd-shared.wasm"),
          threads: TEST_THREADS,
          requireThreads: true,
        }
      : {};
  const result = await init({
    simd: distPath("batchnorm-simd.wasm"),
    scalar: distPath("batchnorm-scalar.wasm"),
    ...threads,
  });
  if (TEST_THREADS > 1) {
    Object.assign(resolveBackend("simd") as ThreadedBackend, {
      minFloats: 0,
      chunkFloats: TEST_CHUNK_FLOATS,
    });
  }
  return result;
}
