/** Order statistics of benchmark samples. */

/** The `q`-quantile (0 ≤ q ≤ 1) of `values`, interpolating linearly between order statistics. */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (at - lo);
}

export const median = (values: readonly number[]): number => quantile(values, 0.5);

/**
 * `max |got − want| / max(max |want|, floor)` over all elements: the error relative to the
 * result's scale, or to `floor` where the result is mostly cancellation (dx at batch size 2).
 */
export function relError(got: Float32Array, want: Float32Array, floor = 0): number {
  if (got.length !== want.length) return Number.POSITIVE_INFINITY;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    const w = want[i] as number;
    const d = Math.abs((got[i] as number) - w);
    if (!(d <= diff)) diff = d; // also catches NaN
    if (Math.abs(w) > scale) scale = Math.abs(w);
  }
  return diff / (Math.max(scale, floor) || 1);
}
