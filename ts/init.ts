/**
 * Loading the wasm builds, and the one registry of back ends that modules and functional ops
 * resolve their `backend` option against. Its state is private to this file.
 *
 * @module
 */
import type { Backend, BackendKind } from "./backend.js";
import { jsBackend } from "./backend-js.js";
import { checkChoice, checkOptions } from "./errors.js";
import { BACKEND_CHOICES } from "./options.js";
import { resolveThreads, startThreadsFor } from "./threads/init-threads.js";
import type { ThreadPlatform } from "./threads/pool.js";
import { WasmBackend } from "./wasm/backend-wasm.js";
import { compileSource, isCompileRefused, message, SIMD_PROBE } from "./wasm/compile.js";

/**
 * Where a wasm build comes from: a URL (or a string holding one; in Node also a file path), the
 * bytes, a `Response` (or a promise of one), or an already compiled `WebAssembly.Module`.
 */
export type WasmSource =
  | string
  | URL
  | ArrayBuffer
  | ArrayBufferView
  | Response
  | PromiseLike<Response>
  | WebAssembly.Module;

/** Options of {@link init}. The sources default to the `.wasm` files shipped next to the JS. */
export interface InitOptions {
  /** The SIMD build (`batchnorm-simd.wasm`); only loaded where the runtime has SIMD. */
  simd?: WasmSource;
  /** The scalar build (`batchnorm-scalar.wasm`). */
  scalar?: WasmSource;
  /**
   * Threads that run the kernels: a whole number, or `"auto"` for the available cores; 1 (the
   * default) runs them on the calling thread. More than one starts a pool of workers over a
   * shared memory (the `"simd"` back end becomes threaded); where that cannot run (no
   * `SharedArrayBuffer`, a page that is not cross-origin isolated, a browser's main thread)
   * `init()` runs single-threaded and `threadsReason` says why.
   */
  threads?: number | "auto";
  /** With `threads` above 1: reject instead of falling back to one thread. */
  requireThreads?: boolean;
  /** The shared-memory SIMD build (`batchnorm-simd-shared.wasm`), loaded when threads are used. */
  simdShared?: WasmSource;
}

/** What {@link init} found. */
export interface InitResult {
  /** The back end that `backend: "auto"` picks: SIMD, else scalar wasm, else JS. */
  readonly backend: BackendKind;
  /** Every back end that can be forced with the `backend` option. */
  readonly available: readonly BackendKind[];
  /** Why wasm (or its SIMD build) is not used, when it is not. */
  readonly reason?: string;
  /**
   * Threads that run the `"simd"` back end's passes (1: the calling thread alone); present
   * when the `threads` option was given.
   */
  readonly threads?: number;
  /** Why fewer threads run than were asked for, when that is so. */
  readonly threadsReason?: string;
}

/** How one runtime (Node, browsers) finds and reads the .wasm files. */
export interface Platform {
  defaultUrl(kind: "simd" | "scalar" | "simd-shared"): URL;
  /** A URL from a string: a URL already, or a path (a file in Node, relative to the page in a browser). */
  toUrl(source: string): URL;
  fetch(url: URL): Promise<ArrayBuffer | Response>;
  /** How this runtime starts workers, where it can. */
  threads?: ThreadPlatform;
}

type Backends = Partial<Record<BackendKind, Backend>>;

let loaded: (InitResult & { readonly backends: Backends }) | undefined;
/** The call that loads (or loaded) the builds, and the sources it was given. */
let pending: { promise: Promise<InitResult>; options: InitOptions } | undefined;

/** Makes the `init` of one entry point (Node or browser). */
export function createInit(platform: Platform): (options?: InitOptions) => Promise<InitResult> {
  return (options) => {
    let given: InitOptions;
    try {
      given = checkOptions(options, "init") as InitOptions;
      resolveThreads(given, platform.threads);
    } catch (error) {
      return Promise.reject(error);
    }
    if (pending !== undefined) {
      if (!sameSources(pending.options, given)) {
        return Promise.reject(
          new Error(
            "init: already called with other sources for the wasm builds or another threads " +
              "option; the builds it loaded are the ones in use (call init() once, or with the " +
              "same options)",
          ),
        );
      }
      return pending.promise;
    }
    // Idempotent once it succeeded; a failure is not kept, so a later call tries again.
    const promise = load(platform, given).catch((error: unknown) => {
      pending = undefined;
      throw error;
    });
    pending = { promise, options: { ...given } };
    return promise;
  };
}

/**
 * Whether a later call's sources agree with the first call's: a source it does not give means
 * "whatever is loaded" (so library code may call `init()` to make sure); one it gives must be
 * the same (the same object, or the same URL or path).
 */
