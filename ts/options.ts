/**
 * The options of the module and of the functional ops, their defaults (PyTorch's) and their
 * checks.
 *
 * @module
 */
import { type Activation, checkActivation } from "./activation.js";
import type { BackendKind } from "./backend.js";
import { checkChoice, show } from "./errors.js";
import { LAYOUTS, type Layout } from "./shape.js";
import { type BatchNormSync, checkSync } from "./sync.js";
import {
  checkRenorm,
  checkVirtualBatchSize,
  type RenormLimits,
  renormNeedsRunningStats,
} from "./variants.js";

/** Options of {@link BatchNorm}; every default is PyTorch's. */
export interface BatchNormOptions {
  /** Added to the variance before the square root. Default `1e-5`; must be ≥ 0. */
  eps?: number;
  /**
   * Weight of the new batch statistic in the running averages:
   * `running = (1 − momentum)·running + momentum·batch`. Default `0.1`, in [0, 1]; `null` makes
   * the running statistics a cumulative average over all batches seen.
   */
  momentum?: number | null;
  /** Learnable per-channel `weight` (γ, initially 1) and `bias` (β, initially 0). Default `true`. */
  affine?: boolean;
  /**
   * Keep `runningMean` and `runningVar` and use them in inference. Default `true`; when `false`,
   * batch statistics are used in both modes.
   */
  trackRunningStats?: boolean;
  /**
   * The variance averaged into `runningVar` by a training forward: `"unbiased"` (default,
   * PyTorch's: the batch variance times n/(n − 1), n values per channel) or `"biased"` (the batch
   * variance itself, as Keras, TF.js layers and ONNX Runtime's training mode do). The batch is
   * normalized with the biased variance either way.
   */
  runningVarEstimator?: RunningVarEstimator;
  /** Default `"NCHW"`. */
  layout?: Layout;
  /**
   * An activation applied to the normalized values in the same pass over memory (training and
   * inference); `backward` returns the gradients through it and batch norm. Default none.
   */
  activation?: Activation | null;
  /** The slope of `"leakyRelu"` for negative inputs. Default `0.01`; a finite number. */
  negativeSlope?: number;
  /**
   * Which implementation runs the kernels. `"auto"` (default) takes the best that
   * {@link init} loaded: SIMD wasm, else scalar wasm, else JS.
   */
  backend?: "auto" | BackendKind;
  /**
   * Synchronized batch norm (data-parallel training): training forwards and backwards gather
   * every replica's per-channel statistics and gradient sums through `sync.allGather`, so that
   * each replica normalizes with the whole batch's statistics (see `sync.ts`), and backward's
   * `dWeight` and `dBias` are the whole batch's (do not all-reduce them again). Inference does
   * not gather. Default: none (this batch alone).
   */
  sync?: BatchNormSync | null;
  /**
   * Batch Renormalization (Ioffe 2017): in training, `x̂` becomes `x̂·r + d`, which pulls the
   * batch statistics toward the running ones, with `r` clipped to [1/rMax, rMax] and `d` to
   * [−dMax, dMax]. Default `null` (plain batch norm; `{ rMax: 1, dMax: 0 }` is the same). Needs
   * `trackRunningStats`. Change it between steps with `bn.renorm = { rMax, dMax }`.
   */
  renorm?: RenormLimits | null;
  /**
   * Ghost Batch Norm: whenever batch statistics are used, the batch axis (the first) is split
   * into ghost batches of this many entries, each normalized with its own statistics; the
   * running statistics are updated once per forward with the average over ghost batches of
   * their means and unbiased variances (Keras's `virtual_batch_size`). Default `null` (the
   * whole batch). The batch size must be a multiple of it.
   */
  virtualBatchSize?: number | null;
}

/** See {@link BatchNormOptions.runningVarEstimator}. */
export type RunningVarEstimator = "unbiased" | "biased";

export const ESTIMATORS: readonly RunningVarEstimator[] = ["unbiased", "biased"];

/**
 * Which learnable parameters a module has, when not both or neither (`affine`): Keras's
 * `center: false` (no β) and `scale: false` (no γ). Internal: only the converters
 * (`BatchNorm.fromKeras`) set it, under this symbol, so that the public options keep PyTorch's
 * `affine` as the one switch; `index.ts` does not export it.
 */
export const PARAMETERS: unique symbol = Symbol("wasm-batchnorm parameters");

/** {@link BatchNormOptions} plus the internal {@link PARAMETERS} option. */
export interface InternalOptions extends BatchNormOptions {
  [PARAMETERS]?: { readonly weight: boolean; readonly bias: boolean };
}

