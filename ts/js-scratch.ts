/**
 * What the pure-JS back end's passes share: the view of a buffer, and one float64 scratch.
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
