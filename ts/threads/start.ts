/**
 * Whether threads can run here, and starting the threaded back end: a shared memory, the
 * calling thread's instance of the shared-memory build, and a pool of workers.
 *
 * @module
 */
import { ThreadedBackend, type ThreadedOptions } from "./backend-threads.js";
import { Pool, type PoolOptions, type ThreadPlatform } from "./pool.js";
import { WORKER_SOURCE } from "./worker-source.js";

/** The most threads `init()` accepts. */
export const MAX_THREADS = 256;

/**
 * Why threads cannot run in this runtime, or undefined when they can: they need
 * `SharedArrayBuffer` (browsers give it only to cross-origin-isolated pages), shared
 * WebAssembly memory, a thread that may block in `Atomics.wait` (a browser's main thread may
 * not), and a way to start workers.
 */
export function threadsUnavailable(platform: ThreadPlatform | undefined): string | undefined {
  const g = globalThis as { crossOriginIsolated?: boolean; SharedArrayBuffer?: unknown };
  if (g.crossOriginIsolated === false) {
    return (
      "the page is not cross-origin isolated (serve it with the headers " +
      "Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp), " +
      "so it has no SharedArrayBuffer"
    );
  }
  if (typeof g.SharedArrayBuffer !== "function" || typeof Atomics !== "object") {
    return "this runtime has no SharedArrayBuffer (browsers give it only to cross-origin-isolated pages)";
  }
  try {
    new WebAssembly.Memory({
      initial: 1,
      maximum: 1,
      shared: true,
    } as WebAssembly.MemoryDescriptor);
  } catch {
    return "this runtime has no shared WebAssembly memory";
  }
  try {
    // "not-equal" where this thread may block; a TypeError on a browser's main thread.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
  } catch {
    return (
      "this thread may not block in Atomics.wait (a browser's main thread): " +
      "run wasm-batchnorm in a worker to use threads"
    );
  }
  if (platform === undefined) return "this runtime cannot start workers";
  return undefined;
}

/** Pages the shared memory starts with: at least the build's own (its 1 MiB stack and data). */
const INITIAL_PAGES = 32;
/** wasm32's 4 GiB, which the shared build declares as its maximum. */
const MAX_PAGES = 65536;

/**
 * Starts a threaded back end of `threads` threads (the calling thread and `threads − 1`
 * workers) on the compiled shared-memory build.
 */
export async function startThreads(
  platform: ThreadPlatform | undefined,
  module: WebAssembly.Module,
  threads: number,
  options: ThreadedOptions & PoolOptions = {},
): Promise<ThreadedBackend> {
  const memory = new WebAssembly.Memory({
    initial: INITIAL_PAGES,
    maximum: MAX_PAGES,
    shared: true,
  } as WebAssembly.MemoryDescriptor);
  const instance = await WebAssembly.instantiate(module, { env: { memory } });
  const exports = instance.exports as Record<string, unknown>;
  if (
    typeof exports.bn_work !== "function" ||
    !(exports.__stack_pointer instanceof WebAssembly.Global)
  ) {
    throw new TypeError(
      "wasm-batchnorm: the shared-memory build has no bn_work: not a threads build",
    );
  }
  // The calling thread keeps the build's own stack (below __heap_base); workers get theirs
  // from the heap.
  const backend = new ThreadedBackend(instance, memory, options);
  const work = exports.bn_work as (job: number, slot: number) => number;
  const source = WORKER_SOURCE;
  backend.attach(
    await Pool.start(platform, source, module, backend.heap, work, threads - 1, options),
  );
  return backend;
}
