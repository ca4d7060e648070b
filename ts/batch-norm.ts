/**
 * The BatchNorm module: PyTorch's `BatchNorm1d/2d/3d` with its names and semantics. It keeps
 * the options, the state (parameters, running statistics, training mode) and the public API;
 * its passes and the memory it reuses between calls are `module-passes.ts`, and the algorithm
 * itself is `core.ts`, shared with the functional ops.
 *
 * @module
 */
import { type Activation, checkActivation } from "./activation.js";
import type { BackendKind } from "./backend.js";
import { coefficientCacheArrays } from "./coefficient-cache.js";
import * as convert from "./convert.js";
import { show } from "./errors.js";
import { type FoldableBatchNorm, foldedAffineOf } from "./fold.js";
import { resolveBackend } from "./init.js";
import { freeWhenCollected, keepAlive } from "./lifetime.js";
import { type Gradients, ModulePasses, type Ranks } from "./module-passes.js";
import { type BatchNormOptions, moduleConfig, type RunningVarEstimator } from "./options.js";
import { type CalibrationBatch, recalibrate } from "./recalibrate.js";
import { checkScratchFits } from "./scratch.js";
import type { Layout } from "./shape.js";
import { ModuleState, type StateDict, type StateDictInput } from "./state.js";
import { disposeSymbol, type Tensor } from "./tensor.js";
import { checkRenorm, type RenormLimits, renormNeedsRunningStats } from "./variants.js";

export type { Gradients };

/**
 * Batch normalization over the channel axis (Ioffe & Szegedy, 2015), like PyTorch's
 * `BatchNorm1d/2d/3d`: `y = weight · (x − mean) / sqrt(var + eps) + bias`.
 *
 * In training mode (the initial mode) `mean` and `var` are the batch's per-channel mean and
 * biased variance, and the running statistics are updated with the unbiased variance (by
 * default: see `runningVarEstimator`). In inference mode ({@link BatchNorm.eval}) the running
 * statistics are used.
 *
 * Two ways to call it: with `Float32Array`s (copied in and out), or with {@link Tensor}s made by
 * {@link BatchNorm.tensor}, which live in the back end's memory and are not copied.
 *
 * Bad arguments throw a `TypeError` or `RangeError` naming the argument, what was expected and
 * what came, and leave the module exactly as it was.
 *
 * Memory: a module keeps its per-channel buffers (about 490 bytes per channel in wasm memory),
 * the copy API's input and output buffers (the size of the last tensor passed as a
 * `Float32Array`, reused while the size holds), and what the last training forward saved for
 * backward (per-channel statistics; the input itself is the copy buffer or your tensor).
 * `dispose()` frees all of it; a module dropped without `dispose()` is freed when the garbage
 * collector reclaims it.
 *
 * @example
 * ```ts
 * await init();
 * const bn = new BatchNorm(64);
 * const y = bn.forward(x, [8, 64, 32, 32]);
 * const { dx, dWeight, dBias } = bn.backward(dy);
 * ```
 */
export class BatchNorm implements FoldableBatchNorm {
  /** Number of channels `C`. */
  readonly numFeatures: number;
  readonly eps: number;
  readonly momentum: number | null;
  /**
   * PyTorch's flag: the module has both a learnable `weight` and `bias`. False also for a
   * module from {@link BatchNorm.fromKeras} with `center: false` or `scale: false`, which has
   * one of the two: `weight` and `bias` themselves say which.
   */
  readonly affine: boolean;
  readonly trackRunningStats: boolean;
  /** The variance a training forward averages into `runningVar`. */
  readonly runningVarEstimator: RunningVarEstimator;
  readonly layout: Layout;
  /** The back end this module runs on. */
  readonly backend: BackendKind;
  /** The activation fused after the normalization, or `null`. */
  readonly activation: Activation | null;
  /** The slope of `"leakyRelu"` for negative inputs. */
  readonly negativeSlope: number;
  /** Ghost batch size (see {@link BatchNormOptions.virtualBatchSize}), or `null`. */
  readonly virtualBatchSize: number | null;
  /**
   * γ, per channel (initially 1); `null` when `affine` is false (or Keras's `scale: false`),
   * i.e. γ = 1. Update it in place.
   */
  readonly weight: Float32Array | null;
  /**
   * β, per channel (initially 0); `null` when `affine` is false (or Keras's `center: false`),
   * i.e. β = 0. Update it in place.
   */
  readonly bias: Float32Array | null;
  /** Running mean (initially 0); `null` when `trackRunningStats` is false. */
  readonly runningMean: Float32Array | null;
  /**
   * Running variance (initially 1), averaging the unbiased batch variance (or the biased one:
   * `runningVarEstimator`); `null` when `trackRunningStats` is false.
   */
  readonly runningVar: Float32Array | null;

