/**
 * Fused activations (`activation` option) on every back end, both layouts, the copy and the
 * zero-copy paths, the module and the functional ops: the forward against the float64 reference
 * of batch norm followed by the activation, the backward against the float64 chain rule
 * (`g = dy·act′(z)` fed to the reference's batch-norm backward), and that chain rule against
 * central finite differences of the float64 forward.
 *
 * ## Tolerances
 * - TOL = 1e-5 of the conformance suite's error scales (test/compare.ts), with z's scale for
 *   y: every activation's slope is at most 1.1 (silu′), so z's float32 error (the conformance
 *   suite's 1e-5 of that scale, worst observed ~1e-7) moves y by at most 1.1 times as much.
 *   The wasm builds' exp-based activations add their own error, measured in
 *   crates/batchnorm/src/activation.rs against float64 over dense sweeps: sigmoid 2.4 ulp,
 *   silu 2.3 ulp, tanh 2.5 ulp, the derivatives 1.1e-7·(1 + |z|) absolute; every y
 *   scale is at least 1 + |z|'s (we add 1 for the smooth activations, whose values are O(1)),
 *   so that is at most 2.5e-7 of the scale: 40× under TOL. The gradients' scales are the conformance suite's for an
 *   upstream gradient of |dy|·1.1 (|g| ≤ 1.1·|dy|), plus, for the smooth activations,
 *   |dy|·0.8·(z's error scale): g's error from z's error is |dy|·|act″|·δz with |act″| ≤ 0.77
 *   (tanh), and δz ≤ TOL·(z's scale); with large means (x = 10000 + N(0, 1)) that term is what
 *   the float32 mean's rounding costs (observed 1.55e-5 of the plain scale on every back end,
 *   the reference agreeing with none of them, and the back ends with each other). The worst
 *   ratios observed are printed by the last test.
 * - Kinks: relu, relu6 and leakyRelu have no derivative at 0 (and relu6 at 6), where a
 *   rounding of z decides which side's slope is used. The tests zero dy where the reference z
 *   lies within 1e-3 of a kink (so those elements carry no gradient on either side), and the
 *   finite-difference data is nudged until no z lies within 0.02 of a kink.
 * - FD_TOL = 1e-7 of the scales, as test/gradcheck.test.ts (h = 1e-4 in σ units, truncation
 *   ≈ h²/6·L‴, float64 rounding ≈ 1e-12).
 * - Negative controls: the chain rule without act′ (g = dy), and act′ taken at x̂ instead of
 *   z = weight·x̂ + bias, fail the same checks by orders of magnitude.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { type Act, type Activation, activate, derivative } from "../ts/activation.js";
import { BatchNorm, batchNorm, batchNormBackward } from "../ts/index.node.js";
import { assertClose, forwardScales, gradientScales } from "./compare.js";
import { Rng } from "./random.js";
import {
  backwardBatch,
  backwardConst,
  batchStats,
  channelOf,
  normalize,
  type RefLayout,
} from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";

const TOL = 1e-5;
const FD_TOL = 1e-7;
const H = 1e-4;
const EPS = 1e-5;
const SLOPE = 0.2;

const ACTS: Activation[] = ["relu", "relu6", "leakyRelu", "sigmoid", "tanh", "silu"];
const KINKED = new Set<Activation>(["relu", "relu6", "leakyRelu"]);
const kinks = (a: Activation): number[] => (a === "relu6" ? [0, 6] : KINKED.has(a) ? [0] : []);
const actOf = (kind: Activation): Act => ({ kind, negativeSlope: SLOPE });

/**
 * Shapes over every kernel path: runs (inner > 16, one > BLOCK), rows, super-rows, tails; the
 * last two have one channel (weight 2.5) of 512 values or more, where the wasm builds' relu and
 * leakyRelu backward test the sign of z against thresholds (the others have a negative weight).
 */
const SHAPES: { layout: RefLayout; shape: number[] }[] = [
  { layout: "NCHW", shape: [4, 3, 40] },
  { layout: "NCHW", shape: [3, 5, 3, 3] },
  { layout: "NCHW", shape: [2, 2, 5000] },
  { layout: "NCHW", shape: [7, 6] },
  { layout: "NHWC", shape: [37, 5] },
  { layout: "NHWC", shape: [6, 4, 4, 7] },
  { layout: "NHWC", shape: [3000, 3] },
  { layout: "NCHW", shape: [2, 1, 700] },
  { layout: "NHWC", shape: [900, 1] },
];

const worst: Record<string, number> = {};
const note = (key: string, ratio: number) => {
  worst[key] = Math.max(worst[key] ?? 0, ratio);
};

