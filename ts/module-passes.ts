/**
 * A module's passes and the memory it reuses between them: its per-channel buffers, the copy
 * API's buffers, and what a forward leaves for its backward. It runs the module's two call
 * forms (Float32Arrays copied in and out, or Tensors in place) over the shared algorithm
 * (`core.ts`, `variants.ts`); the module itself (`batch-norm.ts`) keeps the options, the state
 * and the public API.
 *
 * @module
 */
import type { Act } from "./activation.js";
import { type Backend, type Dims, dimsLength, type F32Buffer, perChannel } from "./backend.js";
import { CoefficientCache, coefficientCacheArrays } from "./coefficient-cache.js";
import { CopyBuffers } from "./copy-buffers.js";
import { applyForward, forwardCoefficients, type GradSums, updateRunningStats } from "./core.js";
import { isTyped, show, typeName } from "./errors.js";
import { BufferSet } from "./lifetime.js";
import type { RunningVarEstimator } from "./options.js";
import { allocScratch, type ChannelScratch } from "./scratch.js";
import { dimsOf, type Layout, sameShape } from "./shape.js";
import type { ModuleState } from "./state.js";
import { type BatchNormSync, syncGradSums } from "./sync.js";
import { checkOut, checkTensor, Tensor } from "./tensor.js";
import {
  batchStatsForward,
  ghostCount,
  type Part,
  PartScratch,
  partsBackward,
  type RenormLimits,
} from "./variants.js";

/** What {@link BatchNorm.backward} returns: `dx` is shaped like the input. */
export interface Gradients<T> {
  /** Gradient with respect to the input. */
  dx: T;
  /** Gradient with respect to `weight`, or `null` when the module has none. */
  dWeight: Float32Array | null;
  /** Gradient with respect to `bias`, or `null` when the module has none. */
  dBias: Float32Array | null;
}

/** The module's settings the passes read, fixed when it is made. */
export interface PassesSettings {
  readonly state: ModuleState;
  /** The activation fused after the normalization, or null. */
  readonly act: Act | null;
  readonly numFeatures: number;
  readonly layout: Layout;
  readonly eps: number;
  readonly momentum: number | null;
  readonly trackRunningStats: boolean;
  readonly runningVarEstimator: RunningVarEstimator;
  readonly virtualBatchSize: number | null;
  readonly sync: BatchNormSync | null;
}

/** The input ranks a subclass accepts, its name and the forms it expects (for errors). */
export interface Ranks {
  readonly accepted: readonly number[];
  readonly name: string;
  readonly forms: string;
}

/** What may change between calls, read from the module at each call. */
export interface PassesMode {
  readonly training: boolean;
  readonly renorm: RenormLimits | null;
  readonly ranks: Ranks | undefined;
}

/** What the last forward left for backward. */
interface Saved {
  /** The input: the copy API's buffer, or the caller's tensor. */
  x: F32Buffer | Tensor;
  shape: readonly number[];
  dims: Dims;
  /** The whole batch, or its ghost batches. */
  parts: readonly Part[];
  /** The replicas the forward's statistics were gathered over (backward gathers too), or null. */
  sync: BatchNormSync | null;
}

export class ModulePasses {
  readonly impl: Backend;
  /** Every buffer of the module in its back end's memory. */
  readonly buffers: BufferSet;
  readonly #settings: PassesSettings;
  readonly #mode: PassesMode;
  readonly #scratch: ChannelScratch;
  /** Per-forward arrays of the batch-statistics path (per ghost batch). */
  readonly #parts: PartScratch;
  readonly #copy: CopyBuffers;
  /** 1/sqrt(var + eps) of the last forward, and the weight it used: backward reads them. */
  readonly #invstd: Float64Array;
  readonly #forwardWeight: Float32Array | null;
  /** Whether the scratch still holds the inference coefficients of the state as it is. */
  readonly #coefficients: CoefficientCache;
  #saved: Saved | undefined;

