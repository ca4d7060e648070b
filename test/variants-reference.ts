/**
 * An independent float64 reference of the training variants, written from their papers'
 * formulas rather than from the library's code (which folds them into per-channel scale and
 * shift coefficients):
 *
 * - Batch Renormalization (Ioffe 2017, Algorithm 1): `σ_B = √(σ²_B + ε)`, `σ = √(runningVar + ε)`,
 *   `r = clip(σ_B/σ, 1/rMax, rMax)`, `d = clip((μ_B − runningMean)/σ, −dMax, dMax)`,
 *   `y = γ·((x − μ_B)/σ_B · r + d) + β`, with r and d held constant by the backward (the paper's
 *   stop_gradient): by the chain rule ∂ℓ/∂x̂ = ∂ℓ/∂y·γ·r, so dx is test/reference.ts's
 *   backwardBatch with the weight γ·r, and ∂ℓ/∂γ = Σ∂ℓ/∂y·(x̂·r + d).
 * - Ghost Batch Norm: the tensor cut along its first axis into slices of `virtualBatchSize`
 *   entries (built here by slicing the shape, not from any memory-layout argument), each
 *   normalized (and differentiated) as a batch of its own; the running statistics move toward
 *   the average of the slices' means and of their unbiased variances.
 * - Population statistics (Ioffe & Szegedy 2015, Algorithm 2): E[x] = mean of the batch means,
 *   Var[x] = mean of the unbiased batch variances m/(m − 1)·σ²_B.
 */
import {
  backwardBatch,
  batchStats,
  channelOf,
  type RefGradients,
  type RefLayout,
  type Stats,
} from "./reference.js";

export interface Limits {
  rMax: number;
  dMax: number;
}

/** One ghost batch of a forward, as its backward needs it. */
export interface RefPart {
  x: Float64Array;
  chan: Int32Array;
  stats: Stats;
  r: Float64Array;
  d: Float64Array;
}

export interface RefVariantForward {
  y: Float64Array;
  parts: RefPart[];
  /** Average over ghost batches of the means and of the unbiased variances. */
  mean: Float64Array;
  unbiasedVariance: Float64Array;
}

const clip = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** r and d of Batch Renormalization from a batch's statistics and the running ones. */
export function renormFactors(
  stats: Stats,
  runningMean: ArrayLike<number>,
  runningVar: ArrayLike<number>,
  eps: number,
  limits: Limits,
): { r: Float64Array; d: Float64Array } {
  const C = stats.mean.length;
  const r = new Float64Array(C);
  const d = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    const sigmaB = Math.sqrt((stats.variance[c] as number) + eps);
    const sigma = Math.sqrt((runningVar[c] as number) + eps);
    r[c] = clip(sigmaB / sigma, 1 / limits.rMax, limits.rMax);
    const dRaw = ((stats.mean[c] as number) - (runningMean[c] as number)) / sigma;
    d[c] = clip(dRaw, -limits.dMax, limits.dMax);
  }
  return { r, d };
}

/**
 * A training forward: each slice of `virtualBatchSize` entries of the first axis (the whole
 * batch when null) normalized with its own statistics, renormalized against `running` when
 * `limits` is given (or with `fixed` r and d, for finite differences that hold them constant).
 */