/** {@link BatchNormOptions} with every default filled in and every value checked. */
export interface ModuleConfig extends Required<Omit<BatchNormOptions, "sync">> {
  /** Whether the module has a learnable weight and a learnable bias (`affine` unless overridden). */
  hasWeight: boolean;
  hasBias: boolean;
  sync: BatchNormSync | null;
}

export const BACKEND_CHOICES: readonly ("auto" | BackendKind)[] = ["auto", "simd", "scalar", "js"];

export function checkEps(eps: unknown, where: string, name = "options.eps"): number {
  if (typeof eps !== "number" || !(eps >= 0) || eps === Infinity) {
    throw new RangeError(`${where}: ${name} must be a finite number ≥ 0, got ${show(eps)}`);
  }
  return eps;
}

export function checkMomentum(momentum: unknown, where: string, nullable: boolean): number | null {
  if (momentum === null && nullable) return null;
  if (typeof momentum !== "number" || !(momentum >= 0 && momentum <= 1)) {
    throw new RangeError(
      `${where}: options.momentum must be in [0, 1]${nullable ? " or null" : ""}, got ${show(momentum)}`,
    );
  }
  return momentum;
}

export function checkBoolean(value: unknown, where: string, name: string): boolean {
  if (typeof value !== "boolean") {
    throw new TypeError(`${where}: ${name} must be a boolean, got ${show(value)}`);
  }
  return value;
}

export const checkEstimator = (estimator: unknown, where: string): RunningVarEstimator =>
  checkChoice(estimator, ESTIMATORS, where, "options.runningVarEstimator");

export const checkLayout = (layout: unknown, where: string): Layout =>
  checkChoice(layout, LAYOUTS, where, "options.layout");

export const checkBackend = (backend: unknown, where: string): "auto" | BackendKind =>
  checkChoice(backend, BACKEND_CHOICES, where, "options.backend");

/** Checks a channel count: a positive integer; RangeError naming `name` otherwise. */
export function checkChannelCount(channels: unknown, where: string, name: string): void {
  if (!Number.isSafeInteger(channels) || (channels as number) <= 0) {
    throw new RangeError(`${where}: ${name} must be a positive integer, got ${show(channels)}`);
  }
}

/** The module's options, defaults filled in; throws naming the bad argument or option. */
export function moduleConfig(
  numFeatures: number,
  options: InternalOptions,
  where: string,
): ModuleConfig {
  checkChannelCount(numFeatures, where, "numFeatures");
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`${where}: options must be an object, got ${show(options)}`);
  }
  const {
    eps = 1e-5,
    momentum = 0.1,
    affine = true,
    trackRunningStats = true,
    runningVarEstimator = "unbiased",
    layout = "NCHW",
    backend = "auto",
    renorm = null,
    virtualBatchSize = null,
  } = options;
  const act = checkActivation(options.activation, options.negativeSlope, where);
  const checkedAffine = checkBoolean(affine, where, "options.affine");
  const parameters = options[PARAMETERS] ?? { weight: checkedAffine, bias: checkedAffine };
  const config: ModuleConfig = {
    eps: checkEps(eps, where),
    momentum: checkMomentum(momentum, where, true),
    // PyTorch's flag: both parameters. A module with only one is not `affine` in its sense.
    affine: parameters.weight && parameters.bias,
    trackRunningStats: checkBoolean(trackRunningStats, where, "options.trackRunningStats"),
    runningVarEstimator: checkEstimator(runningVarEstimator, where),
    layout: checkLayout(layout, where),
    backend: checkBackend(backend, where),
    renorm: checkRenorm(renorm, where, "options.renorm"),
    virtualBatchSize: checkGhostBatches(
      checkVirtualBatchSize(virtualBatchSize, where, "options.virtualBatchSize"),
      options,
      where,
    ),
    activation: act === null ? null : act.kind,
    negativeSlope: act === null ? (options.negativeSlope ?? 0.01) : act.negativeSlope,
    hasWeight: parameters.weight,
    hasBias: parameters.bias,
    sync: checkSync(options.sync, where),
  };
  renormNeedsRunningStats(config.renorm, config.trackRunningStats, where, "options.renorm");
  return config;
}

/**
 * What ghost batches do not combine with: synchronized BN (ghost batches are one replica's own
 * sub-batches; merging each with the other replicas' has no meaning the two papers agree on).
 */
function checkGhostBatches(
  k: number | null,
  options: BatchNormOptions,
  where: string,
): number | null {
  if (k !== null && options.sync != null) {
    throw new TypeError(
      `${where}: options.virtualBatchSize and options.sync cannot be combined (ghost batches are one replica's own), got virtualBatchSize ${k} with sync`,
    );
  }
  return k;
}