interface Case {
  x: Float32Array;
  dy: Float32Array;
  chan: Int32Array;
  C: number;
  weight: Float32Array;
  bias: Float32Array;
}

function makeCase(shape: number[], layout: RefLayout, seed: number, offset = 0): Case {
  const rng = new Rng(seed);
  const chan = channelOf(shape, layout);
  const C = layout === "NCHW" ? (shape[1] as number) : (shape[shape.length - 1] as number);
  const n = chan.length;
  // Spread so that z = w·x̂ + b covers both sides of 0 and of relu6's 6, and the saturating
  // tails of the smooth activations.
  const x = Float32Array.from({ length: n }, () => offset + rng.normal() * 1.5 + 0.3);
  const dy = Float32Array.from({ length: n }, () => rng.normal());
  const weight = Float32Array.from(
    { length: C },
    (_, c) => [2.5, -1.7, 4, 0.6, 3.1][c % 5] as number,
  );
  const bias = Float32Array.from({ length: C }, (_, c) => [0.4, 1.2, 3, -0.5, 0][c % 5] as number);
  return { x, dy, chan, C, weight, bias };
}

interface Reference {
  z: Float64Array;
  y: Float64Array;
  g: Float64Array;
  dx: Float64Array;
  dWeight: Float64Array;
  dBias: Float64Array;
  mean: ArrayLike<number>;
  variance: ArrayLike<number>;
}

/** BN then act in float64; backward by the chain rule through act then BN. */
function reference(
  k: Case,
  act: Act,
  train: boolean,
  running: { mean: Float32Array; variance: Float32Array },
  at: "z" | "xhat" | "none" = "z",
): Reference {
  const { x, dy, chan, C, weight, bias } = k;
  const stats = batchStats(x, chan, C);
  const mean = train ? stats.mean : running.mean;
  const variance = train ? stats.variance : running.variance;
  const z = normalize(x, chan, mean, variance, EPS, weight, bias);
  const y = z.map((v) => activate(act, v));
  const xhat = normalize(x, chan, mean, variance, EPS, null, null);
  const g = Float64Array.from(dy, (d, i) => {
    if (at === "none") return d;
    return d * derivative(act, at === "z" ? (z[i] as number) : (xhat[i] as number));
  });
  const grads = train
    ? backwardBatch(x, g, chan, stats, EPS, weight)
    : backwardConst(x, g, chan, mean, variance, EPS, weight);
  return { z, y, g, ...grads, mean, variance };
}

/**
 * Zeroes dy where the reference z is within max(1e-3, TOL·(z's error scale)) of a kink, where a
 * float32 z may lie on the other side (see Tolerances).
 */
function clearKinks(k: Case, act: Act, train: boolean, running: Running): void {
  const ref = reference(k, act, train, running);
  const norm = { chan: k.chan, mean: ref.mean, variance: ref.variance, eps: EPS };
  const zs = forwardScales(k.x, { ...norm, weight: k.weight, bias: k.bias });
  for (const kink of kinks(act.kind)) {
    for (let i = 0; i < ref.z.length; i++) {
      const near = Math.max(1e-3, TOL * (zs[i] as number));
      if (Math.abs((ref.z[i] as number) - kink) < near) k.dy[i] = 0;
    }
  }
}

type Running = { mean: Float32Array; variance: Float32Array };

function runningFor(C: number): Running {
  return {
    mean: Float32Array.from({ length: C }, (_, c) => 0.2 - 0.1 * c),
    variance: Float32Array.from({ length: C }, (_, c) => 1.5 + 0.3 * c),
  };
}

function scalesFor(k: Case, ref: Reference, act: Act, train: boolean) {
  const norm = {
    chan: k.chan,
    mean: ref.mean,
    variance: ref.variance,
    eps: EPS,
    weight: k.weight,
    bias: k.bias,
  };
  const smooth = KINKED.has(act.kind) ? 0 : 1;
  const z = forwardScales(k.x, norm);
  const y = z.map((s) => 1.1 * s + smooth);
  // g = dy·act′(z): |g| ≤ 1.1·|dy|, and z's error moves act′(z) by up to 0.77 times as much.
  const dyScale = Float64Array.from(
    k.dy,
    (d, i) => Math.abs(d) * (1.1 + 0.8 * smooth * (z[i] as number)),
  );
  return { y, ...gradientScales(k.x, dyScale, norm, train) };
}