  readonly #state: ModuleState;
  readonly #passes: ModulePasses;
  #renorm: RenormLimits | null;
  #training = true;
  #disposed = false;

  /**
   * @param numFeatures the number of channels `C`, a positive integer.
   * @throws RangeError or TypeError for an invalid option; RangeError when the per-channel
   *   buffers cannot fit in wasm memory; Error when the back end is not loaded (call
   *   `await init()` first, except for `backend: "js"`).
   */
  constructor(numFeatures: number, options: BatchNormOptions = {}) {
    const where = "new BatchNorm";
    const config = moduleConfig(numFeatures, options, where);
    const impl = resolveBackend(config.backend);
    // Refused before anything is allocated, in the back end's memory or on the JS side.
    checkScratchFits(impl, numFeatures, where, "numFeatures", coefficientCacheArrays(impl));
    this.backend = impl.kind;
    this.numFeatures = numFeatures;
    this.eps = config.eps;
    this.momentum = config.momentum;
    this.affine = config.affine;
    this.trackRunningStats = config.trackRunningStats;
    this.runningVarEstimator = config.runningVarEstimator;
    this.layout = config.layout;
    this.activation = config.activation;
    this.negativeSlope = config.negativeSlope;
    this.virtualBatchSize = config.virtualBatchSize;
    this.#renorm = config.renorm;
    this.#state = new ModuleState(numFeatures, config, config.trackRunningStats);
    ({
      weight: this.weight,
      bias: this.bias,
      runningMean: this.runningMean,
      runningVar: this.runningVar,
    } = this.#state);
    const act = checkActivation(config.activation, config.negativeSlope, where);
    const settings = { ...config, state: this.#state, numFeatures, act };
    const module = this;
    const mode = {
      get training() {
        return module.#training;
      },
      get renorm() {
        return module.#renorm;
      },
      get ranks() {
        return module.ranks;
      },
    };
    this.#passes = new ModulePasses(impl, settings, mode, where);
    freeWhenCollected(this, this.#passes.buffers);
  }

  /** Whether the module is in training mode (the initial mode). */
  get training(): boolean {
    return this.#training;
  }

  /** Training batches seen while tracking running statistics. */
  get numBatchesTracked(): number {
    return this.#state.numBatchesTracked;
  }

  /**
   * Batch Renormalization's limits (see {@link BatchNormOptions.renorm}), or `null` for plain
   * batch norm. Settable between steps, e.g. to follow the paper's schedule.
   */
  get renorm(): RenormLimits | null {
    return this.#renorm;
  }

  set renorm(limits: RenormLimits | null) {
    const where = "BatchNorm.renorm";
    this.#live("renorm");
    const checked = checkRenorm(limits, where, "renorm");
    this.#renorm = renormNeedsRunningStats(checked, this.trackRunningStats, where, "renorm");
  }

  /**
   * Population statistics (Algorithm 2 of Ioffe & Szegedy 2015): resets the running
   * statistics and recomputes them from `batches`, `runningMean` as the average of the batch
   * means and `runningVar` as the average of the unbiased batch variances (`m/(m − 1)` times
   * each biased one, `m` values per channel in that batch); `numBatchesTracked` becomes the
   * number of batches. This equals PyTorch's cumulative average (`momentum: null`) over the same
   * batches, which also decides batches of different sizes: each counts once, whatever its
   * size (a small batch weighs as much as a large one), its variance unbiased with its own `m`;
   * give batches of one size for Algorithm 2's estimate proper. Ghost batches and renorm play no
   * part (each given batch is one batch); weights, options and mode are unchanged.
   *
   * @param batches an iterable (or async iterable: a Promise is returned) of Tensors of this
   *   module's back end or `{ x, shape }` with `x` a Float32Array or Tensor.
   * @throws TypeError / RangeError naming the bad batch (then nothing changes); Error when
   *   `trackRunningStats` is false.
   */
  recalibrate(batches: Iterable<CalibrationBatch>): void;
  recalibrate(batches: AsyncIterable<CalibrationBatch>): Promise<void>;
  recalibrate(
    batches: Iterable<CalibrationBatch> | AsyncIterable<CalibrationBatch>,
  ): void | Promise<void> {
    const where = "BatchNorm.recalibrate";
    this.#live("recalibrate");
    if (!this.trackRunningStats) {
      throw new Error(`${where}: the module has no running statistics (trackRunningStats: false)`);
    }
    const commit = (mean: Float64Array, variance: Float64Array, count: number) => {
      this.#live("recalibrate");
      this.#state.setRunningStats(mean, variance, count);
    };
    const target = { backend: this.#passes.impl, channels: this.numFeatures, layout: this.layout };
    return recalibrate({ ...target, commit }, batches, where);
  }

  /** Sets training mode (`mode = true`) or inference mode. Returns the module. */
  train(mode = true): this {
    this.#live("train");
    if (typeof mode !== "boolean")
      throw new TypeError(`BatchNorm.train: mode must be a boolean, got ${show(mode)}`);
    this.#training = mode;
    return this;
  }

  /** Inference mode: normalize with the running statistics. Same as `train(false)`. */
  eval(): this {
    return this.train(false);
  }

  /**
   * Allocates a zero-filled tensor in this module's back-end memory, for the zero-copy path.
   * Free it with `dispose()` (or `using`).
   *
   * @throws RangeError for an invalid shape, or when wasm memory cannot hold it (4 GiB at most).
   */
  tensor(shape: readonly number[]): Tensor {
    this.#live("tensor");
    return this.#passes.tensor(shape);
  }

  /**
   * Normalizes `x` of the given shape and returns a new array (copy-in/copy-out path).
   *
   * @param x the input, `product(shape)` values in row-major order. Must be a `Float32Array`:
   *   convert other arrays with `Float32Array.from(values)`.
   * @param shape `[N, C, ...spatial]` for NCHW or `[N, ...spatial, C]` for NHWC, with `C` =
   *   `numFeatures`; every dimension a positive integer.
   * @throws TypeError / RangeError for a bad `x` or `shape`, and RangeError when there is only
   *   one value per channel where batch statistics are used (training, or `trackRunningStats:
   *   false`); Error after `dispose()`.
   */
  forward(x: Float32Array, shape: readonly number[]): Float32Array;
  /**
   * Normalizes a tensor of this module's back end without copying it. Returns `options.out`
   * when given (same shape, not `x`), otherwise a new tensor that the caller disposes.
   */
  forward(x: Tensor, options?: { out?: Tensor }): Tensor;
  forward(
    x: Float32Array | Tensor,
    arg?: readonly number[] | { out?: Tensor },
  ): Float32Array | Tensor {
    this.#live("forward");
    return this.#passes.forward(x, arg);
  }

  /**
   * Gradients of the last forward (training or inference mode) for the upstream gradient `dy`.
   * Each forward can be differentiated once.
   *
   * After a training forward (batch statistics):
   * `dx = weight·invstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂))`; after an inference forward (running
   * statistics, constants): `dx = dy·weight·invstd`. Always `dBias = Σdy`, `dWeight = Σdy·x̂`.
   * It differentiates the forward as it ran: with the weight that forward used, even if
   * `weight` was changed since (and, on the zero-copy path, with the input tensor's values
   * now: leave that tensor unchanged until backward).
   *
   * @throws Error when there is no forward to differentiate (none yet, or already
   *   differentiated, or its input tensor was disposed); RangeError when `dy` does not match
   *   the forward's input; TypeError when `dy` is not a Float32Array or Tensor.
   */
  backward(dy: Float32Array): Gradients<Float32Array>;
  /**
   * The same on tensors: `dx` is `options.out` when given (it may be `dy`, or the forward's
   * input, which backward no longer needs once it has read it), otherwise a new tensor that the
   * caller disposes. With sigmoid, tanh or silu fused, a `dx` apart from both is faster: the
   * first pass writes `dy·act′(z)` there for the second, which otherwise evaluates it again.
   */
  backward(dy: Tensor, options?: { out?: Tensor }): Gradients<Tensor>;
  backward(
    dy: Float32Array | Tensor,
    options?: { out?: Tensor },
  ): Gradients<Float32Array | Tensor> {
    this.#live("backward");
    return this.#passes.backward(dy, options);
  }

  /**
   * The state, with PyTorch's keys: `weight` and `bias` (those the module has), `running_mean`,
   * `running_var` and `num_batches_tracked` (when `trackRunningStats`). Arrays are copies.
   */
  stateDict(): StateDict {
    this.#live("stateDict");
    return this.#state.stateDict();
  }

  /**
   * Copies a state into the module. The keys must be exactly those {@link BatchNorm.stateDict}
   * returns for this module's options; arrays (`Float32Array`, `Float64Array` or `number[]`)
   * must have `numFeatures` values; `num_batches_tracked` is an integer ≥ 0 (number or bigint).
   * Nothing is changed unless everything is valid.
   *
   * @throws TypeError or RangeError naming the bad key.
   */
  loadStateDict(stateDict: StateDictInput): void {
    this.#live("loadStateDict");
    this.#state.load(stateDict, "BatchNorm.loadStateDict");
  }

  /** PyTorch's `reset_running_stats()`: running mean 0, variance 1, `numBatchesTracked` 0. */
  resetRunningStats(): void {
    this.#live("resetRunningStats");
    this.#state.resetRunningStats();
  }

  /** PyTorch's `reset_parameters()`: the running statistics reset, weight 1 and bias 0. */
  resetParameters(): void {
    this.#live("resetParameters");
    this.#state.resetParameters();
  }

  /**
   * The module in inference mode as `y = scale·x + shift` per channel (`foldedAffineOf`: float64,
   * rounded once), which makes it a `FoldableBatchNorm` for `foldIntoLinear`/`foldIntoConv`.
   *
   * @throws RangeError without running statistics (`trackRunningStats: false`).
   */
  foldedAffine(): { scale: Float32Array; shift: Float32Array } {
    this.#live("foldedAffine");
    if (!this.trackRunningStats) {
      throw new RangeError(
        "BatchNorm.foldedAffine: the module has no running statistics (trackRunningStats: false): it normalizes every batch with the batch's own statistics, so there is no inference-mode affine map to fold",
      );
    }
    return foldedAffineOf(this);
  }

  /**
   * A module from a Keras / TF.js `BatchNormalization`'s weights and arguments: momentum flipped
   * to PyTorch's direction and the `"biased"` estimator, so that training continues as in Keras
   * (see `kerasRecipe` in convert.ts). It starts in training mode.
   */
  static fromKeras(weights: convert.KerasWeights, options?: convert.FromKerasOptions): BatchNorm {
    return convert.build(BatchNorm, convert.kerasRecipe(weights, options));
  }

  /** A module from an ONNX `BatchNormalization`'s inputs and attributes; see `fromKeras`. */
  static fromOnnx(
    initializers: convert.OnnxInitializers,
    options?: convert.FromOnnxOptions,
  ): BatchNorm {
    return convert.build(BatchNorm, convert.onnxRecipe(initializers, options));
  }

  /** Weights and arguments of the equivalent Keras `BatchNormalization` (`toKeras` in convert.ts). */
  toKeras(): convert.KerasExport {
    this.#live("toKeras");
    return convert.toKeras(this);
  }

  /** Inputs and attributes of the equivalent ONNX `BatchNormalization` (`toOnnx` in convert.ts). */
  toOnnx(): convert.OnnxExport {
    this.#live("toOnnx");
    return convert.toOnnx(this);
  }

  /** Frees the module's memory. Later calls throw; a second dispose does nothing. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    keepAlive(this);
    this.#passes.free();
  }

  /** `using bn = new BatchNorm(…)` disposes it at the end of the block. */
  [disposeSymbol](): void {
    this.dispose();
  }

  /**
   * The input ranks a subclass accepts (PyTorch's `BatchNorm1d/2d/3d` check them), with the
   * class's name and the forms it expects, for the error message; any rank ≥ 2 when absent.
   */
  protected readonly ranks?: Ranks;

  #live(method: string): void {
    if (this.#disposed) throw new Error(`BatchNorm.${method}: the module was disposed`);
  }
}