export function variantForward(
  x: ArrayLike<number>,
  shape: readonly number[],
  layout: RefLayout,
  weight: ArrayLike<number> | null,
  bias: ArrayLike<number> | null,
  o: {
    eps: number;
    virtualBatchSize: number | null;
    limits: Limits | null;
    running?: { mean: ArrayLike<number>; variance: ArrayLike<number> };
    fixed?: { r: Float64Array; d: Float64Array }[];
  },
): RefVariantForward {
  const k = o.virtualBatchSize ?? (shape[0] as number);
  const ghosts = (shape[0] as number) / k;
  if (!Number.isInteger(ghosts)) throw new Error("reference: N is not a multiple of k");
  const subShape = [k, ...shape.slice(1)];
  const chan = channelOf(subShape, layout);
  const L = chan.length;
  const C = (layout === "NCHW" ? shape[1] : shape[shape.length - 1]) as number;
  const y = new Float64Array(x.length);
  const parts: RefPart[] = [];
  const mean = new Float64Array(C);
  const unbiasedVariance = new Float64Array(C);
  for (let g = 0; g < ghosts; g++) {
    const xs = Float64Array.from({ length: L }, (_, i) => x[g * L + i] as number);
    const stats = batchStats(xs, chan, C);
    let rd: { r: Float64Array; d: Float64Array } = {
      r: new Float64Array(C).fill(1),
      d: new Float64Array(C),
    };
    if (o.fixed !== undefined) rd = o.fixed[g] as { r: Float64Array; d: Float64Array };
    else if (o.limits !== null) {
      const running = o.running as NonNullable<typeof o.running>;
      rd = renormFactors(stats, running.mean, running.variance, o.eps, o.limits);
    }
    for (let i = 0; i < L; i++) {
      const c = chan[i] as number;
      const xhat =
        ((xs[i] as number) - (stats.mean[c] as number)) /
        Math.sqrt((stats.variance[c] as number) + o.eps);
      const w = weight === null ? 1 : (weight[c] as number);
      const b = bias === null ? 0 : (bias[c] as number);
      y[g * L + i] = w * (xhat * (rd.r[c] as number) + (rd.d[c] as number)) + b;
    }
    const m = stats.count;
    for (let c = 0; c < C; c++) {
      mean[c] = (mean[c] as number) + (stats.mean[c] as number) / ghosts;
      unbiasedVariance[c] =
        (unbiasedVariance[c] as number) + ((stats.variance[c] as number) * m) / (m - 1) / ghosts;
    }
    parts.push({ x: xs, chan, stats, ...rd });
  }
  return { y, parts, mean, unbiasedVariance };
}

/** Gradients of {@link variantForward}'s output, slice by slice, with r and d constant. */
export function variantBackward(
  f: RefVariantForward,
  dy: ArrayLike<number>,
  weight: ArrayLike<number> | null,
  eps: number,
): RefGradients {
  const C = f.mean.length;
  const dx = new Float64Array(dy.length);
  const dWeight = new Float64Array(C);
  const dBias = new Float64Array(C);
  let at = 0;
  for (const p of f.parts) {
    const L = p.x.length;
    const dys = Float64Array.from({ length: L }, (_, i) => dy[at + i] as number);
    const wr = Float64Array.from(
      { length: C },
      (_, c) => (weight === null ? 1 : (weight[c] as number)) * (p.r[c] as number),
    );
    dx.set(backwardBatch(p.x, dys, p.chan, p.stats, eps, wr).dx, at);
    for (let i = 0; i < L; i++) {
      const c = p.chan[i] as number;
      const xhat =
        ((p.x[i] as number) - (p.stats.mean[c] as number)) /
        Math.sqrt((p.stats.variance[c] as number) + eps);
      const g = dys[i] as number;
      dWeight[c] = (dWeight[c] as number) + g * (xhat * (p.r[c] as number) + (p.d[c] as number));
      dBias[c] = (dBias[c] as number) + g;
    }
    at += L;
  }
  return { dx, dWeight, dBias };
}

/** `running ← (1 − m)·running + m·batch` with the forward's averaged statistics, in place. */
export function updateRunning(
  running: { mean: Float64Array; variance: Float64Array },
  f: RefVariantForward,
  m: number,
): void {
  for (let c = 0; c < running.mean.length; c++) {
    running.mean[c] = (1 - m) * (running.mean[c] as number) + m * (f.mean[c] as number);
    running.variance[c] =
      (1 - m) * (running.variance[c] as number) + m * (f.unbiasedVariance[c] as number);
  }
}

/** Algorithm 2's population statistics over `batches`, each counting once. */
export function populationStats(
  batches: readonly { x: ArrayLike<number>; shape: readonly number[] }[],
  layout: RefLayout,
  C: number,
): { mean: Float64Array; variance: Float64Array } {
  const mean = new Float64Array(C);
  const variance = new Float64Array(C);
  for (const b of batches) {
    const s = batchStats(Float64Array.from(b.x), channelOf(b.shape, layout), C);
    for (let c = 0; c < C; c++) {
      mean[c] = (mean[c] as number) + (s.mean[c] as number) / batches.length;
      const unbiased = ((s.variance[c] as number) * s.count) / (s.count - 1);
      variance[c] = (variance[c] as number) + unbiased / batches.length;
    }
  }
  return { mean, variance };
}
