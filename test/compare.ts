import { expect } from "vitest";
import {
  batchStats,
  channelOf,
  normalize,
  type RefBatchNorm,
  type RefGradients,
  type Stats,
} from "./reference.js";

/**
 * Comparisons with the float64 reference: element-wise closeness relative to an error scale
 * (`assertClose`), the one rule those scales follow (`errorScales`, `runningScales`), and the
 * checks of a forward, a backward and running statistics that the suites share.
 */

/**
 * Asserts |actual[i] − expected[i]| ≤ tol · scale[i] for every i, and returns the largest
 * ratio |actual[i] − expected[i]| / scale[i] (handy when choosing tolerances). Non-finite
 * values must match exactly (NaN with NaN, ±Infinity with the same sign).
 */
export function assertClose(
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  scale: ArrayLike<number>,
  tol: number,
): number {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length}, expected ${expected.length}`);
  }
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i] as number;
    const e = expected[i] as number;
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (!Object.is(a, e) && !(Number.isNaN(a) && Number.isNaN(e))) {
        throw new Error(`${what}[${i}]: got ${a}, expected ${e}`);
      }
      continue;
    }
    const s = scale[i] as number;
    const ratio = Math.abs(a - e) / s;
    if (!(ratio <= worst)) {
      worst = ratio;
      at = i;
    }
  }
  if (!(worst <= tol)) {
    throw new Error(
      `${what}[${at}]: got ${actual[at]}, expected ${expected[at]} ` +
        `(|diff| = ${Math.abs((actual[at] as number) - (expected[at] as number)).toExponential(3)}, ` +
        `scale ${(scale[at] as number).toExponential(3)}, diff/scale = ${worst.toExponential(3)} > tol ${tol})`,
    );
  }
  return worst;
}

/** Expands per-channel values to per-element values through a channel-index map. */
export function perElement(perChannel: ArrayLike<number>, chan: Int32Array): Float64Array {
  const out = new Float64Array(chan.length);
  for (let i = 0; i < chan.length; i++) out[i] = perChannel[chan[i] as number] as number;
  return out;
}

/** Per-channel maximum of |v|. */
export function maxAbsPerChannel(v: ArrayLike<number>, chan: Int32Array, C: number): Float64Array {
  const out = new Float64Array(C);
  for (let i = 0; i < v.length; i++) {
    const c = chan[i] as number;
    out[c] = Math.max(out[c] as number, Math.abs(v[i] as number));
  }
  return out;
}

/** Error scales of one forward + backward (see `errorScales`). */
export interface ErrorScales {
  /** Per element. */
  y: Float64Array;
  /** Per element. */
  dx: Float64Array;
  /** Per channel. */
  dWeight: Float64Array;
  /** Per channel. */
  dBias: Float64Array;
}

/**
 * The error-scale rule of every comparison with the float64 reference: a computed value may be
 * off by a few float32 roundoffs of the magnitudes of the terms its computation adds up (the
 * usual forward error bound: rounding is relative to the terms, not to a result that may
 * cancel). Per channel, with a = |γ|/σ̂, μ and σ̂² the statistics the forward used,
 * x̂ = (x − μ)/σ̂:
 * - y: a·(max|x − μ| + |μ|) + |β|: the float32 mean carries an absolute error ∝ |μ| and the
 *   spread of what it averaged (running statistics inherit that error), and (x − μ)·a + β
 *   rounds relative to its terms;
 * - dx: a·max|dy|·(1 + max|x̂| + |μ|/σ̂) after a training forward (the three terms of
 *   k_dy·dy + k_xc·(x − μ) + k_const, with the float32 μ's error in x − μ); a·|dy| per element
 *   after inference (dx = a·dy, whose only error is relative: a's and the product's rounding);
 * - dWeight: Σ|dy|·(|x̂| + |μ|/σ̂); dBias: Σ|dy|;
 * - running statistics: see `runningScales`.
 * Each scale has a 1e-30 floor, so that exact zeros (dy = 0) do not divide by zero. How many
 * roundoffs (the tolerance) is each suite's to state: test/conformance.test.ts derives 1e-5.
 */
export function errorScales(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  norm: Normalization,
  batchStats: boolean,
): ErrorScales {
  return { y: forwardScales(x, norm), ...gradientScales(x, dy, norm, batchStats) };
}

/** What a forward normalized with: each element's channel, the statistics and parameters. */
export interface Normalization {
  chan: Int32Array;
  mean: ArrayLike<number>;
  variance: ArrayLike<number>;
  eps: number;
  weight: ArrayLike<number> | null;
  bias: ArrayLike<number> | null;
}

/**
 * The float64 reference of a training forward without affine parameters (eps 1e-5): the
 * batch's statistics, y, and y's error scales.
 */
export function trainingReference(
  x: ArrayLike<number>,
  chan: Int32Array,
  C: number,
): { stats: Stats; y: Float64Array; scale: Float64Array } {
  const stats = batchStats(x, chan, C);
  const norm = { chan, ...stats, eps: 1e-5, weight: null, bias: null };
  return {
    stats,
    y: normalize(x, chan, stats.mean, stats.variance, 1e-5, null, null),
    scale: forwardScales(x, norm),
  };
}

/** `errorScales`' y alone (a forward has no dy), per element. */
export function forwardScales(x: ArrayLike<number>, norm: Normalization): Float64Array {
  const { chan, mean, variance, eps, weight, bias } = norm;
  const C = mean.length;
  const xc = Float64Array.from(x, (v, i) => v - (mean[chan[i] as number] as number));
  const maxXc = maxAbsPerChannel(xc, chan, C);
  const y = Float64Array.from({ length: C }, (_, c) => {
    const a = Math.abs(weight?.[c] ?? 1) / Math.sqrt((variance[c] as number) + eps);
    const mu = Math.abs(mean[c] as number);
    return a * ((maxXc[c] as number) + mu) + Math.abs(bias?.[c] ?? 0) + 1e-30;
  });
  return perElement(y, chan);
}

/** `errorScales`' dx, dWeight and dBias alone. */
export function gradientScales(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  norm: Normalization,
  batchStats: boolean,
): Omit<ErrorScales, "y"> {
  const { chan, mean, variance, eps, weight } = norm;
  const C = mean.length;
  const invstd = Float64Array.from(variance, (v) => 1 / Math.sqrt(v + eps));
  const xhat = Float64Array.from(x, (v, i) => {
    const c = chan[i] as number;
    return (v - (mean[c] as number)) * (invstd[c] as number);
  });
  const maxXhat = maxAbsPerChannel(xhat, chan, C);
  const maxDy = maxAbsPerChannel(dy, chan, C);
  /** |μ|/σ̂: the float32 mean's error, relative to the spread. */
  const mu = Float64Array.from(mean, (m, c) => Math.abs(m) * (invstd[c] as number));
  const a = Float64Array.from(invstd, (s, c) => Math.abs(weight?.[c] ?? 1) * s);
  const dx = Float64Array.from(dy, (d, i) => {
    const c = chan[i] as number;
    const terms = 1 + (maxXhat[c] as number) + (mu[c] as number);
    return (a[c] as number) * (batchStats ? (maxDy[c] as number) * terms : Math.abs(d)) + 1e-30;
  });
  const dWeight = new Float64Array(C).fill(1e-30);
  const dBias = new Float64Array(C).fill(1e-30);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const ady = Math.abs(dy[i] as number);
    dWeight[c] = (dWeight[c] as number) + ady * (Math.abs(xhat[i] as number) + (mu[c] as number));
    dBias[c] = (dBias[c] as number) + ady;
  }
  return { dx, dWeight, dBias };
}

/**
 * Error scales of running statistics, by the same rule: the running mean adds float32 batch
 * means, whose error is relative to |μ| and to the spread of the values averaged (√running var,
 * or `spread` per channel where a test knows a smaller bound on it); the running variance's
 * terms are variances, so its error is relative to itself.
 */
export function runningScales(
  runningMean: ArrayLike<number>,
  runningVar: ArrayLike<number>,
  spread?: ArrayLike<number>,
): { runningMean: Float64Array; runningVar: Float64Array } {
  return {
    runningMean: Float64Array.from(runningMean, (m, c) => {
      const s = Math.sqrt(Math.abs(runningVar[c] as number));
      return Math.abs(m) + Math.min(s, spread?.[c] ?? s) + 1e-30;
    }),
    runningVar: Float64Array.from(runningVar, (v) => Math.abs(v) + 1e-30),
  };
}

/** Gradients as a module returns them: no dWeight and dBias without affine parameters. */
export type Gradients = { dx: ArrayLike<number> } & Optional<"dWeight" | "dBias">;
/** Running statistics as a module holds them: none without trackRunningStats. */
export type Running = Optional<"runningMean" | "runningVar">;
type Optional<K extends string> = Record<K, ArrayLike<number> | null>;

/**
 * Compares gradients with the reference's, each within tol of its scale (dWeight and dBias
 * must be null when `affine` is false); returns the worst ratio.
 */
export function checkGradients(
  what: string,
  got: Gradients,
  want: RefGradients,
  scales: Omit<ErrorScales, "y">,
  affine: boolean,
  tol: number,
): number {
  const worst = assertClose(`${what}: dx`, got.dx, want.dx, scales.dx, tol);
  if (!affine) return Math.max(worst, expectNull(what, { dWeight: got.dWeight, dBias: got.dBias }));
  return Math.max(
    worst,
    closeAll(what, tol, [
      ["dWeight", got.dWeight, want.dWeight, scales.dWeight],
      ["dBias", got.dBias, want.dBias, scales.dBias],
    ]),
  );
}

/** Compares running statistics with the reference's under `runningScales`; worst ratio. */
export function checkRunning(
  what: string,
  got: Running,
  want: Running,
  tol: number,
  spread?: ArrayLike<number>,
): number {
  const { runningMean: rm, runningVar: rv } = want;
  if (rm === null || rv === null) {
    return expectNull(what, { runningMean: got.runningMean, runningVar: got.runningVar });
  }
  const scales = runningScales(rm, rv, spread);
  return closeAll(what, tol, [
    ["runningMean", got.runningMean, rm, scales.runningMean],
    ["runningVar", got.runningVar, rv, scales.runningVar],
  ]);
}

/** Each named value is null (a module without them); 0, the worst ratio of nothing compared. */
function expectNull(what: string, values: Record<string, unknown>): number {
  for (const [name, v] of Object.entries(values)) expect(v, `${what}: ${name}`).toBeNull();
  return 0;
}

/** assertClose for each [name, got, want, scale] (got null fails); the worst ratio. */
function closeAll(
  what: string,
  tol: number,
  rows: [string, ArrayLike<number> | null, ArrayLike<number>, ArrayLike<number>][],
): number {
  let worst = 0;
  for (const [name, got, want, scale] of rows) {
    expect(got, `${what}: ${name}`).not.toBeNull();
    worst = Math.max(worst, assertClose(`${what}: ${name}`, got ?? [], want, scale, tol));
  }
  return worst;
}

/**
 * Runs the reference's forward on x and compares y with it; returns the worst ratio. The
 * reference then holds the statistics that forward used (for `checkBackward`).
 *
 * The scale is `forwardScales`' bound or, where it is smaller, the per-element bound the
 * property and zero-copy suites always used, a·(|x| + |μ|) + |β| + |y|: near a channel's mean
 * that one is the tighter, and sharing the rule must not loosen those suites. (It is no bound
 * in general — it lacks the spread the float32 mean's error scales with, so a channel centred
 * near 0 fails it — but their data, whose spread is comparable to each channel's mean, pass.)
 */
export function checkForward(
  what: string,
  y: ArrayLike<number>,
  x: ArrayLike<number>,
  shape: readonly number[],
  ref: RefBatchNorm,
  tol: number,
): number {
  const want = ref.forward(x, shape);
  const { mean, variance } = lastStats(ref);
  const chan = channelOf(shape, ref.layout);
  const scale = forwardScales(x, { chan, mean, variance, ...params(ref) });
  for (let i = 0; i < scale.length; i++) {
    const c = chan[i] as number;
    const a = Math.abs(ref.weight?.[c] ?? 1) / Math.sqrt((variance[c] as number) + ref.eps);
    const element =
      a * (Math.abs(x[i] as number) + Math.abs(mean[c] as number)) +
      Math.abs(ref.bias?.[c] ?? 0) +
      Math.abs(want[i] as number) +
      1e-30;
    scale[i] = Math.min(scale[i] as number, element);
  }
  return assertClose(what, y, want, scale, tol);
}

/**
 * Runs the reference's backward of its last forward (on x, of `shape`, in the reference's
 * current mode) and compares the gradients with it; returns the worst ratio.
 */
export function checkBackward(
  what: string,
  got: Gradients,
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  shape: readonly number[],
  ref: RefBatchNorm,
  tol: number,
): number {
  const { mean, variance } = lastStats(ref);
  const batch = ref.training || !ref.trackRunningStats;
  const chan = channelOf(shape, ref.layout);
  const scales = gradientScales(x, dy, { chan, mean, variance, ...params(ref) }, batch);
  return checkGradients(what, got, ref.backward(dy), scales, ref.affine, tol);
}

function params(ref: RefBatchNorm) {
  return { eps: ref.eps, weight: ref.weight, bias: ref.bias };
}

function lastStats(ref: RefBatchNorm): { mean: Float64Array; variance: Float64Array } {
  if (ref.lastMean === undefined || ref.lastVar === undefined) {
    throw new Error("reference: no forward yet");
  }
  return { mean: ref.lastMean, variance: ref.lastVar };
}
