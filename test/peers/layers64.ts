/**
 * Direct float64 Linear and convolution layers for the fold tests, written from their
 * definitions (explicit loops, no im2col), plus the weight-layout permutations between PyTorch's
 * `[O, I, kH, kW]` and the other layouts the folds accept.
 */
import { advance } from "../reference.js";

/** y[n, o] = Σᵢ x[n, i]·W[o, i] + b[o], with W `[out, in]`. */
export function linear64(
  x: ArrayLike<number>,
  N: number,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  out: number,
): Float64Array {
  const inF = weight.length / out;
  const y = new Float64Array(N * out);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < out; o++) {
      let s = bias === null ? 0 : (bias[o] as number);
      for (let i = 0; i < inF; i++)
        s += (x[n * inF + i] as number) * (weight[o * inF + i] as number);
      y[n * out + o] = s;
    }
  }
  return y;
}

/** Shape of a 2-D convolution: input `[N, I, H, W]`, weight `[O, I/groups, kH, kW]`. */
export interface ConvShape {
  N: number;
  I: number;
  H: number;
  W: number;
  O: number;
  kH: number;
  kW: number;
  groups: number;
}

/** y = conv(x, W) + b, NCHW, stride 1, no padding, grouped: output `[N, O, H−kH+1, W−kW+1]`. */
export function conv64(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  s: ConvShape,
): Float64Array {
  const oH = s.H - s.kH + 1;
  const oW = s.W - s.kW + 1;
  const Ig = s.I / s.groups;
  const Og = s.O / s.groups;
  const y = new Float64Array(s.N * s.O * oH * oW);
  for (let n = 0; n < s.N; n++) {
    for (let o = 0; o < s.O; o++) {
      const g = Math.floor(o / Og);
      for (let r = 0; r < oH; r++) {
        for (let c = 0; c < oW; c++) {
          let sum = bias === null ? 0 : (bias[o] as number);
          for (let i = 0; i < Ig; i++) {
            const ci = g * Ig + i;
            for (let u = 0; u < s.kH; u++) {
              for (let v = 0; v < s.kW; v++) {
                const xv = x[((n * s.I + ci) * s.H + r + u) * s.W + c + v] as number;
                sum += xv * (weight[((o * Ig + i) * s.kH + u) * s.kW + v] as number);
              }
            }
          }
          y[((n * s.O + o) * oH + r) * oW + c] = sum;
        }
      }
    }
  }
  return y;
}

/** Output shape of {@link conv64}. */
export function convOutShape(s: ConvShape): number[] {
  return [s.N, s.O, s.H - s.kH + 1, s.W - s.kW + 1];
}

/**
 * Permutes a row-major tensor: `out` has axes `perm` of `a` (`out.shape[k] = shape[perm[k]]`),
 * like numpy's `transpose(a, perm)`.
 */
export function permute(
  a: ArrayLike<number>,
  shape: readonly number[],
  perm: readonly number[],
): Float32Array {
  const outShape = perm.map((p) => shape[p] as number);
  const strides = shape.map((_, k) => shape.slice(k + 1).reduce((p, d) => p * d, 1));
  const out = new Float32Array(a.length);
  const idx = new Array<number>(outShape.length).fill(0);
  for (let j = 0; j < out.length; j++) {
    let src = 0;
    for (let k = 0; k < perm.length; k++)
      src += (idx[k] as number) * (strides[perm[k] as number] as number);
    out[j] = a[src] as number;
    advance(idx, outShape);
  }
  return out;
}

/** Axis permutations from OIHW to each layout, and back. */
export const FROM_OIHW = { OIHW: [0, 1, 2, 3], OHWI: [0, 2, 3, 1], HWIO: [2, 3, 1, 0] } as const;
export const TO_OIHW = { OIHW: [0, 1, 2, 3], OHWI: [0, 3, 1, 2], HWIO: [3, 2, 0, 1] } as const;
