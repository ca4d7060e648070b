/**
 * An independent float64 reference of batch normalization, written from the math of
 * docs/design.md, Semantics (PyTorch's) and the backprop formulas of Ioffe & Szegedy (2015), not
 * from the kernels. It is deliberately naive: every element's channel comes from its
 * row-major multi-index, statistics are two-pass sums in float64 over explicit loops, and the
 * backward pass follows the paper's chain rule step by step (∂ℓ/∂x̂ → ∂ℓ/∂σ² → ∂ℓ/∂μ → ∂ℓ/∂x)
 * instead of the library's fused closed form.
 */

export type RefLayout = "NCHW" | "NHWC";

export interface RefOptions {
  eps?: number;
  /** Weight of the new batch statistic; `null` = cumulative average (1 / numBatchesTracked). */
  momentum?: number | null;
  affine?: boolean;
  trackRunningStats?: boolean;
  layout?: RefLayout;
}

/**
 * The channel of every element of a row-major tensor of `shape`: the multi-index component on
 * the channel axis (1 for NCHW `[N, C, ...spatial]`, the last for NHWC `[N, ...spatial, C]`;
 * both are axis 1 for 2-D `[N, C]`).
 */
export function channelOf(shape: readonly number[], layout: RefLayout): Int32Array {
  if (shape.length < 2) throw new RangeError("reference: rank must be ≥ 2");
  const axis = layout === "NCHW" ? 1 : shape.length - 1;
  const length = shape.reduce((p, d) => p * d, 1);
  const out = new Int32Array(length);
  const index = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < length; i++) {
    out[i] = index[axis] as number;
    advance(index, shape);
  }
  return out;
}

/** The index of the `k`-th element (from 0, in storage order) of channel `c`. */
export function nth(chan: Int32Array, c: number, k: number): number {
  let seen = 0;
  for (let i = 0; i < chan.length; i++) if (chan[i] === c && seen++ === k) return i;
  throw new Error("no such element");
}

/** Steps a row-major multi-index to the next element like an odometer, last axis fastest. */
export function advance(index: number[], shape: readonly number[]): void {
  for (let a = shape.length - 1; a >= 0; a--) {
    index[a] = (index[a] as number) + 1;
    if ((index[a] as number) < (shape[a] as number)) return;
    index[a] = 0;
  }
}

/** Per-channel statistics of a batch, in float64. */
export interface Stats {
  mean: Float64Array;
  /** Biased (population) variance: Σ(x − mean)² / n. */
  variance: Float64Array;
  /** Values per channel. */
  count: number;
}

/** Two-pass mean and biased variance per channel. */
export function batchStats(x: ArrayLike<number>, chan: Int32Array, C: number): Stats {
  const sum = new Float64Array(C);
  const count = new Float64Array(C);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    sum[c] = (sum[c] as number) + (x[i] as number);
    count[c] = (count[c] as number) + 1;
  }
  const mean = new Float64Array(C);
  for (let c = 0; c < C; c++) mean[c] = (sum[c] as number) / (count[c] as number);
  const sq = new Float64Array(C);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const d = (x[i] as number) - (mean[c] as number);
    sq[c] = (sq[c] as number) + d * d;
  }
  const variance = new Float64Array(C);
  for (let c = 0; c < C; c++) variance[c] = (sq[c] as number) / (count[c] as number);
  return { mean, variance, count: x.length / C };
}

/** `y = weight·(x − mean)/sqrt(var + eps) + bias`, elementwise with per-channel parameters. */
export function normalize(
  x: ArrayLike<number>,
  chan: Int32Array,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  eps: number,
  weight: ArrayLike<number> | null,
  bias: ArrayLike<number> | null,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const xhat =
      ((x[i] as number) - (mean[c] as number)) / Math.sqrt((variance[c] as number) + eps);
    y[i] =
      (weight === null ? 1 : (weight[c] as number)) * xhat +
      (bias === null ? 0 : (bias[c] as number));
  }
  return y;
}

export interface RefGradients {
  dx: Float64Array;
  dWeight: Float64Array;
  dBias: Float64Array;
}

/**
 * Gradients when `mean` and `variance` are the batch's own statistics (training forward), by
 * the chain rule of Ioffe & Szegedy (2015), Algorithm 1's backward:
 *   ∂ℓ/∂x̂ᵢ = ∂ℓ/∂yᵢ · γ
 *   ∂ℓ/∂σ² = Σᵢ ∂ℓ/∂x̂ᵢ · (xᵢ − μ) · (−½)(σ² + ε)^(−3/2)
 *   ∂ℓ/∂μ  = Σᵢ ∂ℓ/∂x̂ᵢ · (−1/√(σ² + ε)) + ∂ℓ/∂σ² · Σᵢ −2(xᵢ − μ) / n
 *   ∂ℓ/∂xᵢ = ∂ℓ/∂x̂ᵢ / √(σ² + ε) + ∂ℓ/∂σ² · 2(xᵢ − μ)/n + ∂ℓ/∂μ / n
 *   ∂ℓ/∂γ  = Σᵢ ∂ℓ/∂yᵢ · x̂ᵢ,   ∂ℓ/∂β = Σᵢ ∂ℓ/∂yᵢ
 */