  /**
   * Allocates the per-channel buffers, refused whole (RangeError) when they cannot fit; a
   * failure frees what was made.
   */
  constructor(impl: Backend, settings: PassesSettings, mode: PassesMode, where: string) {
    const C = settings.numFeatures;
    this.impl = impl;
    this.buffers = new BufferSet(impl);
    try {
      const reserve = coefficientCacheArrays(impl);
      this.#scratch = allocScratch(this.buffers, C, where, "numFeatures", reserve);
      this.#coefficients = new CoefficientCache(this.buffers, settings.state, C);
      this.#parts = new PartScratch(this.buffers, C);
      this.#parts.ensure(1);
    } catch (error) {
      this.buffers.free();
      throw error;
    }
    this.#settings = settings;
    this.#mode = mode;
    this.#copy = new CopyBuffers(this.buffers);
    this.#invstd = new Float64Array(C);
    this.#forwardWeight = settings.state.weight && new Float32Array(C);
  }

  tensor(shape: readonly number[]): Tensor {
    return Tensor.alloc(this.impl, shape, "BatchNorm.tensor");
  }

  /** `BatchNorm.forward` after the module checked it is alive. */
  forward(
    x: Float32Array | Tensor,
    arg: readonly number[] | { out?: Tensor } | undefined,
  ): Float32Array | Tensor {
    const where = "BatchNorm.forward";
    if (x instanceof Tensor) {
      const out = checkOut(arg, where);
      checkTensor(x, this.impl, where, "x");
      const dims = this.#dims(x.shape, where, "x.shape");
      if (out !== undefined) {
        checkTensor(out, this.impl, where, "options.out");
        sameShape(out.shape, x.shape, where, "options.out");
        if (out === x) {
          throw new RangeError(`${where}: options.out must not be x: backward needs the input`);
        }
      }
      const y = out ?? this.tensor(x.shape);
      try {
        this.#run(x, x.buffer, y.buffer, dims, x.shape);
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
    const input = this.impl.pin(x);
    const previous = this.#copy.x;
    const buffers = this.#copy.forward(x.length);
    if (buffers.replaced && this.#saved?.x === previous) this.#saved = undefined;
    buffers.x.view().set(input());
    this.#run(buffers.x, buffers.x, buffers.y, dims, shape);
    return buffers.y.view().slice();
  }

  /** `BatchNorm.backward` after the module checked it is alive. */
  backward(
    dy: Float32Array | Tensor,
    options: { out?: Tensor } | undefined,
  ): Gradients<Float32Array | Tensor> {
    const where = "BatchNorm.backward";
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
      checkTensor(dy, this.impl, where, "dy");
      sameShape(dy.shape, saved.shape, where, "dy");
      if (out !== undefined) {
        checkTensor(out, this.impl, where, "options.out");
        sameShape(out.shape, saved.shape, where, "options.out");
      }
      const dx = out ?? this.tensor(saved.shape);
      try {
        return { dx, ...this.#differentiate(saved, x, dy.buffer, dx.buffer) };
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
    const n = dimsLength(saved.dims);
    if (dy.length !== n) {
      throw new RangeError(
        `${where}: dy has ${dy.length} values but the forward input [${saved.shape.join(", ")}] had ${n}`,
      );
    }
    const upstream = this.impl.pin(dy);
    const dyb = this.#copy.output(n);
    const { act } = this.#settings;
    // A dx apart from dy, where the first backward pass can write g there for the second.
    const apart = act !== null && this.impl.writesGradient?.(act, saved.dims) === true;
    const dxb = apart ? this.#copy.gradient(n) : dyb;
    dyb.view().set(upstream());
    const grads = this.#differentiate(saved, x, dyb, dxb);
    return { dx: dxb.view().slice(), ...grads };
  }

  /** Frees every buffer; the passes are not used again. */
  free(): void {
    this.#saved = undefined;
    this.buffers.free();
  }

  /** Runs a forward whose arguments are all checked; nothing here can fail half-way. */
  #run(
    input: F32Buffer | Tensor,
    x: F32Buffer,
    y: F32Buffer,
    dims: Dims,
    shape: readonly number[],
  ): void {
    const { act } = this.#settings;
    const s = this.#scratch;
    const state = this.#settings.state;
    const batchStats = this.#mode.training || !this.#settings.trackRunningStats;
    const rm = state.runningMean as Float32Array;
    const rv = state.runningVar as Float32Array;
    const weight = this.#forwardWeight;
    // PyTorch's SyncBatchNorm gathers in training only; inference is each replica's own.
    const sync = this.#mode.training ? this.#settings.sync : null;
    let parts: readonly Part[];
    if (batchStats) {
      this.#coefficients.invalidate();
      const ghosts = ghostCount(this.#settings.virtualBatchSize, shape, dims, "BatchNorm.forward");
      // The only allocation (when the ghost count changed): before anything is changed.
      if (this.#parts.ensure(ghosts)) this.#saved = undefined;
      // A synchronized forward's gather can fail after the moments pass overwrote the last
      // forward's centre: then there is no forward left to differentiate.
      if (sync !== null) this.#saved = undefined;
      // Renorm corrects toward the running statistics as they were before this step.
      const renorm =
        this.#mode.training && this.#mode.renorm
          ? { limits: this.#mode.renorm, running: { mean: rm, variance: rv } }
          : null;
      const plan = { affine: state, eps: this.#settings.eps, ghosts, renorm, sync, act };
      const result = batchStatsForward(this.impl, x, y, dims, s, this.#parts, plan);
      parts = result.parts;
      if (this.#mode.training && this.#settings.trackRunningStats) {
        state.numBatchesTracked += 1;
        const m = this.#settings.momentum ?? 1 / state.numBatchesTracked;
        const running = { mean: rm, variance: rv };
        const estimator = this.#settings.runningVarEstimator;
        updateRunningStats(this.impl, s, running, result, m, estimator);
      }
    } else {
      s.center.view().set(rm);
      // scale and invstd still hold when weight and runningVar kept their bits; shift is the bias.
      if (!this.#coefficients.holds()) {
        forwardCoefficients(s, state, rv, this.#settings.eps, this.#invstd);
      } else if (state.bias !== null) s.shift.view().set(state.bias);
      applyForward(this.impl, x, y, dims, s.center, s, act);
      const record = { dims, center: s.center, invstd: this.#invstd, weight, batchStats, act };
      parts = [{ offset: 0, length: dimsLength(dims), record }];
    }
    if (weight !== null) weight.set(state.weight as Float32Array);
    this.#saved = { x: input, shape: [...shape], dims, parts, sync };
  }

  /** Runs a backward whose arguments are all checked; consumes the saved forward. */
  #differentiate(saved: Saved, x: F32Buffer, dy: F32Buffer, dx: F32Buffer) {
    this.#coefficients.invalidate();
    const { sync } = saved;
    const reduce = sync && ((l: GradSums) => syncGradSums(sync, l, "BatchNorm.backward"));
    const weight = this.#forwardWeight;
    const grads = partsBackward(
      this.impl,
      saved.parts,
      weight,
      { x, dy, dx },
      this.#scratch,
      reduce,
    );
    this.#saved = undefined;
    const { state } = this.#settings;
    return {
      dWeight: state.weight && grads.dWeight,
      dBias: state.bias && grads.dBias,
    };
  }

  #dims(shape: readonly number[], where: string, name: string): Dims {
    const dims = dimsOf(shape, this.#settings.layout, where, name, this.#settings.numFeatures);
    const ranks = this.#mode.ranks;
    if (ranks !== undefined && !ranks.accepted.includes(shape.length)) {
      throw new RangeError(
        `${where}: ${ranks.name} expects ${ranks.forms} input, got ${name} [${shape.join(", ")}] (rank ${shape.length})`,
      );
    }
    // PyTorch's rule, checked whenever batch statistics are used: in training, and in
    // inference too when there are no running statistics (`trackRunningStats: false`). A
    // synchronized training forward checks the whole batch's count instead (sync.ts).
    const synced = this.#mode.training && this.#settings.sync !== null;
    if (
      (this.#mode.training || !this.#settings.trackRunningStats) &&
      !synced &&
      perChannel(dims) <= 1
    ) {
      const when = this.#mode.training
        ? "when training"
        : "when using batch statistics (trackRunningStats: false)";
      throw new RangeError(
        `${where}: expected more than 1 value per channel ${when}, got input shape [${shape.join(", ")}]`,
      );
    }
    if (this.#mode.training || !this.#settings.trackRunningStats) {
      ghostCount(this.#settings.virtualBatchSize, shape, dims, where);
    }
    return dims;
  }
}
