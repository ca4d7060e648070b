/**
 * The BatchNorm module: PyTorch's `BatchNorm1d/2d/3d` with its names and semantics. It keeps
 * the state (parameters, running statistics, training mode), the memory it reuses between calls
 * (per-channel buffers, the copy API's buffers) and what a forward leaves for its backward; the
 * algorithm itself is `core.ts`, shared with the functional ops.
 *
 * @module
 */

import { type Act, type Activation, checkActivation } from "./activation.js";
import {
  type Backend,
  type BackendKind,
  type Dims,
  dimsLength,
  type F32Buffer,
  perChannel,
} from "./backend.js";
import * as convert from "./convert.js";
import { CopyBuffers } from "./copy-buffers.js";
import {
  applyForward,
  backwardPasses,
  batchMoments,
  type ForwardRecord,
  forwardCoefficients,
  type ParamGradients,
  updateRunningStats,
} from "./core.js";
import { checkChoice, isTyped, show, typeName } from "./errors.js";
import { type FoldableBatchNorm, foldedAffineOf } from "./fold.js";
import { resolveBackend } from "./init.js";
import { BufferSet, freeWhenCollected, keepAlive } from "./lifetime.js";
import {
  BACKEND_CHOICES,
  type BatchNormOptions,
  moduleConfig,
  type RunningVarEstimator,
} from "./options.js";
import { allocScratch, type ChannelScratch } from "./scratch.js";
import { dimsOf, type Layout, sameShape } from "./shape.js";
import { ModuleState, type StateDict, type StateDictInput } from "./state.js";
import { checkOut, checkTensor, disposeSymbol, Tensor } from "./tensor.js";

/** What {@link BatchNorm.backward} returns: `dx` is shaped like the input. */
export interface Gradients<T> {
  /** Gradient with respect to the input. */
  dx: T;
  /** Gradient with respect to `weight`, or `null` when the module has no weight. */
  dWeight: Float32Array | null;
  /** Gradient with respect to `bias`, or `null` when the module has no bias. */
  dBias: Float32Array | null;
}

