/**
 * Batch Renormalization and Ghost Batch Norm in the functional layer: the options that
 * {@link batchNorm} and {@link batchNormBackward} share, their checks, and the training passes
 * over `variants.ts`. Like the module, both apply only to training calls (batch statistics);
 * a call with the running statistics is unchanged by them.
 *
 * @module
 */

import type { Act } from "./activation.js";
import type { Backend, Dims, F32Buffer } from "./backend.js";
import { type Affine, updateRunningStats } from "./core.js";
import type { BufferSet } from "./lifetime.js";
import type { RunningVarEstimator } from "./options.js";
import type { ChannelScratch } from "./scratch.js";
import {
  batchStatsForward,
  checkRenorm,
  checkVirtualBatchSize,
  ghostCount,
  type Part,
  PartScratch,
  type RenormLimits,
} from "./variants.js";

/** The training variants a functional call accepts. */
export interface VariantOptions {
  /**
   * Batch Renormalization's limits (see `BatchNormOptions.renorm`), applied when `training`
   * is true; needs `runningMean` and `runningVar`, the running statistics before this step's
   * update (in {@link batchNormBackward} too: keep a copy, the forward updates them in place).
   */
  renorm?: RenormLimits | null;
  /** Ghost batch size (see `BatchNormOptions.virtualBatchSize`), applied when `training` is true. */
  virtualBatchSize?: number | null;
}

/** Checked variants of one call. */
export interface Variants {
  readonly renorm: RenormLimits | null;
  /** Number of ghost batches (1: the whole batch). */
  readonly ghosts: number;
  /** Whether either changes the call (otherwise it is plain batch norm). */
  readonly active: boolean;
}

/** Running statistics as the functional layer takes them. */
type Running = { mean: ArrayLike<number>; variance: ArrayLike<number> } | undefined;

export function checkVariants(
  o: VariantOptions,
  input: { dims: Dims; shape: readonly number[] },
  training: boolean,
  running: Running,
  where: string,
): Variants {
  const renorm = checkRenorm(o.renorm, where, "options.renorm");
  const k = checkVirtualBatchSize(o.virtualBatchSize, where, "options.virtualBatchSize");
  if (!training) return { renorm: null, ghosts: 1, active: false };
  if (renorm !== null && running === undefined) {
    throw new TypeError(
      `${where}: options.renorm needs options.runningMean and options.runningVar (it corrects toward them), got neither`,
    );
  }
  const ghosts = ghostCount(k, input.shape, input.dims, where);
  return { renorm, ghosts, active: renorm !== null || ghosts > 1 };
}

/** The parts of a training call (each ghost batch's statistics and correction), with `y` when given. */
export function variantParts(
  be: Backend,
  x: F32Buffer,
  y: F32Buffer | null,
  dims: Dims,
  s: ChannelScratch,
  buffers: BufferSet,
  call: { affine: Affine; eps: number; variants: Variants; running: Running; act: Act | null },
) {
  const { affine, eps, variants, running, act } = call;
  const scratch = new PartScratch(buffers, dims.channels);
  scratch.ensure(variants.ghosts);
  const renorm =
    variants.renorm === null
      ? null
      : { limits: variants.renorm, running: running as NonNullable<Running> };
  return batchStatsForward(be, x, y, dims, s, scratch, {
    affine,
    eps,
    ghosts: variants.ghosts,
    renorm,
    act,
  });
}

/** A training forward into `y`, updating `running` (when given) with `momentum`. */
export function variantForward(
  be: Backend,
  x: F32Buffer,
  y: F32Buffer,
  dims: Dims,
  s: ChannelScratch,
  buffers: BufferSet,
  call: {
    affine: Affine;
    eps: number;
    variants: Variants;
    running: { mean: Float32Array; variance: Float32Array } | undefined;
    momentum: number;
    estimator: RunningVarEstimator;
    act: Act | null;
  },
): readonly Part[] {
  const result = variantParts(be, x, y, dims, s, buffers, call);
  const { running } = call;
  if (running !== undefined) {
    updateRunningStats(be, s, running, result, call.momentum, call.estimator);
  }
  return result.parts;
}
