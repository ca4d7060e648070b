/**
 * Runs an ONNX model with onnxruntime-web's CPU (wasm) execution provider, in Node.
 *
 * In Node, `import "onnxruntime-web"` resolves to `dist/ort.node.min.mjs`, which reads its
 * runtime (`dist/ort-wasm-simd-threaded.{mjs,wasm}`) from its own folder in node_modules: no
 * path setting and no download is needed. One thread keeps ORT from starting worker threads and
 * makes its float32 summation order, hence the results, the same on every machine.
 */
import * as ort from "onnxruntime-web";

ort.env.wasm.numThreads = 1;

export interface Feed {
  data: Float32Array;
  dims: readonly number[];
}

export interface RunOptions {
  /**
   * Graph optimizations; default `"disabled"`, so that each operator runs as written (ORT's
   * basic level would fuse Conv+BatchNormalization itself, and the tests would then compare
   * against ORT's fusion instead of its BatchNormalization kernel).
   */
  optimization?: "disabled" | "all";
}

/** Runs `model` once on `feeds`; resolves to every graph output, as float32 data and dims. */
export async function runOnnx(
  model: Uint8Array,
  feeds: Record<string, Feed>,
  options: RunOptions = {},
): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>> {
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: options.optimization ?? "disabled",
  });
  try {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [name, f] of Object.entries(feeds)) {
      inputs[name] = new ort.Tensor("float32", f.data, f.dims);
    }
    const results = await session.run(inputs);
    const out: Record<string, { data: Float32Array; dims: readonly number[] }> = {};
    for (const [name, t] of Object.entries(results)) {
      out[name] = { data: Float32Array.from(t.data as Float32Array), dims: t.dims };
    }
    return out;
  } finally {
    await session.release();
  }
}