/** What the last forward left for backward. */
interface Saved {
  /** The input: the copy API's buffer, or the caller's tensor. */
  x: F32Buffer | Tensor;
  shape: readonly number[];
  record: ForwardRecord;
}

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
 * Memory: a module keeps its per-channel buffers (about 450 bytes per channel in wasm memory),
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
  readonly #impl: Backend;
  /** Every buffer this module holds in its back end's memory. */
  readonly #buffers: BufferSet;
  readonly #scratch: ChannelScratch;
  readonly #copy: CopyBuffers;
  /** 1/sqrt(var + eps) of the last forward, and the weight it used: backward reads them. */
  readonly #invstd: Float64Array;
  readonly #forwardWeight: Float32Array | null;
  readonly #act: Act | null;
  #training = true;
  #saved: Saved | undefined;
  #disposed = false;

  /**
   * @param numFeatures the number of channels `C`, a positive integer.
   * @throws RangeError or TypeError for an invalid option; RangeError when the per-channel
   *   buffers cannot fit in wasm memory; Error when the back end is not loaded (call
   *   `await init()` first, except for `backend: "js"`).
   */
  constructor(numFeatures: number, options: BatchNormOptions = {}) {
    const where = "new BatchNorm";
    if (!Number.isSafeInteger(numFeatures) || numFeatures <= 0) {
      throw new RangeError(
        `${where}: numFeatures must be a positive integer, got ${show(numFeatures)}`,
      );
    }
    const config = moduleConfig(options, where);
    this.#impl = resolveBackend(config.backend);
    this.backend = this.#impl.kind;
    // The back end's memory first (refused whole when it cannot fit): when it fails, nothing
    // was allocated on the JS side.
    this.#buffers = new BufferSet(this.#impl);
    try {
      this.#scratch = allocScratch(this.#buffers, numFeatures, where, "numFeatures");
    } catch (error) {
      this.#buffers.free();
      throw error;
    }
    freeWhenCollected(this, this.#buffers);
    this.#copy = new CopyBuffers(this.#buffers);
    this.numFeatures = numFeatures;
    this.eps = config.eps;
    this.momentum = config.momentum;
    this.affine = config.affine;
    this.trackRunningStats = config.trackRunningStats;
    this.runningVarEstimator = config.runningVarEstimator;
    this.layout = config.layout;
    this.activation = config.activation;
    this.negativeSlope = config.negativeSlope;
    this.#act = checkActivation(config.activation, config.negativeSlope, where);
    this.#state = new ModuleState(numFeatures, config, config.trackRunningStats);
    ({
      weight: this.weight,
      bias: this.bias,
      runningMean: this.runningMean,
      runningVar: this.runningVar,
    } = this.#state);
    this.#invstd = new Float64Array(numFeatures);
    this.#forwardWeight = this.weight && new Float32Array(numFeatures);
  }

  /** Whether the module is in training mode (the initial mode). */
  get training(): boolean {
    return this.#training;
  }

  /** Training batches seen while tracking running statistics. */
  get numBatchesTracked(): number {
    return this.#state.numBatchesTracked;
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
    return Tensor.alloc(this.#impl, shape, "BatchNorm.tensor");
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
    const where = "BatchNorm.forward";
    this.#live("forward");
    if (x instanceof Tensor) {
      const out = checkOut(arg, where);
      checkTensor(x, this.#impl, where, "x");
      const dims = this.#dims(x.shape, where, "x.shape");
      if (out !== undefined) {
        checkTensor(out, this.#impl, where, "options.out");
        sameShape(out.shape, x.shape, where, "options.out");
        if (out === x) {
          throw new RangeError(`${where}: options.out must not be x: backward needs the input`);
        }
      }
      const y = out ?? this.tensor(x.shape);
      try {
        this.#forward(x, x.buffer, y.buffer, dims, x.shape);
      } catch (error) {
        if (y !== out) y.dispose();
        throw error;
      }
      return y;
    }
    if (!isTyped(x, "Float32Array")) {
      throw new TypeError(
        `${where}: x must be a Float32Array or a Tensor, got ${typeName(x)} (convert with Float32Array.from)`,
      );
    }
    if (!Array.isArray(arg)) {
      throw new TypeError(`${where}: shape must be an array of dimensions, got ${show(arg)}`);
    }
    const shape = arg as readonly number[];
    const dims = this.#dims(shape, where, "shape");
    if (x.length !== dimsLength(dims)) {
      throw new RangeError(
        `${where}: x has ${x.length} values but shape [${shape.join(", ")}] needs ${dimsLength(dims)}`,
      );
    }
    const input = this.#impl.pin(x);
    const previous = this.#copy.x;
    const buffers = this.#copy.forward(x.length);
    if (buffers.replaced && this.#saved?.x === previous) this.#saved = undefined;
    buffers.x.view().set(input());
    this.#forward(buffers.x, buffers.x, buffers.y, dims, shape);
    return buffers.y.view().slice();
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
   * caller disposes.
   */
  backward(dy: Tensor, options?: { out?: Tensor }): Gradients<Tensor>;
  backward(
    dy: Float32Array | Tensor,
    options?: { out?: Tensor },
  ): Gradients<Float32Array | Tensor> {
    const where = "BatchNorm.backward";
    this.#live("backward");
    const out = checkOut(options, where);
    const saved = this.#saved;
    if (saved === undefined) {
      throw new Error(
        `${where}: no forward() to differentiate: call forward() first (each forward can be differentiated once)`,
      );
    }
    if (saved.x instanceof Tensor && saved.x.disposed) {
      throw new Error(`${where}: the input tensor of the last forward() was disposed`);
    }
    const x = saved.x instanceof Tensor ? saved.x.buffer : saved.x;
    if (dy instanceof Tensor) {
      checkTensor(dy, this.#impl, where, "dy");
      sameShape(dy.shape, saved.shape, where, "dy");
      if (out !== undefined) {
        checkTensor(out, this.#impl, where, "options.out");
        sameShape(out.shape, saved.shape, where, "options.out");
      }
      const dx = out ?? this.tensor(saved.shape);
      try {
        return { dx, ...this.#backward(saved, x, dy.buffer, dx.buffer) };
      } catch (error) {
        if (dx !== out) dx.dispose();
        throw error;
      }
    }
    if (!isTyped(dy, "Float32Array")) {
      throw new TypeError(`${where}: dy must be a Float32Array or a Tensor, got ${typeName(dy)}`);
    }
    if (out !== undefined) {
      throw new TypeError(
        `${where}: options.out is for Tensor gradients; with a Float32Array dy, dx is a new Float32Array`,
      );
    }
    const n = dimsLength(saved.record.dims);
    if (dy.length !== n) {
      throw new RangeError(
        `${where}: dy has ${dy.length} values but the forward input [${saved.shape.join(", ")}] had ${n}`,
      );
    }
    const upstream = this.#impl.pin(dy);
    const dyb = this.#copy.output(n);
    dyb.view().set(upstream());
    const grads = this.#backward(saved, x, dyb, dyb);
    return { dx: dyb.view().slice(), ...grads };
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
    return BatchNorm.#build(convert.kerasRecipe(weights, options));
  }

  /** A module from an ONNX `BatchNormalization`'s inputs and attributes; see `fromKeras`. */
  static fromOnnx(
    initializers: convert.OnnxInitializers,
    options?: convert.FromOnnxOptions,
  ): BatchNorm {
    return BatchNorm.#build(convert.onnxRecipe(initializers, options));
  }

  static #build(recipe: convert.ModuleRecipe): BatchNorm {
    const bn = new BatchNorm(recipe.numFeatures, recipe.options);
    bn.loadStateDict(recipe.state);
    return bn;
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
    this.#buffers.free();
    this.#saved = undefined;
  }

  /** `using bn = new BatchNorm(…)` disposes it at the end of the block. */
  [disposeSymbol](): void {
    this.dispose();
  }

  /** Runs a forward whose arguments are all checked; nothing here can fail half-way. */
  #forward(
    input: F32Buffer | Tensor,
    x: F32Buffer,
    y: F32Buffer,
    dims: Dims,
    shape: readonly number[],
  ): void {
    const s = this.#scratch;
    const state = this.#state;
    const batchStats = this.#training || !this.trackRunningStats;
    let center: F32Buffer;
    if (batchStats) {
      batchMoments(this.#impl, x, dims, s);
      forwardCoefficients(s, state, s.variance.view(), this.eps, this.#invstd);
      center = s.mean;
    } else {
      // Recomputed on every call: checking whether the parameters or running statistics
      // changed since the last call (they are updated in place) costs as much as this.
      s.center.view().set(state.runningMean as Float32Array);
      forwardCoefficients(s, state, state.runningVar as Float32Array, this.eps, this.#invstd);
      center = s.center;
    }
    applyForward(this.#impl, x, y, dims, center, s, this.#act);
    if (this.#training && this.trackRunningStats) {
      state.numBatchesTracked += 1;
      const m = this.momentum ?? 1 / state.numBatchesTracked;
      const rm = state.runningMean as Float32Array;
      const rv = state.runningVar as Float32Array;
      const n = perChannel(dims);
      updateRunningStats(rm, rv, s.mean.view(), s.variance.view(), n, m, this.runningVarEstimator);
    }
    const weight = this.#forwardWeight;
    if (weight !== null) weight.set(state.weight as Float32Array);
    this.#saved = {
      x: input,
      shape: [...shape],
      record: { dims, center, invstd: this.#invstd, weight, batchStats, act: this.#act },
    };
  }

  /** Runs a backward whose arguments are all checked; consumes the saved forward. */
  #backward(saved: Saved, x: F32Buffer, dy: F32Buffer, dx: F32Buffer) {
    const grads: ParamGradients = backwardPasses(
      this.#impl,
      saved.record,
      x,
      dy,
      dx,
      this.#scratch,
    );
    this.#saved = undefined;
    return {
      dWeight: this.weight && grads.dWeight,
      dBias: this.bias && grads.dBias,
    };
  }

  /**
   * The input ranks a subclass accepts (PyTorch's `BatchNorm1d/2d/3d` check them), with the
   * class's name and the forms it expects, for the error message; any rank ≥ 2 when absent.
   */
  protected readonly ranks?: {
    readonly accepted: readonly number[];
    readonly name: string;
    readonly forms: string;
  };

  #dims(shape: readonly number[], where: string, name: string): Dims {
    const dims = dimsOf(shape, this.layout, where, name, this.numFeatures);
    const ranks = this.ranks;
    if (ranks !== undefined && !ranks.accepted.includes(shape.length)) {
      throw new RangeError(
        `${where}: ${ranks.name} expects ${ranks.forms} input, got ${name} [${shape.join(", ")}] (rank ${shape.length})`,
      );
    }
    // PyTorch's rule, checked whenever batch statistics are used: in training, and in
    // inference too when there are no running statistics (`trackRunningStats: false`).
    if ((this.#training || !this.trackRunningStats) && perChannel(dims) <= 1) {
      const when = this.#training
        ? "when training"
        : "when using batch statistics (trackRunningStats: false)";
      throw new RangeError(
        `${where}: expected more than 1 value per channel ${when}, got input shape [${shape.join(", ")}]`,
      );
    }
    return dims;
  }

  #live(method: string): void {
    if (this.#disposed) throw new Error(`BatchNorm.${method}: the module was disposed`);
  }
}

/**
 * Bytes of linear memory that a wasm back end's instance has now (`memory.buffer.byteLength`;
 * wasm memory grows and never shrinks); 0 for the JS back end, which has none. All modules and
 * tensors of one back end share its instance. For monitoring and leak tests.
 *
 * @throws Error when the back end is not loaded (call `await init()` first).
 */
export function memoryBytes(backend: "auto" | BackendKind = "auto"): number {
  return resolveBackend(
    checkChoice(backend, BACKEND_CHOICES, "memoryBytes", "backend"),
  ).memoryBytes();
}
