/**
 * The plain JS loop: the simplest correct batch norm one would write by hand, on typed arrays
 * allocated once, in the natural loop order of the layout. Channels-first: channel by channel,
 * its parameters and sums in local variables, over its runs of `inner` values. Channels-last:
 * row by row, each value with its channel's entry of the parameter and sum arrays. Statistics
 * are two-pass (mean, then Σ(x − mean)²) in JS numbers (float64). It is the baseline of the
 * targets ("SIMD ≥ 8× a plain JS loop"), distinct from the tuned pure-JS back end.
 *
 * @module
 */
import type { Runner } from "./contestant.js";
import { EPS } from "./plan.js";
import type { Inputs } from "./rig.js";

type F32 = Float32Array;
type F64 = Float64Array;

/** A tensor as `[outer, channels, inner]` (channels-last: `inner` is 1). */
export interface PlainDims {
  outer: number;
  channels: number;
  inner: number;
}

// (`as number`: the project's tsconfig types every indexed read as possibly undefined.)

export function moments(x: F32, d: PlainDims, mean: F64, variance: F64): void {
  const { outer, channels: C, inner } = d;
  const count = outer * inner;
  mean.fill(0);
  variance.fill(0);
  if (inner === 1) {
    for (let i = 0; i < x.length; i += C)
      for (let c = 0; c < C; c++) mean[c] = (mean[c] as number) + (x[i + c] as number);
    for (let c = 0; c < C; c++) mean[c] = (mean[c] as number) / count;
    for (let i = 0; i < x.length; i += C)
      for (let c = 0; c < C; c++)
        variance[c] = (variance[c] as number) + ((x[i + c] as number) - (mean[c] as number)) ** 2;
  } else {
    for (let c = 0; c < C; c++) {
      let sum = 0;
      for (let o = 0; o < outer; o++)
        for (let i = (o * C + c) * inner, end = i + inner; i < end; i++) sum += x[i] as number;
      const m = sum / count;
      let squares = 0;
      for (let o = 0; o < outer; o++)
        for (let i = (o * C + c) * inner, end = i + inner; i < end; i++)
          squares += ((x[i] as number) - m) ** 2;
      mean[c] = m;
      variance[c] = squares;
    }
  }
  for (let c = 0; c < C; c++) variance[c] = (variance[c] as number) / count;
}

/** `y = (x − center)·scale + shift` per channel. */
export function scaleShift(x: F32, y: F32, d: PlainDims, center: F64, scale: F64, shift: F64) {
  const { outer, channels: C, inner } = d;
  if (inner === 1) {
    for (let i = 0; i < x.length; i += C)
      for (let c = 0; c < C; c++)
        y[i + c] =
          ((x[i + c] as number) - (center[c] as number)) * (scale[c] as number) +
          (shift[c] as number);
  } else {
    for (let c = 0; c < C; c++) {
      const m = center[c] as number;
      const a = scale[c] as number;
      const b = shift[c] as number;
      for (let o = 0; o < outer; o++)
        for (let i = (o * C + c) * inner, end = i + inner; i < end; i++)
          y[i] = ((x[i] as number) - m) * a + b;
    }
  }
}

/** Per-channel `Σdy` and `Σdy·(x − mean)`. */
export function gradSums(x: F32, dy: F32, d: PlainDims, mean: F64, sumDy: F64, sumDyXc: F64) {
  const { outer, channels: C, inner } = d;
  sumDy.fill(0);
  sumDyXc.fill(0);
  if (inner === 1) {
    for (let i = 0; i < x.length; i += C)
      for (let c = 0; c < C; c++) {
        sumDy[c] = (sumDy[c] as number) + (dy[i + c] as number);
        sumDyXc[c] =
          (sumDyXc[c] as number) +
          (dy[i + c] as number) * ((x[i + c] as number) - (mean[c] as number));
      }
  } else {
    for (let c = 0; c < C; c++) {
      const m = mean[c] as number;
      let g = 0;
      let gx = 0;
      for (let o = 0; o < outer; o++)
        for (let i = (o * C + c) * inner, end = i + inner; i < end; i++) {
          g += dy[i] as number;
          gx += (dy[i] as number) * ((x[i] as number) - m);
        }
      sumDy[c] = g;
      sumDyXc[c] = gx;
    }
  }
}

