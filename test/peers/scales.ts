/**
 * Error scales and tolerances for comparing a float32 peer with the float64 formulas.
 *
 * A float32 operation rounds with relative error ≤ u = 2⁻²⁴ ≈ 6e-8 of its result. Each
 * comparison below divides |peer − formula| by the magnitude of the terms the peer adds up (not
 * by the result, which may cancel to ~0), so a tolerance counts roundings: a few for a
 * normalization, about n for a sum of n values (a mean or variance over n values per channel).
 */
import { channelOf, type RefLayout } from "../reference.js";

/** float32's unit roundoff. */
export const U = 2 ** -24;

/**
 * y = γ·(x − μ)/√(σ² + ε) + β evaluated in float32, by any arrangement (ORT precomputes
 * γ/√(σ² + ε) and β − μ·γ/√(σ² + ε)): the terms are a·|x|, a·|μ| and |β| with a = |γ|/√(σ² + ε).
 * A handful of roundings (subtract, add, square root, divide, multiply, add): 16u leaves room.
 */
export const Y_TOL = 16 * U;

export function yScale(
  x: ArrayLike<number>,
  shape: readonly number[],
  layout: RefLayout,
  p: { weight: ArrayLike<number>; bias: ArrayLike<number>; mean: ArrayLike<number> },
  variance: ArrayLike<number>,
  eps: number,
): Float64Array {
  const chan = channelOf(shape, layout);
  return Float64Array.from(x, (v, i) => {
    const c = chan[i] as number;
    const a = Math.abs(p.weight[c] as number) / Math.sqrt((variance[c] as number) + eps);
    return a * (Math.abs(v) + Math.abs(p.mean[c] as number)) + Math.abs(p.bias[c] as number);
  });
}

/**
 * A blended running statistic m·old + (1 − m)·stat where `stat` is a float32 sum over n values
 * per channel: its error is ≤ about n·u of the largest term. The terms are |x| for the mean and
 * (|x| + |μ|)² for the variance (this covers both Σ(x − μ)²/n and Σx²/n − μ²), so the scale is
 * m·|old| + (1 − m)·max term and the tolerance (n + 8)·u.
 */
export function statTolerance(n: number): number {
  return (n + 8) * U;
}

export function statScales(
  x: ArrayLike<number>,
  shape: readonly number[],
  layout: RefLayout,
  batchMean: ArrayLike<number>,
  old: { mean: ArrayLike<number>; variance: ArrayLike<number> },
  momentum: number,
): { mean: Float64Array; variance: Float64Array } {
  const chan = channelOf(shape, layout);
  const C = batchMean.length;
  const maxX = new Float64Array(C);
  const maxSq = new Float64Array(C);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const v = Math.abs(x[i] as number);
    maxX[c] = Math.max(maxX[c] as number, v);
    maxSq[c] = Math.max(maxSq[c] as number, (v + Math.abs(batchMean[c] as number)) ** 2);
  }
  const blend = (o: ArrayLike<number>, t: Float64Array) =>
    Float64Array.from(t, (v, c) => momentum * Math.abs(o[c] as number) + (1 - momentum) * v);
  return { mean: blend(old.mean, maxX), variance: blend(old.variance, maxSq) };
}

/** max |actual − expected| / scale: how far a (wrong) prediction misses, in the same units. */
export function missRatio(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  scale: ArrayLike<number>,
): number {
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const r = Math.abs((actual[i] as number) - (expected[i] as number)) / (scale[i] as number);
    worst = Math.max(worst, r);
  }
  return worst;
}
