/**
 * Run in a child process by test/threads-init.test.ts (`node --import tsx`), so that each run
 * gets a fresh registry and its own environment: `init()` with the options given in argv[2]
 * (JSON), after hiding what `hide` names, then (with `run`) a BatchNorm module's training
 * forward, backward and inference forward in both layouts. Prints one JSON line: init's result
 * or error, and the outputs' bits as base64.
 */
import { BatchNorm, init } from "../ts/index.node.js";
import { distPath } from "./setup-backends.js";

interface Args {
  threads?: number | "auto";
  requireThreads?: boolean;
  hide?: "SharedArrayBuffer" | "crossOriginIsolated" | "Atomics.wait";
  run?: boolean;
}

const args = JSON.parse(process.argv[2] ?? "{}") as Args;
const g = globalThis as Record<string, unknown>;
if (args.hide === "SharedArrayBuffer") delete g.SharedArrayBuffer;
if (args.hide === "crossOriginIsolated") g.crossOriginIsolated = false;
if (args.hide === "Atomics.wait") {
  // As on a browser's main thread.
  Atomics.wait = () => {
    throw new TypeError("Atomics.wait cannot be called in this context");
  };
}

const base64 = (a: Float32Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");

function data(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 4 + (i % 7);
  }
  return out;
}

try {
  const result = await init({
    simd: distPath("batchnorm-simd.wasm"),
    scalar: distPath("batchnorm-scalar.wasm"),
    simdShared: distPath("batchnorm-simd-shared.wasm"),
    ...(args.threads === undefined ? {} : { threads: args.threads }),
    ...(args.requireThreads === undefined ? {} : { requireThreads: args.requireThreads }),
  });
  const outputs: Record<string, string> = {};
  if (args.run === true) {
    // 32·32·32·32 = 2^20 floats: past MIN_THREADED_FLOATS (2^19) and three chunks (CHUNK_FLOATS).
    const [n, c, h, w] = [32, 32, 32, 32];
    const x = data(n * c * h * w, 7);
    const dy = data(n * c * h * w, 11);
    for (const layout of ["NCHW", "NHWC"] as const) {
      const shape = layout === "NCHW" ? [n, c, h, w] : [n, h, w, c];
      const bn = new BatchNorm(c, { layout });
      const y = bn.forward(x, shape);
      const { dx, dWeight, dBias } = bn.backward(dy);
      bn.eval();
      const yEval = bn.forward(x, shape);
      const stats = Float32Array.from([...(bn.runningMean ?? []), ...(bn.runningVar ?? [])]);
      Object.assign(outputs, {
        [`${layout} y`]: base64(y),
        [`${layout} dx`]: base64(dx),
        [`${layout} dWeight`]: base64(Float32Array.from(dWeight ?? [])),
        [`${layout} dBias`]: base64(Float32Array.from(dBias ?? [])),
        [`${layout} yEval`]: base64(yEval),
        [`${layout} running`]: base64(stats),
      });
      bn.dispose();
    }
  }
  console.log(JSON.stringify({ result, outputs }));
} catch (error) {
  console.log(JSON.stringify({ error: error instanceof Error ? error.message : String(error) }));
}
