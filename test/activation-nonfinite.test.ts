/**
 * Non-finite values through the fused activations, on every back end, as PyTorch gives them;
 * leakyRelu with a slope of 0 stays leaky_relu (−∞·0 and NaN·0 are NaN), not relu.
 *
 * Eval mode through a fused activation where x is ±Infinity: every back end gives PyTorch's
 * y = act(z) (its limits: relu(−∞) = 0, relu6(+∞) = 6, sigmoid(−∞) = 0, silu(−∞) = NaN, …) and
 * parameter gradients, and NaN in dx at the infinite x and only there.
 *
 * In eval mode `z = (x − runningMean)·k + bias` with `k = weight/√(runningVar + eps)`, so
 * x = ±∞ gives z = ±∞ (∓∞ for a negative weight), where act′ is PyTorch's limit: relu′(+∞) = 1,
 * leakyRelu′(−∞) = slope, relu6′(±∞) = sigmoid′(±∞) = tanh′(±∞) = 0, silu′(±∞) = NaN (∞·0).
 * Then `dBias = Σ dy·act′(z)` is finite unless act′ is NaN, and `dWeight = Σ dy·act′(z)·x̂` is
 * ±∞ or NaN (0·∞) there, as the float64 reference below computes them. (The JS back end once
 * took relu′(+∞) as 0, its "z below the cap" test failing for relu's cap of +∞: dBias came out
 * finite and wrong.) dx is NaN at every infinite x on every back end: the gradient map adds the
 * batch statistics' term `0·(x − mean)` (README: NaN and Infinity), while PyTorch gives
 * `dy·act′(z)·k`.
 *
 * Paths: the relu and leakyRelu thresholds (positive weights, 48+ values a channel) and the
 * multiply (a negative weight), `g` written into dx (sigmoid, tanh, silu, and relu6 in the
 * cache), both layouts; in Vitest's "threads" project the threaded back end's chunks.
 *
 * Tolerance: 1e-5 of `Σ|g|·(1 + |x̂|)` over the finite x for the finite sums, the conformance
 * suite's (test/compare.ts) for a float32 sum of float32 products; ±∞ and NaN exactly.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { type Activation, activate, derivative } from "../ts/activation.js";
import { BatchNorm } from "../ts/index.node.js";
import { Rng } from "./random.js";
import { channelOf, type RefLayout } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";

const EPS = 1e-5;
const SLOPE = 0.2;
const TOL = 1e-5;
const ACTS: Activation[] = ["relu", "relu6", "leakyRelu", "sigmoid", "tanh", "silu"];

beforeAll(async () => {
  await initFromDist();
});

/** PyTorch's eval-mode y and parameter gradients' sums in float64, and the sums' error scale. */
function reference(
  kind: Activation,
  [x, dy, chan]: [Float32Array, Float32Array, Int32Array],
  [weight, bias, mean, variance]: [Float32Array, Float32Array, Float32Array, Float32Array],
) {
  const C = weight.length;
  const [dWeight, dBias, scale] = [new Float64Array(C), new Float64Array(C), new Float64Array(C)];
  const act = { kind, negativeSlope: SLOPE };
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const invstd = 1 / Math.sqrt((variance[c] as number) + EPS);
    const xhat = ((x[i] as number) - (mean[c] as number)) * invstd;
    const z = xhat * (weight[c] as number) + (bias[c] as number);
    y[i] = activate(act, z);
    const g = (dy[i] as number) * derivative(act, z);
    dBias[c] = (dBias[c] as number) + g;
    dWeight[c] = (dWeight[c] as number) + g * xhat;
    if (Number.isFinite(xhat)) scale[c] = (scale[c] as number) + Math.abs(g) * (1 + Math.abs(xhat));
  }
  return { y, dWeight, dBias, scale };
}

function expectSum(at: string, got: number, want: number, scale: number) {
  if (Number.isFinite(want)) {
    expect(Math.abs(got - want), `${at} = ${got}, want ${want}`).toBeLessThanOrEqual(TOL * scale);
  } else {
    expect(got, at).toBe(want); // ±∞ with its sign, or NaN (Object.is)
  }
}

const CASES: [RefLayout, number[]][] = [
  ["NCHW", [2, 3, 28]],
  ["NHWC", [60, 4]],
];

