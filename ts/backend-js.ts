/**
 * The pure-JS back end: the same passes as the wasm kernels, in plain TypeScript. It is the
 * fallback where WebAssembly is missing and the back end the benchmarks hold against a plain
 * hand-written loop, so it is written for honest speed: typed arrays, storage-order loops, no
 * allocation per call, and the channels-last layout (`inner === 1`) handled four rows at a time,
 * so that each channel's parameters and sums are loaded and stored once per four values.
 * JavaScript numbers are float64, so sums need no blocking to stay accurate; the statistics
 * stay shifted sums (see `moments`).
 *
 * @module
 */

import type { Backend, F32Buffer, GradSumsLeft } from "./backend.js";
import { gradInputAct, gradSumsAct, scaleShiftAct } from "./backend-js-fused.js";
import { scratchFor, sumsOut, v } from "./js-scratch.js";

class JsBuffer implements F32Buffer {
  #data: Float32Array | undefined;
  constructor(data: Float32Array) {
    this.#data = data;
  }
  get length(): number {
    return this.view().length;
  }
  view(): Float32Array {
    if (this.#data === undefined) throw new Error("wasm-batchnorm: buffer used after free()");
    return this.#data;
  }
  free(): void {
    this.#data = undefined;
  }
}

/**
 * Floats `[offset, offset + length)` of another buffer, viewed afresh on each access so that
 * a freed base is refused rather than read; freeing the view frees nothing.
 */
class JsSubrange implements F32Buffer {
  readonly #base: F32Buffer;
  readonly #offset: number;
  readonly length: number;
  constructor(base: F32Buffer, offset: number, length: number) {
    if (!(offset >= 0 && length >= 0 && offset + length <= base.length)) {
      throw new RangeError(
        `wasm-batchnorm: floats [${offset}, ${offset + length}) are not within a buffer of ${base.length}`,
      );
    }
    this.#base = base;
    this.#offset = offset;
    this.length = length;
  }
  view(): Float32Array {
    return this.#base.view().subarray(this.#offset, this.#offset + this.length);
  }
  free(): void {}
}

/** Wraps an existing array (no copy) as a JS-back-end buffer. */
export function wrapJs(data: Float32Array): F32Buffer {
  return new JsBuffer(data);
}

/** The longest Float32Array this engine makes (V8: 2^32 − 1 elements on 64-bit). */
const MAX_FLOATS = 2 ** 32 - 1;

export const jsBackend: Backend = {
  kind: "js",
  maxFloats: MAX_FLOATS,

  alloc(length) {
    if (!(length <= MAX_FLOATS)) {
      throw new RangeError(`wasm-batchnorm: cannot allocate ${length} floats in a Float32Array`);
    }
    return new JsBuffer(new Float32Array(length));
  },

  subrange(b, offset, length) {
    return new JsSubrange(b, offset, length);
  },

  workspaceFloats() {
    return 0;
  },

  allocWorkspace() {
    return new JsBuffer(new Float32Array(0));
  },

  // JS arrays live on the garbage-collected heap, whose limit is the engine's: a failed
  // allocation throws a RangeError and leaves nothing behind.
  fits() {
    return true;
  },

  memoryBytes() {
    return 0;
  },

  pin(a) {
    return () => a;
  },

  moments(xb, { outer, channels: C, inner }, _ws, meanb, varb) {
    const x = v(xb);
    const mean = v(meanb);
    const variance = v(varb);
    // Shifted sums in float64: Σ(x − s) and Σ(x − s)² with s the channel's first value, which
    // lies within the data, so nothing large cancels. Scratch: [Σ(x − s) | Σ(x − s)² | s].
    const acc = scratchFor(C);
    acc.fill(0, 0, 2 * C);
    for (let c = 0; c < C; c++) acc[2 * C + c] = x[c * inner] as number;
    if (inner === 1) {
      let i = 0;
      for (let o = 0; o + 4 <= outer; o += 4, i += 4 * C) {
        for (let c = 0, j = i; c < C; c++, j++) {
          const s = acc[2 * C + c] as number;
          const d0 = (x[j] as number) - s;
          const d1 = (x[j + C] as number) - s;
          const d2 = (x[j + 2 * C] as number) - s;
          const d3 = (x[j + 3 * C] as number) - s;
          acc[c] = (acc[c] as number) + (d0 + d1 + (d2 + d3));
          acc[C + c] = (acc[C + c] as number) + (d0 * d0 + d1 * d1 + (d2 * d2 + d3 * d3));
        }
      }
      for (; i < x.length; ) {
        for (let c = 0; c < C; c++, i++) {
          const d = (x[i] as number) - (acc[2 * C + c] as number);
          acc[c] = (acc[c] as number) + d;
          acc[C + c] = (acc[C + c] as number) + d * d;
        }
      }
    } else {
      let i = 0;
      for (let o = 0; o < outer; o++) {
        for (let c = 0; c < C; c++) {
          const s = acc[2 * C + c] as number;
          // Two accumulators of each sum: additions that do not wait for each other.
          let a0 = 0;
          let a1 = 0;
          let b0 = 0;
          let b1 = 0;
          const end = i + inner;
          for (; i + 4 <= end; i += 4) {
            const d0 = (x[i] as number) - s;
            const d1 = (x[i + 1] as number) - s;
            const d2 = (x[i + 2] as number) - s;
            const d3 = (x[i + 3] as number) - s;
            a0 += d0 + d2;
            a1 += d1 + d3;
            b0 += d0 * d0 + d2 * d2;
            b1 += d1 * d1 + d3 * d3;
          }
          for (; i < end; i++) {
            const d = (x[i] as number) - s;
            a0 += d;
            b0 += d * d;
          }
          acc[c] = (acc[c] as number) + (a0 + a1);
          acc[C + c] = (acc[C + c] as number) + (b0 + b1);
        }
      }
    }
    const n = outer * inner;
    for (let c = 0; c < C; c++) {
      const d = (acc[c] as number) / n;
      mean[c] = (acc[2 * C + c] as number) + d;
      variance[c] = Math.max(0, (acc[C + c] as number) / n - d * d);
    }
  },

  scaleShift(xb, yb, dims, centerb, scaleb, shiftb, _ws, act) {
    if (act) return scaleShiftAct(xb, yb, dims, centerb, scaleb, shiftb, act);
    const { outer, channels: C, inner } = dims;
    const x = v(xb);
    const y = v(yb);
    const center = v(centerb);
    const scale = v(scaleb);
    const shift = v(shiftb);
    if (inner === 1) {
      let i = 0;
      for (let o = 0; o + 4 <= outer; o += 4, i += 4 * C) {
        for (let c = 0, j = i; c < C; c++, j++) {
          const m = center[c] as number;
          const a = scale[c] as number;
          const b = shift[c] as number;
          y[j] = ((x[j] as number) - m) * a + b;
          y[j + C] = ((x[j + C] as number) - m) * a + b;
          y[j + 2 * C] = ((x[j + 2 * C] as number) - m) * a + b;
          y[j + 3 * C] = ((x[j + 3 * C] as number) - m) * a + b;
        }
      }
      for (; i < x.length; ) {
        for (let c = 0; c < C; c++, i++) {
          y[i] =
            ((x[i] as number) - (center[c] as number)) * (scale[c] as number) +
            (shift[c] as number);
        }
      }
      return;
    }
    let i = 0;
    for (let o = 0; o < outer; o++) {
      for (let c = 0; c < C; c++) {
        const m = center[c] as number;
        const a = scale[c] as number;
        const b = shift[c] as number;
        const end = i + inner;
        for (; i + 4 <= end; i += 4) {
          y[i] = ((x[i] as number) - m) * a + b;
          y[i + 1] = ((x[i + 1] as number) - m) * a + b;
          y[i + 2] = ((x[i + 2] as number) - m) * a + b;
          y[i + 3] = ((x[i + 3] as number) - m) * a + b;
        }
        for (; i < end; i++) y[i] = ((x[i] as number) - m) * a + b;
      }
    }
  },

  gradSums(xb, dyb, dims, meanb, _ws, sumDyb, sumDyXcb, fused): GradSumsLeft {
    if (fused) {
      gradSumsAct(xb, dyb, dims, meanb, sumDyb, sumDyXcb, fused);
      return null;
    }
    const { outer, channels: C, inner } = dims;
    const x = v(xb);
    const dy = v(dyb);
    const mean = v(meanb);
    // Scratch: [Σdy | Σdy·(x − mean)], in float64.
    const acc = scratchFor(C);
    acc.fill(0, 0, 2 * C);
    if (inner === 1) {
      let i = 0;
      for (let o = 0; o + 4 <= outer; o += 4, i += 4 * C) {
        for (let c = 0, j = i; c < C; c++, j++) {
          const m = mean[c] as number;
          const g0 = dy[j] as number;
          const g1 = dy[j + C] as number;
          const g2 = dy[j + 2 * C] as number;
          const g3 = dy[j + 3 * C] as number;
          acc[c] = (acc[c] as number) + (g0 + g1 + (g2 + g3));
          acc[C + c] =
            (acc[C + c] as number) +
            (g0 * ((x[j] as number) - m) +
              g1 * ((x[j + C] as number) - m) +
              (g2 * ((x[j + 2 * C] as number) - m) + g3 * ((x[j + 3 * C] as number) - m)));
        }
      }
      for (; i < x.length; ) {
        for (let c = 0; c < C; c++, i++) {
          const g = dy[i] as number;
          acc[c] = (acc[c] as number) + g;
          acc[C + c] = (acc[C + c] as number) + g * ((x[i] as number) - (mean[c] as number));
        }
      }
    } else {
      let i = 0;
      for (let o = 0; o < outer; o++) {
        for (let c = 0; c < C; c++) {
          const m = mean[c] as number;
          let a0 = 0;
          let a1 = 0;
          let b0 = 0;
          let b1 = 0;
          const end = i + inner;
          for (; i + 4 <= end; i += 4) {
            const g0 = dy[i] as number;
            const g1 = dy[i + 1] as number;
            const g2 = dy[i + 2] as number;
            const g3 = dy[i + 3] as number;
            a0 += g0 + g2;
            a1 += g1 + g3;
            b0 += g0 * ((x[i] as number) - m) + g2 * ((x[i + 2] as number) - m);
            b1 += g1 * ((x[i + 1] as number) - m) + g3 * ((x[i + 3] as number) - m);
          }
          for (; i < end; i++) {
            const g = dy[i] as number;
            a0 += g;
            b0 += g * ((x[i] as number) - m);
          }
          acc[c] = (acc[c] as number) + (a0 + a1);
          acc[C + c] = (acc[C + c] as number) + (b0 + b1);
        }
      }
    }
    sumsOut(acc, C, sumDyb, sumDyXcb);
    return null;
  },

  gradInput(xb, dyb, dxb, dims, meanb, kDyb, kXcb, kConstb, _ws, fused) {
    if (fused) return gradInputAct(xb, dyb, dxb, dims, meanb, kDyb, kXcb, kConstb, fused);
    const { outer, channels: C, inner } = dims;
    const x = v(xb);
    const dy = v(dyb);
    const dx = v(dxb);
    const mean = v(meanb);
    const kDy = v(kDyb);
    const kXc = v(kXcb);
    const kConst = v(kConstb);
    if (inner === 1) {
      let i = 0;
      for (let o = 0; o + 4 <= outer; o += 4, i += 4 * C) {
        for (let c = 0, j = i; c < C; c++, j++) {
          const m = mean[c] as number;
          const a = kDy[c] as number;
          const b = kXc[c] as number;
          const k = kConst[c] as number;
          dx[j] = a * (dy[j] as number) + b * ((x[j] as number) - m) + k;
          dx[j + C] = a * (dy[j + C] as number) + b * ((x[j + C] as number) - m) + k;
          dx[j + 2 * C] = a * (dy[j + 2 * C] as number) + b * ((x[j + 2 * C] as number) - m) + k;
          dx[j + 3 * C] = a * (dy[j + 3 * C] as number) + b * ((x[j + 3 * C] as number) - m) + k;
        }
      }
      for (; i < x.length; ) {
        for (let c = 0; c < C; c++, i++) {
          dx[i] =
            (kDy[c] as number) * (dy[i] as number) +
            (kXc[c] as number) * ((x[i] as number) - (mean[c] as number)) +
            (kConst[c] as number);
        }
      }
      return;
    }
    let i = 0;
    for (let o = 0; o < outer; o++) {
      for (let c = 0; c < C; c++) {
        const m = mean[c] as number;
        const a = kDy[c] as number;
        const b = kXc[c] as number;
        const k = kConst[c] as number;
        const end = i + inner;
        for (; i + 4 <= end; i += 4) {
          dx[i] = a * (dy[i] as number) + b * ((x[i] as number) - m) + k;
          dx[i + 1] = a * (dy[i + 1] as number) + b * ((x[i + 1] as number) - m) + k;
          dx[i + 2] = a * (dy[i + 2] as number) + b * ((x[i + 2] as number) - m) + k;
          dx[i + 3] = a * (dy[i + 3] as number) + b * ((x[i + 3] as number) - m) + k;
        }
        for (; i < end; i++) dx[i] = a * (dy[i] as number) + b * ((x[i] as number) - m) + k;
      }
    }
  },

  copy(src, dst) {
    v(dst).set(v(src));
  },
};
