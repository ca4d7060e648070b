/**
 * The pure-JS back end's fused-activation passes (see `backend-js.ts` for the plain ones):
 * one loop over memory each, in storage order with the channel's coefficients per run, `z` in
 * float64. They are separate loops rather than a branch inside the plain ones so that the plain
 * passes keep no per-element test or call.
 *
 * @module
 */
import { type Act, activate, derivative, type Fused } from "./activation.js";
import type { Dims, F32Buffer } from "./backend.js";
import { scratchFor, sumsOut, v } from "./js-scratch.js";

// The fused-activation passes: one loop over memory each, as the plain ones, in storage order
// with the channel's coefficients per run; `z` in float64. relu, relu6 and leakyRelu are
// written into the loops (a slope below 0 and a cap above), which is faster than a call per
// element; the others call `act` and `act′` from activation.ts (the float64 functions the
// tests' reference uses).

/**
 * relu, relu6, leakyRelu as `z ≤ 0: slope·z (0 for relu and relu6: a null slope); z ≥ cap:
 * cap`, or null. leakyRelu with a slope of 0 keeps it: slope·z and slope·dy, as PyTorch's
 * leaky_relu, so NaN from −∞·0 or from a NaN dy where z < 0, where relu gives 0.
 */
function piecewise(act: Act): { slope: number | null; cap: number } | null {
  if (act.kind === "relu") return { slope: null, cap: Infinity };
  if (act.kind === "relu6") return { slope: null, cap: 6 };
  if (act.kind === "leakyRelu") return { slope: act.negativeSlope, cap: Infinity };
  return null;
}

/**
 * `dy·act′(z)` of a piecewise activation (0, not dy·0, where the slope is null), decided on `z`
 * rounded to float32 as the forward stores it (> 0, < cap): so also for the z that round to 0
 * (|z| ≤ 2^−150) or to the cap, the side of the kink is the stored output's. An infinite cap
 * is none: relu′(+∞) = leakyRelu′(+∞) = 1 (eval mode, x = ±∞), as in PyTorch and the wasm
 * builds.
 */
const piecewiseGrad = (z: number, dy: number, slope: number | null, cap: number): number => {
  const stored = Math.fround(z);
  return stored > 0 ? (stored < cap || cap === Infinity ? dy : 0) : slope === null ? 0 : dy * slope;
};

export function scaleShiftAct(
  xb: F32Buffer,
  yb: F32Buffer,
  { outer, channels: C, inner }: Dims,
  centerb: F32Buffer,
  scaleb: F32Buffer,
  shiftb: F32Buffer,
  act: Act,
): void {
  const x = v(xb);
  const y = v(yb);
  const center = v(centerb);
  const scale = v(scaleb);
  const shift = v(shiftb);
  const pw = piecewise(act);
  let i = 0;
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < C; c++) {
      const m = center[c] as number;
      const a = scale[c] as number;
      const b = shift[c] as number;
      const end = i + inner;
      if (pw !== null) {
        const { slope, cap } = pw;
        for (; i < end; i++) {
          const z = ((x[i] as number) - m) * a + b;
          // The kernels' pmax/pmin and select: NaN stays NaN, relu(−0) is −0.
          // biome-ignore lint/complexity/useMathMinMax: Math.max(z, 0) would make −0 into 0
          y[i] = z > 0 ? Math.min(z, cap) : slope === null ? (z < 0 ? 0 : z) : z * slope;
        }
      } else {
        for (; i < end; i++) y[i] = activate(act, ((x[i] as number) - m) * a + b);
      }
    }
  }
}

export function gradSumsAct(
  xb: F32Buffer,
  dyb: F32Buffer,
  { outer, channels: C, inner }: Dims,
  meanb: F32Buffer,
  sumDyb: F32Buffer,
  sumDyXcb: F32Buffer,
  { act, scale: scaleb, shift: shiftb }: Fused,
): void {
  const x = v(xb);
  const dy = v(dyb);
  const mean = v(meanb);
  const scale = v(scaleb);
  const shift = v(shiftb);
  const acc = scratchFor(C);
  acc.fill(0, 0, 2 * C);
  const pw = piecewise(act);
  let i = 0;
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < C; c++) {
      const m = mean[c] as number;
      const a = scale[c] as number;
      const b = shift[c] as number;
      let s0 = 0;
      let s1 = 0;
      const end = i + inner;
      if (pw !== null) {
        const { slope, cap } = pw;
        for (; i < end; i++) {
          const xc = (x[i] as number) - m;
          const g = piecewiseGrad(xc * a + b, dy[i] as number, slope, cap);
          s0 += g;
          s1 += g * xc;
        }
      } else {
        for (; i < end; i++) {
          const xc = (x[i] as number) - m;
          const g = (dy[i] as number) * derivative(act, xc * a + b);
          s0 += g;
          s1 += g * xc;
        }
      }
      acc[c] = (acc[c] as number) + s0;
      acc[C + c] = (acc[C + c] as number) + s1;
    }
  }
  sumsOut(acc, C, sumDyb, sumDyXcb);
}

export function gradInputAct(
  xb: F32Buffer,
  dyb: F32Buffer,
  dxb: F32Buffer,
  { outer, channels: C, inner }: Dims,
  meanb: F32Buffer,
  kDyb: F32Buffer,
  kXcb: F32Buffer,
  kConstb: F32Buffer,
  { act, scale: scaleb, shift: shiftb }: Fused,
): void {
  const x = v(xb);
  const dy = v(dyb);
  const dx = v(dxb);
  const mean = v(meanb);
  const kDy = v(kDyb);
  const kXc = v(kXcb);
  const kConst = v(kConstb);
  const scale = v(scaleb);
  const shift = v(shiftb);
  const pw = piecewise(act);
  let i = 0;
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < C; c++) {
      const m = mean[c] as number;
      const a = scale[c] as number;
      const b = shift[c] as number;
      const p = kDy[c] as number;
      const q = kXc[c] as number;
      const k = kConst[c] as number;
      const end = i + inner;
      if (pw !== null) {
        const { slope, cap } = pw;
        for (; i < end; i++) {
          const xc = (x[i] as number) - m;
          const g = piecewiseGrad(xc * a + b, dy[i] as number, slope, cap);
          dx[i] = p * g + q * xc + k;
        }
      } else {
        for (; i < end; i++) {
          const xc = (x[i] as number) - m;
          const g = (dy[i] as number) * derivative(act, xc * a + b);
          dx[i] = p * g + q * xc + k;
        }
      }
    }
  }
}
