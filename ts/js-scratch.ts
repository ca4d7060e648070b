/**
 * What the pure-JS back end's passes share: the view of a buffer, one float64 scratch, and the
 * write of the gradient sums. The loops themselves are written out per pass: the same passes
 * over shared walkers (`eachRun(dims, (c, start, end) => …)`, one row-block walk for
 * channels-last) measured 20–40 % slower in V8 (node 20), and `const [x, y] = views(xb, yb)`
 * for the views up to 20 % slower at mid-sized shapes, than the passes as written here.
 *
 * @module
 */
import type { F32Buffer } from "./backend.js";

export const v = (b: F32Buffer): Float32Array => b.view();

/**
 * Per-channel float64 scratch shared by all calls (JS runs one kernel at a time and none
 * calls another): three rows of `channels`, grown when a call needs more.
 */
let scratch = new Float64Array(0);
export function scratchFor(channels: number): Float64Array {
  if (scratch.length < 3 * channels) scratch = new Float64Array(3 * channels);
  return scratch;
}

/** Rounds the scratch's rows of Σdy and Σdy·(x − mean) into `sumDy` and `sumDyXc`. */
export function sumsOut(acc: Float64Array, C: number, sumDy: F32Buffer, sumDyXc: F32Buffer): void {
  v(sumDy).set(acc.subarray(0, C));
  v(sumDyXc).set(acc.subarray(C, 2 * C));
}
