/**
 * The pure-JS back end: the same passes as the wasm kernels, in plain TypeScript. It is the
 * fallback where WebAssembly is missing and the baseline every benchmark is measured against,
 * so it is written for honest speed: typed arrays, storage-order loops, no allocation per
 * element. JavaScript numbers are float64, so sums need no blocking to stay accurate.
 *
 * @module
 */
import type { Backend, F32Buffer } from "./backend.js";

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

/** Wraps an existing array (no copy) as a JS-back-end buffer. */
export function wrapJs(data: Float32Array): F32Buffer {
  return new JsBuffer(data);
}

const v = (b: F32Buffer): Float32Array => b.view();

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
    return new JsBuffer(v(b).subarray(offset, offset + length));
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

  moments(xb, { outer, channels, inner }, _ws, meanb, varb) {
    const x = v(xb);
    const mean = v(meanb);
    const variance = v(varb);
    // Shifted sums in float64: Σ(x − s) and Σ(x − s)² with s the channel's first value, which
    // lies within the data, so nothing large cancels.
    const shift = new Float64Array(channels);
    const s1 = new Float64Array(channels);
    const s2 = new Float64Array(channels);
    for (let c = 0; c < channels; c++) shift[c] = x[c * inner] as number;
    let i = 0;
    if (inner === 1) {
      for (let o = 0; o < outer; o++) {
        for (let c = 0; c < channels; c++, i++) {
          const d = (x[i] as number) - (shift[c] as number);
          s1[c] = (s1[c] as number) + d;
          s2[c] = (s2[c] as number) + d * d;
        }
      }
    } else {
      for (let o = 0; o < outer; o++) {
        for (let c = 0; c < channels; c++) {
          const s = shift[c] as number;
          let a = 0;
          let b = 0;
          for (const end = i + inner; i < end; i++) {
            const d = (x[i] as number) - s;
            a += d;
            b += d * d;
          }
          s1[c] = (s1[c] as number) + a;
          s2[c] = (s2[c] as number) + b;
        }
      }
    }
    const n = outer * inner;
    for (let c = 0; c < channels; c++) {
      const d = (s1[c] as number) / n;
      mean[c] = (shift[c] as number) + d;
      variance[c] = Math.max(0, (s2[c] as number) / n - d * d);
    }
  },

  scaleShift(xb, yb, { outer, channels, inner }, centerb, scaleb, shiftb) {
    const x = v(xb);
    const y = v(yb);
    const center = v(centerb);
    const scale = v(scaleb);
    const shift = v(shiftb);
    let i = 0;
    for (let o = 0; o < outer; o++) {
      for (let c = 0; c < channels; c++) {
        const m = center[c] as number;
        const a = scale[c] as number;
        const b = shift[c] as number;
        for (const end = i + inner; i < end; i++) y[i] = ((x[i] as number) - m) * a + b;
      }
    }
  },

  gradSums(xb, dyb, { outer, channels, inner }, meanb, _ws, sumDyb, sumDyXcb) {
    const x = v(xb);
    const dy = v(dyb);
    const mean = v(meanb);
    const g = new Float64Array(channels);
    const gx = new Float64Array(channels);
    let i = 0;
    for (let o = 0; o < outer; o++) {
      for (let c = 0; c < channels; c++) {
        const m = mean[c] as number;
        let a = 0;
        let b = 0;
        for (const end = i + inner; i < end; i++) {
          const d = dy[i] as number;
          a += d;
          b += d * ((x[i] as number) - m);
        }
        g[c] = (g[c] as number) + a;
        gx[c] = (gx[c] as number) + b;
      }
    }
    v(sumDyb).set(g);
    v(sumDyXcb).set(gx);
  },

  gradInput(xb, dyb, dxb, { outer, channels, inner }, meanb, kDyb, kXcb, kConstb) {
    const x = v(xb);
    const dy = v(dyb);
    const dx = v(dxb);
    const mean = v(meanb);
    const kDy = v(kDyb);
    const kXc = v(kXcb);
    const kConst = v(kConstb);
    let i = 0;
    for (let o = 0; o < outer; o++) {
      for (let c = 0; c < channels; c++) {
        const m = mean[c] as number;
        const a = kDy[c] as number;
        const b = kXc[c] as number;
        const k = kConst[c] as number;
        for (const end = i + inner; i < end; i++) {
          dx[i] = a * (dy[i] as number) + b * ((x[i] as number) - m) + k;
        }
      }
    }
  },

  copy(src, dst) {
    v(dst).set(v(src));
  },
};