/** `dx = kDy·dy + kXc·(x − mean) + kConst` per channel. */
export function gradInput(
  x: F32,
  dy: F32,
  dx: F32,
  d: PlainDims,
  mean: F64,
  kDy: F64,
  kXc: F64,
  kConst: F64,
) {
  const { outer, channels: C, inner } = d;
  if (inner === 1) {
    for (let i = 0; i < x.length; i += C)
      for (let c = 0; c < C; c++)
        dx[i + c] =
          (kDy[c] as number) * (dy[i + c] as number) +
          (kXc[c] as number) * ((x[i + c] as number) - (mean[c] as number)) +
          (kConst[c] as number);
  } else {
    for (let c = 0; c < C; c++) {
      const m = mean[c] as number;
      const a = kDy[c] as number;
      const b = kXc[c] as number;
      const k = kConst[c] as number;
      for (let o = 0; o < outer; o++)
        for (let i = (o * C + c) * inner, end = i + inner; i < end; i++)
          dx[i] = a * (dy[i] as number) + b * ((x[i] as number) - m) + k;
    }
  }
}

/** The data's shape as `[outer, channels, inner]`. */
export function plainDims({ layout, shape, channels, n }: Inputs): PlainDims {
  const batch = shape[0] as number;
  return layout === "NCHW" && shape.length > 2
    ? { outer: batch, channels, inner: n / (batch * channels) }
    : { outer: n / channels, channels, inner: 1 };
}

/** The four ops on preallocated arrays, with the module's per-channel work in float64. */
export function plainRunner(input: Inputs): Runner {
  const { x, dy, state, channels: C, n } = input;
  const dims = plainDims(input);
  const count = dims.outer * dims.inner;
  const f64 = () => new Float64Array(C);
  const [weight, bias, runningMean, runningVar] = [f64(), f64(), f64(), f64()];
  const [mean, variance, scale] = [f64(), f64(), f64()];
  const [sumDy, sumDyXc, kDy, kXc, kConst] = [f64(), f64(), f64(), f64(), f64()];
  const y = new Float32Array(n);
  const dx = new Float32Array(n);
  const dWeight = new Float32Array(C);
  const dBias = new Float32Array(C);
  let training = true;
  return {
    mode(t) {
      training = t;
      weight.set(state.weight as Float32Array);
      bias.set(state.bias as Float32Array);
      runningMean.set(state.running_mean as Float32Array);
      runningVar.set(state.running_var as Float32Array);
    },
    forward() {
      if (training) {
        moments(x, dims, mean, variance);
        for (let c = 0; c < C; c++) {
          const m = mean[c] as number;
          const v = variance[c] as number;
          runningMean[c] = 0.9 * (runningMean[c] as number) + 0.1 * m;
          runningVar[c] = 0.9 * (runningVar[c] as number) + (0.1 * v * count) / (count - 1);
        }
      } else {
        mean.set(runningMean);
        variance.set(runningVar);
      }
      for (let c = 0; c < C; c++)
        scale[c] = (weight[c] as number) / Math.sqrt((variance[c] as number) + EPS);
      scaleShift(x, y, dims, mean, scale, bias);
    },
    backward() {
      gradSums(x, dy, dims, mean, sumDy, sumDyXc);
      for (let c = 0; c < C; c++) {
        const invstd = 1 / Math.sqrt((variance[c] as number) + EPS);
        const k = (weight[c] as number) * invstd;
        const g = sumDy[c] as number;
        const gx = sumDyXc[c] as number;
        kDy[c] = k;
        kXc[c] = (-k * invstd * invstd * gx) / count;
        kConst[c] = (-k * g) / count;
        dWeight[c] = gx * invstd;
        dBias[c] = g;
      }
      gradInput(x, dy, dx, dims, mean, kDy, kXc, kConst);
    },
    read: (wantY, grads) => ({
      ...(wantY && { y: y.slice() }),
      ...(grads && { dx: dx.slice(), dWeight: dWeight.slice(), dBias: dBias.slice() }),
    }),
  };
}
