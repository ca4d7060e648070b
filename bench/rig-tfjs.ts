/**
 * TensorFlow.js as contestants (its wasm and CPU back ends) on the channels-last shapes:
 * training forward is `tf.moments` + `tf.batchNorm`, fwd+bwd is `tf.grads` of that.
 *
 * @module
 */
import type { Tensor as TfTensor } from "@tensorflow/tfjs-core";
import type { Contestant } from "./contestant.js";
import { EPS } from "./plan.js";
import type { Inputs } from "./rig.js";
import type { Tf } from "./tfjs.js";
import type { Impl, OpId } from "./types.js";

/** `quick` leaves out TF.js's CPU back end where one of its runs takes a second or more. */
export function tfjsContestants(
  tf: Tf,
  input: Inputs,
  quick: boolean,
): { contestants: (op: OpId) => Contestant[]; dispose: () => void } {
  const { shape, x, dy, state, n } = input;
  const byBackend: ((op: OpId) => Contestant[])[] = [];
  const disposers: (() => void)[] = [];
  for (const name of ["wasm", "cpu"] as const) {
    if (quick && name === "cpu" && n > 2 ** 19) continue;
    const impl: Impl = name === "wasm" ? "tfjs-wasm" : "tfjs-cpu";
    const enter = () => tf.setBackend(name);
    // Tensors are made while their back end is selected, so they live in its memory.
    tf.setBackend(name);
    const X = tf.tensor(x, shape);
    const DY = tf.tensor(dy, shape);
    const gamma = tf.tensor1d(state.weight as Float32Array);
    const beta = tf.tensor1d(state.bias as Float32Array);
    const mean = tf.tensor1d(state.running_mean as Float32Array);
    const variance = tf.tensor1d(state.running_var as Float32Array);
    disposers.push(() => tf.dispose([X, DY, gamma, beta, mean, variance]));
    const axes = shape.slice(0, -1).map((_, i) => i);
    const trainFwd = (a: TfTensor, g: TfTensor, b: TfTensor): TfTensor => {
      const m = tf.moments(a, axes);
      return tf.batchNorm(a, m.mean, m.variance, b, g, EPS);
    };
    const inferFwd = () => tf.batchNorm(X, mean, variance, beta, gamma, EPS);
    const grads = tf.grads((a: TfTensor, g: TfTensor, b: TfTensor) => trainFwd(a, g, b));
    // Read outside tf.tidy: tidy walks the value it returns, element by element through a
    // typed array (seconds for a 25 MB one).
    const read = (make: () => TfTensor[]) => {
      const ts = tf.tidy(make);
      const values = ts.map((t) => t.dataSync() as Float32Array);
      tf.dispose(ts);
      return values;
    };
    const base = { impl, path: "" as const, enter };
    byBackend.push((op) => {
      switch (op) {
        case "train":
          return [
            {
              ...base,
              run: () => tf.tidy(() => void trainFwd(X, gamma, beta)),
              outputs: () => ({ y: read(() => [trainFwd(X, gamma, beta)])[0] }),
            },
          ];
        case "infer":
          return [
            {
              ...base,
              run: () => tf.tidy(() => void inferFwd()),
              outputs: () => ({ y: read(() => [inferFwd()])[0] }),
            },
          ];
        case "bwd":
          // tf.grads records a forward and runs its backward in one call: see fwd+bwd. The
          // backward alone is reported as fwd+bwd minus training fwd (marked derived).
          return [];
        case "fwdbwd":
          return [
            {
              ...base,
              run: () => tf.tidy(() => void grads([X, gamma, beta], DY)),
              outputs: () => {
                const [y, dx, dWeight, dBias] = read(() => [
                  trainFwd(X, gamma, beta),
                  ...grads([X, gamma, beta], DY),
                ]);
                return { y, dx, dWeight, dBias };
              },
            },
          ];
      }
    });
  }
  return {
    contestants: (op) => byBackend.flatMap((f) => f(op)),
    dispose: () => {
      for (const d of disposers) d();
    },
  };
}