function check(
  key: string,
  k: Case,
  ref: Reference,
  act: Act,
  train: boolean,
  got: {
    y: ArrayLike<number>;
    dx: ArrayLike<number>;
    dWeight: ArrayLike<number>;
    dBias: ArrayLike<number>;
  },
): void {
  const s = scalesFor(k, ref, act, train);
  note(`${key} y`, assertClose(`${key} y`, got.y, ref.y, s.y, TOL));
  note(`${key} dx`, assertClose(`${key} dx`, got.dx, ref.dx, s.dx, TOL));
  note(`${key} dW`, assertClose(`${key} dWeight`, got.dWeight, ref.dWeight, s.dWeight, TOL));
  note(`${key} dB`, assertClose(`${key} dBias`, got.dBias, ref.dBias, s.dBias, TOL));
}

beforeAll(async () => {
  await initFromDist();
});

describe.each(BACKENDS)("fused activations on the %s back end", (backend) => {
  for (const { layout, shape } of SHAPES) {
    for (const kind of ACTS) {
      const act = actOf(kind);
      it(`${kind} ${layout} [${shape.join(", ")}]: module, copy and zero-copy, train and eval`, () => {
        for (const train of [true, false]) {
          const k = makeCase(shape, layout, 11 + shape.length * 7 + ACTS.indexOf(kind));
          const running = runningFor(k.C);
          clearKinks(k, act, train, running);
          const ref = reference(k, act, train, running);
          const options = { layout, backend, activation: kind, negativeSlope: SLOPE };
          const make = () => {
            const bn = new BatchNorm(k.C, options);
            bn.loadStateDict({
              weight: k.weight,
              bias: k.bias,
              running_mean: running.mean,
              running_var: running.variance,
              num_batches_tracked: 0,
            });
            return bn.train(train);
          };
          const bn = make();
          const y = bn.forward(k.x, shape);
          const g = bn.backward(k.dy);
          check(`${backend} copy`, k, ref, act, train, {
            y,
            dx: g.dx,
            dWeight: g.dWeight as Float32Array,
            dBias: g.dBias as Float32Array,
          });
          bn.dispose();
          const zc = make();
          const xt = zc.tensor(shape);
          xt.data.set(k.x);
          const yt = zc.forward(xt);
          const dyt = zc.tensor(shape);
          dyt.data.set(k.dy);
          const gt = zc.backward(dyt, { out: dyt });
          check(`${backend} zero-copy`, k, ref, act, train, {
            y: yt.data.slice(),
            dx: gt.dx.data.slice(),
            dWeight: gt.dWeight as Float32Array,
            dBias: gt.dBias as Float32Array,
          });
          for (const t of [xt, yt, dyt]) t.dispose();
          zc.dispose();
        }
      });
    }
  }

  it("the functional batchNorm and batchNormBackward, both layouts, train and eval", () => {
    for (const { layout, shape } of SHAPES.slice(0, 5)) {
      for (const kind of ACTS) {
        const act = actOf(kind);
        for (const training of [true, false]) {
          const k = makeCase(shape, layout, 99 + ACTS.indexOf(kind));
          const running = runningFor(k.C);
          clearKinks(k, act, training, running);
          const ref = reference(k, act, training, running);
          const common = { layout, backend, activation: kind, negativeSlope: SLOPE };
          const y = batchNorm(k.x, shape, {
            ...common,
            training,
            weight: k.weight,
            bias: k.bias,
            runningMean: training ? null : running.mean.slice(),
            runningVar: training ? null : running.variance.slice(),
          });
          const stats = training ? {} : { mean: running.mean, variance: running.variance };
          const g = batchNormBackward(k.dy, k.x, shape, {
            ...common,
            ...stats,
            training,
            weight: k.weight,
            bias: k.bias,
          });
          check(`${backend} functional`, k, ref, act, training, { y, ...g });
        }
      }
    }
  });

  it("large means (x = 10000 + N(0, 1)): relu, silu and tanh stay within the tolerance", () => {
    for (const kind of ["relu", "silu", "tanh"] as const) {
      const act = actOf(kind);
      for (const [layout, shape] of [
        ["NCHW", [8, 3, 50]],
        ["NHWC", [400, 3]],
      ] as const) {
        const k = makeCase([...shape], layout, 5, 10000);
        const running = runningFor(k.C);
        clearKinks(k, act, true, running);
        const ref = reference(k, act, true, running);
        const bn = new BatchNorm(k.C, { layout, backend, activation: kind });
        bn.weight?.set(k.weight);
        bn.bias?.set(k.bias);
        const y = bn.forward(k.x, [...shape]);
        const g = bn.backward(k.dy);
        check(`${backend} large mean`, k, ref, act, true, {
          y,
          dx: g.dx,
          dWeight: g.dWeight as Float32Array,
          dBias: g.dBias as Float32Array,
        });
        bn.dispose();
      }
    }
  });

  it("relu, relu6 and leakyRelu keep the sign of a zero z: −0 stays −0, in vector lanes and tails", () => {
    // z = (x − mean)·scale + shift = (+0)·(−1) + (−0) = −0 exactly, at every position of
    // tensors whose runs (21 floats) and rows (7 floats) fill SIMD vectors and leave single
    // lanes; relu(−0) is −0, as in the JS back end, never +0.
    for (const kind of ["relu", "relu6", "leakyRelu"] as const) {
      for (const [layout, shape, C] of [
        ["NCHW", [3, 7, 1], 7],
        ["NCHW", [1, 1, 21], 1],
        ["NHWC", [3, 7], 7],
      ] as const) {
        const bn = new BatchNorm(C, { layout, backend, activation: kind }).eval();
        bn.weight?.fill(-1);
        bn.bias?.fill(-0);
        bn.runningMean?.fill(1);
        bn.runningVar?.fill(1);
        const y = bn.forward(new Float32Array(21).fill(1), [...shape]);
        const wrong = [...y].findIndex((v) => !Object.is(v, -0));
        expect(wrong, `${backend} ${kind} ${layout} [${shape}]: y[${wrong}] = ${y[wrong]}`).toBe(
          -1,
        );
        bn.dispose();
      }
    }
  });

  it("sigmoid, tanh and silu saturate beyond exp's range and keep NaN, in vector lanes and tails", () => {
    // The wasm builds clamp exp's argument to [−87.33, 89] on the floats' bits (integer
    // minimums, then NaN lanes set back to NaN; e^x is +∞ from 88.38 on): z beyond the bounds
    // (and at −88.5, where e^−z is +∞ before float32's would be), ±∞ and NaN, in runs of 21
    // floats (five vectors and a lane) and rows of 3. Against float64 (activation.ts):
    // sigmoid and tanh within 1e-6 absolute (their values are O(1); a clamp that moved a
    // NaN would give ~0 or ±1 here and fail the NaN check), silu as silu(z)/z against
    // sigmoid(z), so that |z| up to 1e30 is checked to the same 1e-6, and silu(±∞) as
    // PyTorch gives it: +∞ at +∞, NaN (−∞·0) at −∞. dx is checked where z is finite: eval
    // mode's gradient map adds 0·(x − mean), NaN for an infinite x on every back end.
    const values = [Number.NaN, Infinity, -Infinity, 1e30, -1e30, 100, -100, 88.5, -88.5];
    values.push(87.5, -87.5, 50, -50, 10, -10, 0.5, -0.5, 0, -0, 3, 1e-30);
    const scale = 1 / Math.sqrt(1 + EPS); // weight 1, running mean 0 and variance 1
    for (const kind of ["sigmoid", "tanh", "silu"] as const) {
      const act = actOf(kind);
      for (const [layout, shape, C] of [
        ["NCHW", [1, 2, 21], 2],
        ["NHWC", [21, 3], 3],
      ] as const) {
        const bn = new BatchNorm(C, { layout, backend, activation: kind }).eval();
        const x = Float32Array.from({ length: 21 * C }, (_, i) => values[i % 21] as number);
        const y = bn.forward(x, [...shape]);
        const g = bn.backward(new Float32Array(x.length).fill(1)).dx;
        for (let i = 0; i < x.length; i++) {
          const z = Math.fround(x[i] as number) * scale;
          const at = `${backend} ${kind} ${layout} z = ${z}`;
          if (Number.isNaN(z)) {
            expect(Number.isNaN(y[i] as number), `${at}: y = ${y[i]}`).toBe(true);
            expect(Number.isNaN(g[i] as number), `${at}: dx = ${g[i]}`).toBe(true);
            continue;
          }
          if (kind === "silu" && !Number.isFinite(z)) {
            expect(y[i], `${at}: y`).toBe(z > 0 ? Infinity : Number.NaN);
            continue;
          }
          const got = kind === "silu" && Math.abs(z) > 1 ? (y[i] as number) / z : (y[i] as number);
          const want =
            kind === "silu" && Math.abs(z) > 1 ? 1 / (1 + Math.exp(-z)) : activate(act, z);
          expect(Math.abs(got - want), `${at}: y = ${y[i]}`).toBeLessThanOrEqual(1e-6);
          if (Number.isFinite(z)) {
            // dx = scale·act′(z): 0 in the tails, where exp is clamped or +∞.
            const dWant = scale * derivative(act, z);
            expect(Math.abs((g[i] as number) - dWant), `${at}: dx = ${g[i]}`).toBeLessThanOrEqual(
              1e-6,
            );
          }
        }
        bn.dispose();
      }
    }
  });

  it("tanh keeps its relative accuracy near 0, in vector lanes and tails", () => {
    // The wasm builds' tanh is (e^2z − 1)/(e^2z + 1) with e^2z − 1 computed directly (expm1):
    // 1 − 2/(1 + e^2z), which it replaced, was off by about an ulp of 1 (19% at z = 1e-7).
    // Against float64 Math.tanh within 4 ulp of the float32 result (2.5 measured in
    // crates/batchnorm/src/activation.rs), down to subnormal z.
    const values = [1e-7, 3e-7, -2e-7, 5e-8, 1e-20, -1e-30, 1e-40, 1e-3, -0.01, 0.1, -0.3];
    const bn = new BatchNorm(1, { backend, activation: "tanh", eps: 0 }).eval();
    const y = bn.forward(Float32Array.from(values), [values.length, 1]);
    for (const [i, v] of values.entries()) {
      const want = Math.tanh(Math.fround(v));
      const ulp = 2 ** (Math.floor(Math.log2(Math.abs(want))) - 23);
      const at = `${backend} tanh(${v}) = ${y[i]}, want ${want}`;
      expect(Math.abs((y[i] as number) - want), at).toBeLessThanOrEqual(
        4 * Math.max(ulp, 2 ** -149),
      );
    }
    bn.dispose();
  });

  it("dx has the same bits whether the first backward pass writes g = dy·act′(z) to dx's memory or not", () => {
    // The wasm builds' gradSums writes g into a dx apart from x and dy (sigmoid, tanh, silu;
    // the others in the cache where no thresholds apply: relu6 here, and relu and leakyRelu,
    // whose weights here include negative ones), and gradInput then reads it without the
    // activation: the same float32 operations as recomputing g. dx over dy or x (the tensor
    // API's out) keeps the recomputing passes; the copy APIs give dx a buffer of its own where
    // the back end writes g. In training, in eval mode, and with ghost batches (each writes
    // its own part of dx).
    const settings = [
      { mode: "training", options: {} },
      { mode: "eval", options: {} },
      { mode: "ghost batches", options: { virtualBatchSize: 2 } },
    ] as const;
    for (const kind of ["relu", "relu6", "leakyRelu", "sigmoid", "tanh", "silu"] as const) {
      for (const [layout, shape] of [
        ["NCHW", [4, 3, 40]],
        ["NHWC", [36, 5]],
      ] as const) {
        const k = makeCase([...shape], layout, 23);
        for (const { mode, options } of settings) {
          const bn = new BatchNorm(k.C, { layout, backend, activation: kind, ...options });
          bn.weight?.set(k.weight);
          bn.bias?.set(k.bias);
          if (mode === "eval") bn.eval();
          const dxOf = (how: "apart" | "onDy" | "onX" | "copy"): Float32Array => {
            if (how === "copy") {
              bn.forward(k.x, [...shape]);
              return bn.backward(k.dy).dx;
            }
            const [x, dy] = [bn.tensor([...shape]), bn.tensor([...shape])];
            x.data.set(k.x);
            dy.data.set(k.dy);
            const y = bn.forward(x);
            const out = how === "onDy" ? dy : how === "onX" ? x : bn.tensor([...shape]);
            const dx = bn.backward(dy, { out }).dx.data.slice();
            for (const t of new Set([x, y, dy, out])) t.dispose();
            return dx;
          };
          const apart = dxOf("apart");
          const at = `${backend} ${kind} ${layout} ${mode}`;
          expectSameBits(`${at}: dx over dy`, dxOf("onDy"), apart);
          expectSameBits(`${at}: dx over x`, dxOf("onX"), apart);
          expectSameBits(`${at}: the copy API's dx`, dxOf("copy"), apart);
          bn.dispose();
        }
        // The functional op, whose copy API also gives dx a buffer of its own.
        const call = {
          training: true,
          activation: kind,
          weight: k.weight,
          bias: k.bias,
          layout,
          backend,
        };
        const copied = batchNormBackward(k.dy, k.x, [...shape], call).dx;
        const host = new BatchNorm(k.C, { layout, backend }); // for tensors in its memory
        const [x, dy] = [host.tensor([...shape]), host.tensor([...shape])];
        x.data.set(k.x);
        dy.data.set(k.dy);
        const overDy = batchNormBackward(dy, x, undefined, { ...call, out: dy }).dx.data.slice();
        expectSameBits(`${backend} ${kind} ${layout}: batchNormBackward's dx`, copied, overDy);
        host.dispose();
      }
    }
  });

  it("relu, relu6, leakyRelu: the gradient passes exactly where the forward's y is in (0, 6)", () => {
    // x within 300 floats of each channel's kink (z = k at x0 = mean + (k − bias)·sqrt(var +
    // eps)/weight, for k = 0, and alternately 0 and 6 for relu6), where z's float32 rounding
    // decides which side it is on. For relu and leakyRelu the wasm builds' backward tests
    // `θ < x − mean` against exact per-channel thresholds where every weight is positive and a
    // channel has 48 values or more (crates/batchnorm/src/threshold.rs), and forms
    // (x − mean)·scale otherwise (a negative weight, or short channels; always for relu6):
    // each must pass the gradient where y is inside the kinks and no other. The SIMD build
    // finds θ four channels at a time in three ways, one per group of four channels here: one
    // by one (a zero bias among others), from the quotient −bias/scale (every bias nonzero),
    // and +0 for all four (zero biases, scales above 1/2). Channels 0, 3, 5 and 8 have mean 0,
    // so x − mean steps through every float near the threshold (channel 0's a subnormal: zero
    // bias, weight 0.3, scale about 0.335). Negative control: on the wasm builds, z's side of
    // a kink in float64 disagrees with y's on some values of every long tensor, so a backward
    // that decided the kink other than the forward did would be caught.
    const C = 12;
    const mean = [0, -1.1, 2.5, 0, 0.7, 0, -0.4, 1.9, 0, -2.2, 0.05, 3.1];
    const variance = [0.8, 1.7, 0.3, 2.2, 1.1, 0.6, 2.9, 0.2, 1.4, 0.9, 0.45, 3.3];
    const bias = [0, 0.7, -1.3, 2.1e-3, 0.2, -0.9, 3.5e-5, 1.7, 0, 0, 0, 0];
    const bits = new Uint32Array(1);
    const float = new Float32Array(bits.buffer);
    // The float `steps` floats above v (below, for negative steps), through ±0.
    const step = (v: number, steps: number): number => {
      float[0] = v;
      const u = bits[0] as number;
      const key = u >>> 31 ? 0x7fffffff - (u & 0x7fffffff) : 0x80000000 + u;
      const k = key + steps;
      bits[0] = k >= 0x80000000 ? k - 0x80000000 : 0x80000000 + (0x7fffffff - k);
      return float[0] as number;
    };
    const positive = [0.3, 0.7, 2.9, 0.45, 0.8, 1.1, 0.3, 2.2, 1.3, 1.6, 0.9, 2.5];
    for (const weight of [positive, positive.map((w, c) => (c === 9 ? -w : w))]) {
      for (const [layout, shape] of [
        ["NCHW", [1, C, 1024]],
        ["NHWC", [1024, C]],
        ["NCHW", [2, C, 20]],
        ["NHWC", [40, C]],
        ["NHWC", [80, C]],
        ["NHWC", [200, C]],
      ] as const) {
        const n = shape.reduce((a: number, b: number) => a * b, 1);
        const chan = channelOf([...shape], layout);
        const dy = Float32Array.from({ length: n }, (_, i) => 1 + (i % 7) * 0.1);
        for (const kind of ["relu", "relu6", "leakyRelu"] as const) {
          const zKinks = kind === "relu6" ? [0, 6] : [0];
          const seen = new Array<number>(C).fill(0);
          const x = Float32Array.from({ length: n }, (_, i) => {
            const c = chan[i] as number;
            const j = (seen[c] as number) + 1;
            seen[c] = j;
            const k = zKinks[j % zKinks.length] as number;
            const sd = Math.sqrt((variance[c] as number) + EPS);
            const kink =
              (mean[c] as number) + ((k - (bias[c] as number)) * sd) / (weight[c] as number);
            return step(Math.fround(kink), (j % 601) - 300);
          });
          // act′ as the forward's y shows it; and whether z in float64 is on the same side.
          const inside = (v: number) => v > 0 && (kind !== "relu6" || v < 6);
          const slope = (yi: number) => (inside(yi) ? 1 : kind === "leakyRelu" ? SLOPE : 0);
          let disagreements = 0;
          const bn = new BatchNorm(C, { layout, backend, activation: kind, negativeSlope: SLOPE });
          bn.eval();
          bn.weight?.set(weight);
          bn.bias?.set(bias);
          bn.runningMean?.set(mean);
          bn.runningVar?.set(variance);
          const y = bn.forward(x, [...shape]);
          const { dx } = bn.backward(dy);
          const label = `${backend} ${kind} ${layout} [${shape}] weight ${weight}`;
          let wrong = -1;
          for (let i = 0; i < n && wrong < 0; i++) {
            const c = chan[i] as number;
            const kDy =
              Math.fround(bn.weight?.[c] as number) /
              Math.sqrt(Math.fround(variance[c] as number) + EPS);
            const want = (dy[i] as number) * kDy * slope(y[i] as number);
            // dx = dy·kDy·act′(z), rounded to float32 two or three times (1e-6 is 8 ulp): the
            // cases apart differ 5× (SLOPE) or by all of dx (relu).
            if (Math.abs((dx[i] as number) - want) > 1e-6 * Math.abs((dy[i] as number) * kDy)) {
              wrong = i;
            }
            const z =
              ((x[i] as number) - Math.fround(mean[c] as number)) * kDy +
              Math.fround(bias[c] as number);
            if (inside(z) !== inside(y[i] as number)) disagreements++;
          }
          expect(wrong, `${label}: dx[${wrong}] = ${dx[wrong]} for y = ${y[wrong]}`).toBe(-1);
          if (backend !== "js" && n >= 4096) expect(disagreements, label).toBeGreaterThan(0);
          bn.dispose();
        }
      }
    }
  });

  it("negative controls: the derivative omitted, or taken at x̂ instead of z, is caught", () => {
    const { layout, shape } = SHAPES[0] as { layout: RefLayout; shape: number[] };
    for (const kind of ACTS) {
      const act = actOf(kind);
      const k = makeCase(shape, layout, 3);
      const running = runningFor(k.C);
      clearKinks(k, act, true, running);
      const bn = new BatchNorm(k.C, { layout, backend, activation: kind, negativeSlope: SLOPE });
      bn.weight?.set(k.weight);
      bn.bias?.set(k.bias);
      const y = bn.forward(k.x, shape);
      const g = bn.backward(k.dy);
      const got = {
        y,
        dx: g.dx,
        dWeight: g.dWeight as Float32Array,
        dBias: g.dBias as Float32Array,
      };
      for (const wrong of ["none", "xhat"] as const) {
        const bad = reference(k, act, true, running, wrong);
        const s = scalesFor(k, bad, act, true);
        expect(() => assertClose("dx", got.dx, bad.dx, s.dx, TOL), `${kind} ${wrong}`).toThrow();
      }
      bn.dispose();
    }
  });

  it("errors: an unknown activation or a bad negativeSlope is a RangeError naming the option", () => {
    const x = new Float32Array(6);
    const bad = [
      [{ activation: "gelu" }, /options\.activation/],
      [{ activation: "ReLU" }, /options\.activation/],
      [{ activation: "relu", negativeSlope: Number.NaN }, /options\.negativeSlope/],
      [{ activation: "leakyRelu", negativeSlope: "0.1" }, /options\.negativeSlope/],
      [{ activation: "leakyRelu", negativeSlope: Infinity }, /options\.negativeSlope/],
    ] as const;
    for (const [o, message] of bad) {
      const options = { backend, ...o } as never;
      expect(() => new BatchNorm(3, options)).toThrow(RangeError);
      expect(() => new BatchNorm(3, options)).toThrow(message);
      const f = { ...(o as object), backend, training: true } as never;
      expect(() => batchNorm(x, [2, 3], f)).toThrow(message);
      expect(() => batchNormBackward(x, x, [2, 3], f)).toThrow(RangeError);
    }
  });
});