export function backwardBatch(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  chan: Int32Array,
  stats: Stats,
  eps: number,
  weight: ArrayLike<number> | null,
): RefGradients {
  const C = stats.mean.length;
  const n = stats.count;
  const { mean, variance } = stats;
  const dVar = new Float64Array(C);
  const dMeanA = new Float64Array(C);
  const sumXc = new Float64Array(C);
  const dWeight = new Float64Array(C);
  const dBias = new Float64Array(C);
  const g = (c: number) => (weight === null ? 1 : (weight[c] as number));
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const xc = (x[i] as number) - (mean[c] as number);
    const v = (variance[c] as number) + eps;
    const dxhat = (dy[i] as number) * g(c);
    dVar[c] = (dVar[c] as number) + dxhat * xc * -0.5 * v ** -1.5;
    dMeanA[c] = (dMeanA[c] as number) - dxhat / Math.sqrt(v);
    sumXc[c] = (sumXc[c] as number) - 2 * xc;
    dWeight[c] = (dWeight[c] as number) + (dy[i] as number) * (xc / Math.sqrt(v));
    dBias[c] = (dBias[c] as number) + (dy[i] as number);
  }
  const dMean = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    dMean[c] = (dMeanA[c] as number) + ((dVar[c] as number) * (sumXc[c] as number)) / n;
  }
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const xc = (x[i] as number) - (mean[c] as number);
    const v = (variance[c] as number) + eps;
    const dxhat = (dy[i] as number) * g(c);
    dx[i] = dxhat / Math.sqrt(v) + ((dVar[c] as number) * 2 * xc) / n + (dMean[c] as number) / n;
  }
  return { dx, dWeight, dBias };
}

/**
 * Gradients when `mean` and `variance` are constants (inference with running statistics):
 * y is affine in x, so ∂ℓ/∂xᵢ = ∂ℓ/∂yᵢ · γ/√(σ² + ε); ∂ℓ/∂γ = Σ ∂ℓ/∂yᵢ · x̂ᵢ; ∂ℓ/∂β = Σ ∂ℓ/∂yᵢ.
 */
export function backwardConst(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  chan: Int32Array,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  eps: number,
  weight: ArrayLike<number> | null,
): RefGradients {
  const C = mean.length;
  const dx = new Float64Array(x.length);
  const dWeight = new Float64Array(C);
  const dBias = new Float64Array(C);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const s = 1 / Math.sqrt((variance[c] as number) + eps);
    const d = dy[i] as number;
    dx[i] = d * (weight === null ? 1 : (weight[c] as number)) * s;
    dWeight[c] = (dWeight[c] as number) + d * ((x[i] as number) - (mean[c] as number)) * s;
    dBias[c] = (dBias[c] as number) + d;
  }
  return { dx, dWeight, dBias };
}

/** What a forward saved for backward. */
interface RefSaved {
  x: Float64Array;
  chan: Int32Array;
  mean: Float64Array;
  variance: Float64Array;
  count: number;
  batch: boolean;
}

/** A stateful float64 BatchNorm with PyTorch's semantics, mirroring the library's API. */
export class RefBatchNorm {
  readonly C: number;
  readonly eps: number;
  readonly momentum: number | null;
  readonly affine: boolean;
  readonly trackRunningStats: boolean;
  readonly layout: RefLayout;
  readonly weight: Float64Array | null;
  readonly bias: Float64Array | null;
  readonly runningMean: Float64Array | null;
  readonly runningVar: Float64Array | null;
  numBatchesTracked = 0;
  training = true;
  /** Statistics used by the last forward (batch or running), for tolerance scales. */
  lastMean: Float64Array | undefined;
  lastVar: Float64Array | undefined;
  #saved: RefSaved | undefined;

  constructor(C: number, options: RefOptions = {}) {
    this.C = C;
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum === undefined ? 0.1 : options.momentum;
    this.affine = options.affine ?? true;
    this.trackRunningStats = options.trackRunningStats ?? true;
    this.layout = options.layout ?? "NCHW";
    this.weight = this.affine ? new Float64Array(C).fill(1) : null;
    this.bias = this.affine ? new Float64Array(C) : null;
    this.runningMean = this.trackRunningStats ? new Float64Array(C) : null;
    this.runningVar = this.trackRunningStats ? new Float64Array(C).fill(1) : null;
  }

  train(mode = true): this {
    this.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  forward(x: ArrayLike<number>, shape: readonly number[]): Float64Array {
    const chan = channelOf(shape, this.layout);
    const xs = Float64Array.from(x);
    let mean: Float64Array;
    let variance: Float64Array;
    let count = xs.length / this.C;
    const batch = this.training || !this.trackRunningStats;
    if (batch) {
      const s = batchStats(xs, chan, this.C);
      mean = s.mean;
      variance = s.variance;
      count = s.count;
      if (this.training && this.trackRunningStats) {
        const rm = this.runningMean as Float64Array;
        const rv = this.runningVar as Float64Array;
        this.numBatchesTracked += 1;
        const m = this.momentum === null ? 1 / this.numBatchesTracked : this.momentum;
        for (let c = 0; c < this.C; c++) {
          const unbiased = ((variance[c] as number) * count) / (count - 1);
          rm[c] = (1 - m) * (rm[c] as number) + m * (mean[c] as number);
          rv[c] = (1 - m) * (rv[c] as number) + m * unbiased;
        }
      }
    } else {
      mean = Float64Array.from(this.runningMean as Float64Array);
      variance = Float64Array.from(this.runningVar as Float64Array);
    }
    this.lastMean = mean;
    this.lastVar = variance;
    this.#saved = { x: xs, chan, mean, variance, count, batch };
    return normalize(xs, chan, mean, variance, this.eps, this.weight, this.bias);
  }

  backward(dy: ArrayLike<number>): RefGradients {
    const s = this.#saved;
    if (s === undefined) throw new Error("reference: backward without forward");
    this.#saved = undefined;
    return s.batch
      ? backwardBatch(
          s.x,
          dy,
          s.chan,
          { mean: s.mean, variance: s.variance, count: s.count },
          this.eps,
          this.weight,
        )
      : backwardConst(s.x, dy, s.chan, s.mean, s.variance, this.eps, this.weight);
  }
}
