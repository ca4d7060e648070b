/**
 * The `threads` option of `init()`: checking it, deciding whether threads can run here, and
 * starting the threaded back end that replaces the single-threaded SIMD build in the registry.
 *
 * @module
 */
import type { InitOptions, Platform } from "../init.js";
import { compileSource, message } from "../wasm/compile.js";
import type { ThreadedBackend } from "./backend-threads.js";
import type { ThreadPlatform } from "./pool.js";
import { MAX_THREADS, startThreads, threadsUnavailable } from "./start.js";

/**
 * The thread count `options` ask for (1 when they do not), after checking the options' types:
 * `threads` is a whole number from 1 to {@link MAX_THREADS} or `"auto"` (the available cores).
 */
export function resolveThreads(options: InitOptions, platform: ThreadPlatform | undefined): number {
  const { threads, requireThreads } = options;
  if (requireThreads !== undefined && typeof requireThreads !== "boolean") {
    throw new TypeError(`init: requireThreads must be a boolean, got ${typeof requireThreads}`);
  }
  if (threads === undefined) return 1;
  if (threads === "auto") return Math.max(1, Math.min(MAX_THREADS, platform?.cores() ?? 1));
  if (typeof threads !== "number") {
    throw new TypeError(`init: threads must be a number or "auto", got ${typeof threads}`);
  }
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new RangeError(
      `init: threads must be a whole number from 1 to ${MAX_THREADS} or "auto", got ${threads}`,
    );
  }
  return threads;
}

export interface ThreadsOutcome {
  /** Threads that run the passes. */
  readonly threads: number;
  /** The threaded back end, when more than one thread runs. */
  readonly backend?: ThreadedBackend;
  /** Why fewer threads run than were asked for. */
  readonly reason?: string;
}

/**
 * Starts the threads `options` ask for, or says why it cannot: without the SIMD build
 * (`simdLoaded`), `SharedArrayBuffer`, shared memory or a thread that may block, it falls back
 * to one thread, or rejects with `requireThreads`.
 */
export async function startThreadsFor(
  platform: Platform,
  options: InitOptions,
  simdLoaded: boolean,
): Promise<ThreadsOutcome> {
  const wanted = resolveThreads(options, platform.threads);
  if (wanted <= 1) {
    return options.threads === "auto" && wanted === 1
      ? { threads: 1, reason: "only one core is available" }
      : { threads: 1 };
  }
  const fail = (reason: string): ThreadsOutcome => {
    if (options.requireThreads === true) {
      throw new Error(
        `init: ${wanted} threads were required, but threads cannot run here: ${reason}`,
      );
    }
    return { threads: 1, reason };
  };
  if (!simdLoaded) return fail("threads need the SIMD build, which is not in use here");
  const unavailable = threadsUnavailable(platform.threads);
  if (unavailable !== undefined) return fail(unavailable);
  let module: WebAssembly.Module;
  try {
    const source = options.simdShared ?? platform.defaultUrl("simd-shared");
    module = await compileSource(platform, source, "shared-memory SIMD");
  } catch (error) {
    return fail(`the shared-memory SIMD build failed to load: ${message(error)}`);
  }
  try {
    const backend = await startThreads(platform.threads, module, wanted);
    return { threads: backend.threads, backend };
  } catch (error) {
    return fail(`the thread pool did not start: ${message(error)}`);
  }
}