describe("the float64 chain rule against finite differences", () => {
  /** L = Σ act(BN(x))·r in float64, with batch statistics. */
  function loss(
    x: Float64Array,
    k: Case,
    w: Float64Array,
    b: Float64Array,
    act: Act,
    r: Float64Array,
  ) {
    const stats = batchStats(x, k.chan, k.C);
    const z = normalize(x, k.chan, stats.mean, stats.variance, EPS, w, b);
    let sum = 0;
    for (let i = 0; i < z.length; i++) sum += activate(act, z[i] as number) * (r[i] as number);
    return sum;
  }

  for (const kind of ACTS) {
    const act = actOf(kind);
    it(`${kind}: dx, dWeight, dBias (and the controls fail)`, () => {
      for (const { layout, shape } of [
        { layout: "NCHW" as const, shape: [3, 2, 5] },
        { layout: "NHWC" as const, shape: [7, 3] },
      ]) {
        const k = makeCase(shape, layout, 21);
        const running = runningFor(k.C);
        // Nudge x until no z is within 0.02 of a kink (central differences must not cross one).
        for (let round = 0; round < 100; round++) {
          const { z } = reference(k, act, true, running);
          const near = kinks(kind).flatMap((kink) =>
            [...z.keys()].filter((i) => Math.abs((z[i] as number) - kink) < 0.02),
          );
          if (near.length === 0) break;
          for (const i of near) k.x[i] = (k.x[i] as number) + 0.05;
        }
        const x = Float64Array.from(k.x);
        const w = Float64Array.from(k.weight);
        const b = Float64Array.from(k.bias);
        const r = Float64Array.from(k.dy);
        const ref = reference(k, act, true, running);
        const sigma = Float64Array.from(ref.variance, (v) => Math.sqrt(v));
        const fd = (v: Float64Array, i: number, step: number) => {
          const keep = v[i] as number;
          v[i] = keep + step;
          const up = loss(x, k, w, b, act, r);
          v[i] = keep - step;
          const down = loss(x, k, w, b, act, r);
          v[i] = keep;
          return (up - down) / (2 * step);
        };
        const dx = Float64Array.from(x, (_, i) =>
          fd(x, i, H * (sigma[k.chan[i] as number] as number)),
        );
        const dW = Float64Array.from(w, (_, c) => fd(w, c, H));
        const dB = Float64Array.from(b, (_, c) => fd(b, c, H));
        const s = scalesFor(k, ref, act, true);
        note(`FD ${kind} dx`, assertClose(`FD ${kind} dx`, ref.dx, dx, s.dx, FD_TOL));
        note(`FD ${kind} dW`, assertClose(`FD ${kind} dW`, ref.dWeight, dW, s.dWeight, FD_TOL));
        note(`FD ${kind} dB`, assertClose(`FD ${kind} dB`, ref.dBias, dB, s.dBias, FD_TOL));
        for (const wrong of ["none", "xhat"] as const) {
          const bad = reference(k, act, true, running, wrong);
          expect(() => assertClose("dx", bad.dx, dx, s.dx, FD_TOL), `${kind} ${wrong}`).toThrow();
        }
      }
    });
  }
});

