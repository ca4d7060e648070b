/**
 * Loading the wasm builds and choosing a back end.
 *
 * @module
 */
import type { Backend, BackendKind } from "./backend.js";
import { jsBackend } from "./backend-js.js";
import { WasmBackend } from "./wasm/backend-wasm.js";

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

/** Options of {@link init}. Both default to the `.wasm` files shipped next to the JS. */
export interface InitOptions {
  /** The SIMD build (`batchnorm-simd.wasm`); only loaded where the runtime has SIMD. */
  simd?: WasmSource;
  /** The scalar build (`batchnorm-scalar.wasm`). */
  scalar?: WasmSource;
}

/** What {@link init} found. */
export interface InitResult {
  /** The back end that `backend: "auto"` picks: SIMD, else scalar wasm, else JS. */
  readonly backend: BackendKind;
  /** Every back end that can be forced with the `backend` option. */
  readonly available: readonly BackendKind[];
  /** Why wasm (or its SIMD build) is not used, when it is not. */
  readonly reason?: string;
}

/** How one runtime (Node, browsers) finds and reads the .wasm files. */
export interface Platform {
  defaultUrl(kind: "simd" | "scalar"): URL;
  /** A URL from a string: a URL already, or a path (a file in Node, relative to the page in a browser). */
  toUrl(source: string): URL;
  fetch(url: URL): Promise<ArrayBuffer | Response>;
}

interface Loaded extends InitResult {
  readonly backends: Partial<Record<BackendKind, Backend>>;
}

let loaded: Loaded | undefined;
let pending: Promise<InitResult> | undefined;

/**
 * The smallest module that uses a v128 instruction (`i8x16.popcnt` of a splat): it validates
 * exactly where the runtime has WebAssembly SIMD.
 */
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15,
  253, 98, 11,
]);

/** Makes the `init` of one entry point (Node or browser). */
export function createInit(platform: Platform): (options?: InitOptions) => Promise<InitResult> {
  return (options = {}) => {
    // Idempotent once it succeeded; a failure is not cached, so a later call tries again.
    pending ??= load(platform, options).catch((error: unknown) => {
      pending = undefined;
      throw error;
    });
    return pending;
  };
}

async function load(platform: Platform, options: InitOptions): Promise<InitResult> {
  if (typeof WebAssembly !== "object" || WebAssembly === null) {
    return settle({}, "WebAssembly is not available in this runtime");
  }
  const simd = WebAssembly.validate(SIMD_PROBE);
  const compile = (kind: "simd" | "scalar") =>
    compileSource(platform, options[kind] ?? platform.defaultUrl(kind), kind);
  let modules: [WebAssembly.Module, WebAssembly.Module | undefined];
  try {
    modules = await Promise.all([compile("scalar"), simd ? compile("simd") : undefined]);
  } catch (error) {
    // A Content-Security-Policy without 'wasm-unsafe-eval' forbids compiling any wasm: that is
    // the runtime having no WebAssembly, not a broken install, so fall back to JS.
    if (isCompileRefused(error))
      return settle(
        {},
        "WebAssembly is blocked here (a Content-Security-Policy needs 'wasm-unsafe-eval' in " +
          `script-src to allow it): ${message(error)}`,
      );
    throw error;
  }
  const [scalarModule, simdModule] = modules;
  const backends: Loaded["backends"] = {
    scalar: new WasmBackend("scalar", await WebAssembly.instantiate(scalarModule, {})),
  };
  if (simdModule !== undefined) {
    backends.simd = new WasmBackend("simd", await WebAssembly.instantiate(simdModule, {}));
  }
  return settle(backends, simd ? undefined : "this runtime has no WebAssembly SIMD");
}

function settle(wasm: Loaded["backends"], reason: string | undefined): InitResult {
  const backends = { ...wasm, js: jsBackend };
  const available = (["simd", "scalar", "js"] as const).filter((k) => backends[k] !== undefined);
  const result = { backend: available[0] ?? "js", available, backends };
  loaded = reason === undefined ? result : { ...result, reason };
  const { backends: _, ...publicResult } = loaded;
  return publicResult;
}

async function compileSource(
  platform: Platform,
  source: WasmSource,
  kind: string,
): Promise<WebAssembly.Module> {
  if (source instanceof WebAssembly.Module) return source;
  let bytes: ArrayBuffer | ArrayBufferView | Response;
  let from = "the bytes given";
  if (typeof source === "string" || source instanceof URL) {
    const url = source instanceof URL ? source : platform.toUrl(source);
    from = url.href;
    bytes = await platform.fetch(url);
  } else if (isPromiseLike(source)) {
    bytes = await source;
  } else {
    bytes = source;
  }
  if (typeof Response !== "undefined" && bytes instanceof Response) {
    if (!bytes.ok) {
      throw new Error(
        `wasm-batchnorm: loading the ${kind} build from ${bytes.url || "a Response"} failed: ` +
          `HTTP ${bytes.status} ${bytes.statusText}`,
      );
    }
    from = bytes.url || from;
    bytes = await bytes.arrayBuffer();
  }
  checkMagic(bytes as ArrayBuffer | ArrayBufferView, kind, from);
  return WebAssembly.compile(bytes as BufferSource);
}

/**
 * A clear error for a file that is not WebAssembly at all: typically a dev server's HTML
 * fallback page, served because a bundler moved the JS away from its .wasm files.
 */
function checkMagic(bytes: ArrayBuffer | ArrayBufferView, kind: string, from: string): void {
  const head = ArrayBuffer.isView(bytes)
    ? new Uint8Array(bytes.buffer, bytes.byteOffset, Math.min(4, bytes.byteLength))
    : new Uint8Array(bytes, 0, Math.min(4, bytes.byteLength));
  if (
    head.length === 4 &&
    head[0] === 0 &&
    head[1] === 0x61 &&
    head[2] === 0x73 &&
    head[3] === 0x6d
  ) {
    return;
  }
  const start = String.fromCharCode(...head.subarray(0, 4)).replace(/[^\x20-\x7e]/g, "?");
  throw new Error(
    `wasm-batchnorm: the ${kind} build from ${from} is not a WebAssembly file ` +
      `(it starts with ${JSON.stringify(start)}). A dev server may have answered with a page: ` +
      `serve the .wasm files next to the package's JS (with Vite, add ` +
      `optimizeDeps: { exclude: ["wasm-batchnorm"] }), or pass their address to init().`,
  );
}

function isPromiseLike(x: unknown): x is PromiseLike<Response> {
  return typeof (x as { then?: unknown }).then === "function";
}

function isCompileRefused(error: unknown): boolean {
  return (
    error instanceof EvalError ||
    (error instanceof WebAssembly.CompileError && /refused|unsafe-eval|CSP/i.test(message(error)))
  );
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The back end for a module's `backend` option. Throws when `init()` has not run (except for
 * `"js"`, which needs nothing loaded) or when the requested build is unavailable.
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
