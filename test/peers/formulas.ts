/**
 * Float64 formulas of the peers' documented conventions, for the peer tests to compare against
 * (and for the module's future `fromOnnx`/`toKeras` tests to reuse). The statistics themselves
 * come from test/reference.ts.
 */

/**
 * The running-average update of Keras, TF.js layers and ONNX: `momentum` is the weight of the
 * OLD value, `running = momentum·old + (1 − momentum)·batch`.
 */
export function oldWeighted(
  old: ArrayLike<number>,
  batch: ArrayLike<number>,
  momentum: number,
): Float64Array {
  return Float64Array.from(old, (o, c) => momentum * o + (1 - momentum) * (batch[c] as number));
}

/**
 * PyTorch's update: `momentum` is the weight of the NEW batch statistic,
 * `running = (1 − momentum)·old + momentum·batch`. Equal to `oldWeighted(old, batch, 1 − m)`.
 */
export function newWeighted(
  old: ArrayLike<number>,
  batch: ArrayLike<number>,
  momentum: number,
): Float64Array {
  return oldWeighted(old, batch, 1 - momentum);
}

/** The unbiased (Bessel-corrected) variance from the biased one over `n` values. */
export function unbiased(biased: ArrayLike<number>, n: number): Float64Array {
  return Float64Array.from(biased, (v) => (v * n) / (n - 1));
}
