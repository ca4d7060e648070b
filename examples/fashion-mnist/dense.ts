/**
 * The demo network's fully connected layers: `y = x·W + b` and its gradients, in plain
 * TypeScript. A batch of activations is `[n, units]` and a weight matrix `[inputs, outputs]`,
 * row-major `Float32Array`s.
 *
 * @module
 */

/** A fully connected layer `y = x·W + b`, with its gradients from the last backward. */
export interface Dense {
  readonly inputs: number;
  readonly outputs: number;
  /** `[inputs, outputs]`, row-major. */
  readonly weight: Float32Array;
  readonly bias: Float32Array;
  readonly gradWeight: Float32Array;
  readonly gradBias: Float32Array;
}

/*
 * The three matrix products of a dense layer. JavaScript has no SIMD, so what makes these fast
 * is fewer loads and stores per multiply-add: every inner loop runs along contiguous memory, and
 * the products are computed in 4×4 tiles — four rows of the batch by four inputs — so that one
 * load or store of a row element serves four multiply-adds (a plain loop needs three memory
 * accesses per multiply-add). Tiles of zero inputs, common in the pixels of a Fashion-MNIST
 * image, are skipped.
 */

/** `y[n, outputs] = x[n, inputs]·W + b`. */
export function denseForward(layer: Dense, x: Float32Array, n: number, y: Float32Array): void {
  const { inputs: I, outputs: O, weight: W, bias: b } = layer;
  for (let r = 0; r < n; r++) y.set(b, r * O);
  let r = 0;
  for (; r + 4 <= n; r += 4) {
    const y0 = r * O;
    const y1 = y0 + O;
    const y2 = y1 + O;
    const y3 = y2 + O;
    const x0 = r * I;
    const x1 = x0 + I;
    const x2 = x1 + I;
    const x3 = x2 + I;
    let k = 0;
    for (; k + 4 <= I; k += 4) {
      // x[r..r+3, k..k+3]: a, b, c, d are the four rows.
      const a0 = x[x0 + k] as number;
      const a1 = x[x0 + k + 1] as number;
      const a2 = x[x0 + k + 2] as number;
      const a3 = x[x0 + k + 3] as number;
      const b0 = x[x1 + k] as number;
      const b1 = x[x1 + k + 1] as number;
      const b2 = x[x1 + k + 2] as number;
      const b3 = x[x1 + k + 3] as number;
      const c0 = x[x2 + k] as number;
      const c1 = x[x2 + k + 1] as number;
      const c2 = x[x2 + k + 2] as number;
      const c3 = x[x2 + k + 3] as number;
      const d0 = x[x3 + k] as number;
      const d1 = x[x3 + k + 1] as number;
      const d2 = x[x3 + k + 2] as number;
      const d3 = x[x3 + k + 3] as number;
      if (
        zero4(a0, a1, a2, a3) &&
        zero4(b0, b1, b2, b3) &&
        zero4(c0, c1, c2, c3) &&
        zero4(d0, d1, d2, d3)
      )
        continue;
      const w0 = k * O;
      const w1 = w0 + O;
      const w2 = w1 + O;
      const w3 = w2 + O;
      for (let j = 0; j < O; j++) {
        const p = W[w0 + j] as number;
        const q = W[w1 + j] as number;
        const s = W[w2 + j] as number;
        const t = W[w3 + j] as number;
        y[y0 + j] = (y[y0 + j] as number) + a0 * p + a1 * q + a2 * s + a3 * t;
        y[y1 + j] = (y[y1 + j] as number) + b0 * p + b1 * q + b2 * s + b3 * t;
        y[y2 + j] = (y[y2 + j] as number) + c0 * p + c1 * q + c2 * s + c3 * t;
        y[y3 + j] = (y[y3 + j] as number) + d0 * p + d1 * q + d2 * s + d3 * t;
      }
    }
    for (; k < I; k++) {
      for (let i = 0; i < 4; i++) axpy(x[x0 + i * I + k] as number, W, k * O, y, y0 + i * O, O);
    }
  }
  for (; r < n; r++) {
    for (let k = 0; k < I; k++) axpy(x[r * I + k] as number, W, k * O, y, r * O, O);
  }
}

/** Whether four values are all zero. */
function zero4(a: number, b: number, c: number, d: number): boolean {
  return a === 0 && b === 0 && c === 0 && d === 0;
}

/** `y[yo .. yo+len) += a·x[xo .. xo+len)` (the tails of the tiled loops). */
function axpy(a: number, x: Float32Array, xo: number, y: Float32Array, yo: number, len: number) {
  if (a === 0) return;
  for (let j = 0; j < len; j++) y[yo + j] = (y[yo + j] as number) + a * (x[xo + j] as number);
}