describe("report", () => {
  it("prints the worst error ratios (diff / scale) seen", () => {
    const rows = Object.entries(worst).map(([k, v]) => `${k}: ${v.toExponential(2)}`);
    console.log(`fused activations, worst diff/scale:\n  ${rows.join("\n  ")}`);
    expect(rows.length).toBeGreaterThan(0);
  });
});

describe.each(BACKENDS)("fused activations with ghost batches (%s back end)", (backend) => {
  // Each ghost batch is normalized on its own: the module must give, slice by slice, what a
  // module without ghost batches gives on that slice alone: y and dx bit for bit (the same
  // passes on the same data), dWeight and dBias as the sums over the slices (float64 sums of
  // float32 terms, rounded once: within a few float32 ulps). The backward of an early ghost
  // batch reads its own forward coefficients; with the last one's, its dx would differ.
  it.each([
    { layout: "NCHW" as const, shape: [6, 3, 5], k: 2, activation: "silu" as const },
    { layout: "NHWC" as const, shape: [6, 4, 3], k: 3, activation: "leakyRelu" as const },
  ])("$layout $shape, virtualBatchSize $k, $activation", ({ layout, shape, k, activation }) => {
    const C = layout === "NCHW" ? (shape[1] as number) : (shape[shape.length - 1] as number);
    const n = shape.reduce((p, d) => p * d, 1);
    const rng = new Rng(5);
    const x = Float32Array.from({ length: n }, () => 2 + 3 * rng.normal());
    const dy = Float32Array.from({ length: n }, () => rng.normal());
    const options = { backend, layout, activation, negativeSlope: 0.2 };
    const ghosts = new BatchNorm(C, { ...options, virtualBatchSize: k });
    const y = ghosts.forward(x, shape);
    const g = ghosts.backward(dy);
    const part = n / ((shape[0] as number) / k);
    const dWeight = new Float64Array(C);
    const dBias = new Float64Array(C);
    for (let at = 0; at < n; at += part) {
      const alone = new BatchNorm(C, options);
      const sub = [k, ...shape.slice(1)];
      const ya = alone.forward(x.slice(at, at + part), sub);
      const ga = alone.backward(dy.slice(at, at + part));
      expectSameBits(`y[${at}…]`, y.subarray(at, at + part), ya);
      expectSameBits(`dx[${at}…]`, g.dx.subarray(at, at + part), ga.dx);
      for (let c = 0; c < C; c++) {
        dWeight[c] = (dWeight[c] as number) + ((ga.dWeight as Float32Array)[c] as number);
        dBias[c] = (dBias[c] as number) + ((ga.dBias as Float32Array)[c] as number);
      }
    }
    const near = (got: Float32Array | null, want: Float64Array, what: string) => {
      for (let c = 0; c < C; c++) {
        const w = want[c] as number;
        expect(Math.abs(((got as Float32Array)[c] as number) - w), what).toBeLessThanOrEqual(
          4 * 2 ** -24 * Math.max(1, Math.abs(w)),
        );
      }
    };
    near(g.dWeight, dWeight, "dWeight");
    near(g.dBias, dBias, "dBias");
  });
});