function sameSources(first: InitOptions, later: InitOptions): boolean {
  const same = (x: WasmSource | undefined, y: WasmSource | undefined) =>
    y === undefined ||
    x === y ||
    ((typeof x === "string" || x instanceof URL) && String(x) === String(y));
  return (
    same(first.simd, later.simd) &&
    same(first.scalar, later.scalar) &&
    same(first.simdShared, later.simdShared) &&
    (later.threads === undefined || later.threads === first.threads) &&
    (later.requireThreads === undefined || later.requireThreads === first.requireThreads)
  );
}

async function load(platform: Platform, options: InitOptions): Promise<InitResult> {
  const result = await loadBuilds(platform, options);
  if (options.threads === undefined) return result;
  // More than one thread: the threaded back end takes the SIMD build's place in the registry.
  const threads = await startThreadsFor(platform, options, result.backend === "simd");
  const found = {
    ...result,
    threads: threads.threads,
    ...(threads.reason === undefined ? {} : { threadsReason: threads.reason }),
  };
  if (loaded !== undefined) {
    const simd = threads.backend === undefined ? {} : { simd: threads.backend };
    loaded = { ...loaded, ...found, backends: { ...loaded.backends, ...simd } };
  }
  return found;
}

async function loadBuilds(platform: Platform, options: InitOptions): Promise<InitResult> {
  if (typeof WebAssembly !== "object" || WebAssembly === null) {
    return settle({}, "WebAssembly is not available in this runtime");
  }
  const simd = WebAssembly.validate(SIMD_PROBE);
  const instantiate = async (kind: "simd" | "scalar") => {
    const module = await compileSource(platform, options[kind] ?? platform.defaultUrl(kind), kind);
    return new WasmBackend(kind, await WebAssembly.instantiate(module, {}));
  };
  const [scalar, simdBuild] = await Promise.allSettled([
    instantiate("scalar"),
    simd ? instantiate("simd") : Promise.reject(new Error("no SIMD")),
  ]);
  if (scalar.status === "rejected") {
    // A Content-Security-Policy without 'wasm-unsafe-eval' forbids compiling any wasm: that is
    // the runtime having no WebAssembly, not a broken install, so fall back to JS.
    if (isCompileRefused(scalar.reason))
      return settle(
        {},
        "WebAssembly is blocked here (a Content-Security-Policy needs 'wasm-unsafe-eval' in " +
          `script-src to allow it): ${message(scalar.reason)}`,
      );
    throw scalar.reason;
  }
  if (!simd) return settle({ scalar: scalar.value }, "this runtime has no WebAssembly SIMD");
  if (simdBuild.status === "rejected") {
    return settle(
      { scalar: scalar.value },
      `the SIMD build failed to load, so the scalar build is used: ${message(simdBuild.reason)}`,
    );
  }
  return settle({ simd: simdBuild.value, scalar: scalar.value }, undefined);
}

function settle(wasm: Backends, reason: string | undefined): InitResult {
  const backends: Backends = { ...wasm, js: jsBackend };
  const available = (["simd", "scalar", "js"] as const).filter((k) => backends[k] !== undefined);
  const result = { backend: available[0] ?? "js", available };
  loaded = { ...result, ...(reason === undefined ? {} : { reason }), backends };
  return reason === undefined ? result : { ...result, reason };
}

/**
 * The back end for a `backend` option. Throws when `init()` has not run (except for `"js"`,
 * which needs nothing loaded) or when the requested build is unavailable.
 */
export function resolveBackend(requested: "auto" | BackendKind): Backend {
  if (requested === "js") return jsBackend;
  if (loaded === undefined) {
    throw new Error(
      `wasm-batchnorm: call \`await init()\` before creating a BatchNorm with backend "${requested}"`,
    );
  }
  const backend = loaded.backends[requested === "auto" ? loaded.backend : requested];
  if (backend === undefined) {
    throw new Error(
      `wasm-batchnorm: backend "${requested}" is not available here (${loaded.reason ?? "not loaded"}); ` +
        `available: ${loaded.available.join(", ")}`,
    );
  }
  return backend;
}

/**
 * Bytes of linear memory that a wasm back end's instance has now (`memory.buffer.byteLength`;
 * wasm memory grows and never shrinks); 0 for the JS back end, which has none. All modules and
 * tensors of one back end share its instance. For monitoring and leak tests.
 *
 * @throws Error when the back end is not loaded (call `await init()` first).
 */
export function memoryBytes(backend: "auto" | BackendKind = "auto"): number {
  return resolveBackend(
    checkChoice(backend, BACKEND_CHOICES, "memoryBytes", "backend"),
  ).memoryBytes();
}