/**
 * Gradients of `y = x·W + b` for the upstream gradient `dy`: `gradWeight = xᵀ·dy`,
 * `gradBias = Σ dy` (both overwritten), and, when `dx` is given, `dx = dy·Wᵀ`.
 */
export function denseBackward(
  layer: Dense,
  x: Float32Array,
  dy: Float32Array,
  n: number,
  dx: Float32Array | null,
): void {
  const { inputs: I, outputs: O, weight: W, gradWeight: gW, gradBias: gb } = layer;
  gb.fill(0);
  for (let r = 0; r < n; r++) axpy(1, dy, r * O, gb, 0, O);
  // gradWeight[k, :] = Σ_r x[r, k]·dy[r, :], in tiles of four rows r by four inputs k.
  gW.fill(0);
  let r = 0;
  for (; r + 4 <= n; r += 4) {
    const e0 = r * O;
    const e1 = e0 + O;
    const e2 = e1 + O;
    const e3 = e2 + O;
    const x0 = r * I;
    const x1 = x0 + I;
    const x2 = x1 + I;
    const x3 = x2 + I;
    let k = 0;
    for (; k + 4 <= I; k += 4) {
      // x[r..r+3, k..k+3] by input k: a, b, c, d are the four inputs.
      const a0 = x[x0 + k] as number;
      const a1 = x[x1 + k] as number;
      const a2 = x[x2 + k] as number;
      const a3 = x[x3 + k] as number;
      const b0 = x[x0 + k + 1] as number;
      const b1 = x[x1 + k + 1] as number;
      const b2 = x[x2 + k + 1] as number;
      const b3 = x[x3 + k + 1] as number;
      const c0 = x[x0 + k + 2] as number;
      const c1 = x[x1 + k + 2] as number;
      const c2 = x[x2 + k + 2] as number;
      const c3 = x[x3 + k + 2] as number;
      const d0 = x[x0 + k + 3] as number;
      const d1 = x[x1 + k + 3] as number;
      const d2 = x[x2 + k + 3] as number;
      const d3 = x[x3 + k + 3] as number;
      if (
        zero4(a0, a1, a2, a3) &&
        zero4(b0, b1, b2, b3) &&
        zero4(c0, c1, c2, c3) &&
        zero4(d0, d1, d2, d3)
      )
        continue;
      const g0 = k * O;
      const g1 = g0 + O;
      const g2 = g1 + O;
      const g3 = g2 + O;
      for (let j = 0; j < O; j++) {
        const p = dy[e0 + j] as number;
        const q = dy[e1 + j] as number;
        const s = dy[e2 + j] as number;
        const t = dy[e3 + j] as number;
        gW[g0 + j] = (gW[g0 + j] as number) + a0 * p + a1 * q + a2 * s + a3 * t;
        gW[g1 + j] = (gW[g1 + j] as number) + b0 * p + b1 * q + b2 * s + b3 * t;
        gW[g2 + j] = (gW[g2 + j] as number) + c0 * p + c1 * q + c2 * s + c3 * t;
        gW[g3 + j] = (gW[g3 + j] as number) + d0 * p + d1 * q + d2 * s + d3 * t;
      }
    }
    for (; k < I; k++) {
      for (let i = 0; i < 4; i++) axpy(x[x0 + i * I + k] as number, dy, e0 + i * O, gW, k * O, O);
    }
  }
  for (; r < n; r++) {
    for (let k = 0; k < I; k++) axpy(x[r * I + k] as number, dy, r * O, gW, k * O, O);
  }
  if (dx === null) return;
  // dx[r, k] = dy[r, :]·W[k, :], four rows r at a time.
  r = 0;
  for (; r + 4 <= n; r += 4) {
    const e0 = r * O;
    const e1 = e0 + O;
    const e2 = e1 + O;
    const e3 = e2 + O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const wo = k * O;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let j = 0; j < O; j++) {
        const w = W[wo + j] as number;
        s0 += (dy[e0 + j] as number) * w;
        s1 += (dy[e1 + j] as number) * w;
        s2 += (dy[e2 + j] as number) * w;
        s3 += (dy[e3 + j] as number) * w;
      }
      dx[xo + k] = s0;
      dx[xo + I + k] = s1;
      dx[xo + 2 * I + k] = s2;
      dx[xo + 3 * I + k] = s3;
    }
  }
  for (; r < n; r++) {
    const eo = r * O;
    const xo = r * I;
    for (let k = 0; k < I; k++) {
      const wo = k * O;
      let s = 0;
      for (let j = 0; j < O; j++) s += (dy[eo + j] as number) * (W[wo + j] as number);
      dx[xo + k] = s;
    }
  }
}
