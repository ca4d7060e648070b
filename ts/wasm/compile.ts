/**
 * Compiling a wasm build from whatever source the user gave, with clear errors for the usual
 * ways that goes wrong.
 *
 * @module
 */
import type { Platform, WasmSource } from "../init.js";

/**
 * The smallest module that uses a v128 instruction (`i8x16.popcnt` of a splat): it validates
 * exactly where the runtime has WebAssembly SIMD.
 */
export const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15,
  253, 98, 11,
]);

export async function compileSource(
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

export function isCompileRefused(error: unknown): boolean {
  return (
    error instanceof EvalError ||
    (error instanceof WebAssembly.CompileError && /refused|unsafe-eval|CSP/i.test(message(error)))
  );
}

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
