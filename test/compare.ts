/**
 * Comparison helpers: element-wise closeness relative to a per-element error scale, with a
 * failure message that names the quantity, the worst element and the tolerance.
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

/** Error scales of one forward + backward (see test/conformance.test.ts for the derivation). */
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
 * The magnitudes of the terms that float32 arithmetic adds up when computing y, dx, dWeight and
 * dBias, per channel (expanded to elements for y and dx): with a = |γ|/σ̂, μ and σ̂ the statistics
 * the forward used, x̂ = (x − μ)/σ̂,
 * - y: a·(max|x − μ| + |μ|) + |β|;
 * - dx: a·max|dy|·(1 + max|x̂| + |μ|/σ̂) after a training forward, a·max|dy| after inference;
 * - dWeight: Σ|dy|·(|x̂| + |μ|/σ̂); dBias: Σ|dy|.
 */
export function errorScales(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  chan: Int32Array,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  eps: number,
  weight: ArrayLike<number> | null,
  bias: ArrayLike<number> | null,
  batchStats: boolean,
): ErrorScales {
  const C = mean.length;
  const invstd = Float64Array.from(variance, (v) => 1 / Math.sqrt(v + eps));
  const xc = new Float64Array(x.length);
  const xhat = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    xc[i] = (x[i] as number) - (mean[c] as number);
    xhat[i] = (xc[i] as number) * (invstd[c] as number);
  }
  const maxXc = maxAbsPerChannel(xc, chan, C);
  const maxXhat = maxAbsPerChannel(xhat, chan, C);
  const maxDy = maxAbsPerChannel(dy, chan, C);
  const y = new Float64Array(C);
  const dx = new Float64Array(C);
  const dWeight = new Float64Array(C);
  const dBias = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    const s = invstd[c] as number;
    const a = Math.abs(weight === null ? 1 : (weight[c] as number)) * s;
    const mu = Math.abs(mean[c] as number);
    y[c] = a * ((maxXc[c] as number) + mu) + Math.abs(bias === null ? 0 : (bias[c] as number));
    dx[c] = batchStats
      ? a * (maxDy[c] as number) * (1 + (maxXhat[c] as number) + mu * s)
      : a * (maxDy[c] as number);
  }
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const ady = Math.abs(dy[i] as number);
    const mu = Math.abs(mean[c] as number) * (invstd[c] as number);
    dWeight[c] = (dWeight[c] as number) + ady * (Math.abs(xhat[i] as number) + mu);
    dBias[c] = (dBias[c] as number) + ady;
  }
  return { y: perElement(y, chan), dx: perElement(dx, chan), dWeight, dBias };
}

/**
 * Error scales of backward's outputs. dx = weight·invstd·(dy − mean(dy) − x̂·mean(dy·x̂))
 * cancels, so its scale is |weight|·invstd·max|dy|·(1 + max|x̂|) per channel, times the
 * magnification (|x| + |mean|)·invstd of the rounding in x − mean (returned per element); the
 * sums dWeight and dBias are scaled by the sums of the magnitudes of their terms.
 */
export function gradientScales(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  weight: ArrayLike<number> | null,
  eps: number,
  chan: Int32Array,
  C: number,
): { dx: Float64Array; dWeight: Float64Array; dBias: Float64Array } {
  const maxDy = new Float64Array(C);
  const maxXhat = new Float64Array(C);
  const maxCond = new Float64Array(C);
  const sumAbsDy = new Float64Array(C);
  const sumAbsDyXhat = new Float64Array(C);
  const invstd = Float64Array.from(
    { length: C },
    (_, c) => 1 / Math.sqrt((variance[c] as number) + eps),
  );
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    const s = invstd[c] as number;
    const xhat = Math.abs((x[i] as number) - (mean[c] as number)) * s;
    const cond = (Math.abs(x[i] as number) + Math.abs(mean[c] as number)) * s;
    const d = Math.abs(dy[i] as number);
    maxDy[c] = Math.max(maxDy[c] as number, d);
    maxXhat[c] = Math.max(maxXhat[c] as number, xhat);
    maxCond[c] = Math.max(maxCond[c] as number, cond);
    sumAbsDy[c] = (sumAbsDy[c] as number) + d;
    sumAbsDyXhat[c] = (sumAbsDyXhat[c] as number) + d * (xhat + cond);
  }
  const dxScale = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    dxScale[c] =
      Math.abs(weight?.[c] ?? 1) *
        (invstd[c] as number) *
        (maxDy[c] as number) *
        (1 + (maxXhat[c] as number)) *
        (1 + (maxCond[c] as number)) +
      1e-30;
  }
  const floor = (v: Float64Array) => v.map((e) => e + 1e-30);
  return { dx: perElement(dxScale, chan), dWeight: floor(sumAbsDyXhat), dBias: floor(sumAbsDy) };
}
