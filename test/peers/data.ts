/**
 * Seeded test data for the peer tests: inputs whose channels have distinct means and spreads,
 * and per-channel BatchNorm parameters far from their initial values, so that a wrong channel,
 * a wrong order or a wrong convention shows.
 */

import { type FoldableBatchNorm, foldedAffineOf } from "../../ts/index.node.js";
import type { Rng } from "../random.js";
import { channelOf, type RefLayout } from "../reference.js";

/** Four per-channel float32 arrays, named as in PyTorch's state_dict. */
export interface BnParams {
  weight: Float32Array;
  bias: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
}

/**
 * Random parameters. Variances in [0.002, 0.05] make eps visible: 1e-3 vs 1e-5 changes
 * 1/√(σ² + ε) by 1% to 20%.
 */
export function bnParams(rng: Rng, C: number): BnParams {
  const f = (lo: number, hi: number) => Float32Array.from({ length: C }, () => rng.range(lo, hi));
  return {
    weight: f(0.5, 2),
    bias: f(-1, 1),
    mean: f(-1, 1),
    variance: f(0.002, 0.05),
  };
}

/** A BatchNorm in inference with parameters `p`, as the folds see it (`bn.foldedAffine()`). */
export function foldable(p: BnParams, eps: number): FoldableBatchNorm {
  return {
    numFeatures: p.weight.length,
    foldedAffine: () =>
      foldedAffineOf({
        weight: p.weight,
        bias: p.bias,
        runningMean: p.mean,
        runningVar: p.variance,
        eps,
      }),
  };
}

/** x = μ_c + σ_c·z, with μ_c in [−2, 2] and σ_c in [0.5, 2] drawn per channel. */
export function channelData(
  rng: Rng,
  shape: readonly number[],
  layout: RefLayout,
  C: number,
): Float32Array {
  const mu = Array.from({ length: C }, () => rng.range(-2, 2));
  const sigma = Array.from({ length: C }, () => rng.range(0.5, 2));
  const chan = channelOf(shape, layout);
  return Float32Array.from(chan, (c) => (mu[c] as number) + (sigma[c] as number) * rng.normal());
}