describe.each(BACKENDS)(
  "eval-mode backward through an activation at x = ±∞, %s back end",
  (backend) => {
    for (const [layout, shape] of CASES) {
      for (const negative of [false, true]) {
        const weights = negative ? "a negative weight" : "positive weights";
        it(`${layout} [${shape}], ${weights}: PyTorch's dWeight and dBias, NaN in dx at ±∞ only`, () => {
          const rng = new Rng(31);
          const chan = channelOf(shape, layout);
          const C = layout === "NCHW" ? (shape[1] as number) : (shape[shape.length - 1] as number);
          // +∞ at i ≡ 4 and −∞ at i ≡ 5 (mod 7): in every channel, in vector lanes and tails.
          const x = Float32Array.from({ length: chan.length }, (_, i) =>
            i % 7 === 4 ? Infinity : i % 7 === 5 ? -Infinity : rng.normal() * 2,
          );
          const dy = Float32Array.from({ length: chan.length }, () => rng.normal());
          const weight = Float32Array.from({ length: C }, (_, c) =>
            negative && c === 1 ? -1.3 : 0.5 + c * 0.7,
          );
          const bias = Float32Array.from(
            { length: C },
            (_, c) => [0.4, -0.3, 1.5, 0][c % 4] as number,
          );
          const mean = Float32Array.from({ length: C }, (_, c) => 0.2 * c - 0.1);
          const variance = Float32Array.from({ length: C }, (_, c) => 0.8 + 0.3 * c);
          for (const kind of ACTS) {
            const want = reference(kind, [x, dy, chan], [weight, bias, mean, variance]);
            const bn = new BatchNorm(C, {
              layout,
              backend,
              activation: kind,
              negativeSlope: SLOPE,
            });
            bn.weight?.set(weight);
            bn.bias?.set(bias);
            bn.runningMean?.set(mean);
            bn.runningVar?.set(variance);
            bn.eval();
            const y = bn.forward(x, [...shape]);
            const got = bn.backward(dy);
            bn.dispose();
            const at = `${backend} ${kind} ${layout} ${weights}`;
            for (let c = 0; c < C; c++) {
              const s = want.scale[c] as number;
              expectSum(`${at}: dBias[${c}]`, got.dBias?.[c] as number, want.dBias[c] as number, s);
              const dW = got.dWeight?.[c] as number;
              expectSum(`${at}: dWeight[${c}]`, dW, want.dWeight[c] as number, s);
            }
            for (let i = 0; i < x.length; i++) {
              if (!Number.isFinite(x[i])) {
                expect(y[i], `${at}: y[${i}] at x = ${x[i]}`).toBe(want.y[i]);
              }
              const nan = Number.isNaN(got.dx[i] as number);
              expect(nan, `${at}: dx[${i}] = ${got.dx[i]} at x = ${x[i]}`).toBe(
                !Number.isFinite(x[i]),
              );
            }
          }
        });
      }
    }

    it("leakyRelu with negativeSlope 0 is PyTorch's leaky_relu, not relu: −∞·0 and NaN·0 are NaN", () => {
      // leaky_relu(z) = z·slope and its gradient dy·slope where z ≤ 0, so with slope 0 an
      // x of −∞ gives NaN, and a NaN dy where z < 0 makes the channel's sums (and, in training,
      // its dx) NaN; relu gives 0 and drops that dy (PyTorch's threshold_backward).
      const x = Float32Array.from([-Infinity, 1, 2, -2, -1, 3]);
      const dy = Float32Array.from([1, 1, 1, 1, Number.NaN, 1]);
      for (const kind of ["leakyRelu", "relu"] as const) {
        const at = `${backend} ${kind}, slope 0`;
        const bn = new BatchNorm(1, { backend, activation: kind, negativeSlope: 0 }).eval();
        const y = bn.forward(x, [6, 1]);
        expect(y[0], `${at}: y at x = −∞`).toBe(kind === "relu" ? 0 : Number.NaN);
        bn.train();
        bn.forward(x.subarray(1), [5, 1]);
        const { dx, dBias } = bn.backward(dy.subarray(1));
        const nan = kind === "leakyRelu";
        expect(Number.isNaN(dBias?.[0] as number), `${at}: dBias = ${dBias?.[0]}`).toBe(nan);
        expect(Number.isNaN(dx[0] as number), `${at}: dx[0] = ${dx[0]}`).toBe(nan);
        bn.dispose();
      }
    });
  },
);
