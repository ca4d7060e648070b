/**
 * The BatchNorm module: options, state, train/eval, forward and backward, with PyTorch's
 * semantics and names.
 *
 * @module
 */
import {
  type Backend,
  type BackendKind,
  type Dims,
  dimsLength,
  type F32Buffer,
} from "./backend.js";
import { resolveBackend } from "./init.js";
import { disposeSymbol, Tensor } from "./tensor.js";
import { WasmBackend } from "./wasm/backend-wasm.js";

/** Where the channel axis is: `[N, C, ...spatial]` or `[N, ...spatial, C]`. 2-D `[N, C]` is both. */
export type Layout = "NCHW" | "NHWC";

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
  /** Default `"NCHW"`. */
  layout?: Layout;
  /**
   * Which implementation runs the kernels. `"auto"` (default) takes the best that
   * {@link init} loaded: SIMD wasm, else scalar wasm, else JS.
   */
  backend?: "auto" | BackendKind;
}

/** A module's state, with PyTorch's `state_dict()` keys. Absent keys: see {@link BatchNorm.stateDict}. */
export interface StateDict {
  weight?: Float32Array;
  bias?: Float32Array;
  running_mean?: Float32Array;
  running_var?: Float32Array;
  num_batches_tracked?: number;
}

/** What {@link BatchNorm.loadStateDict} accepts: a {@link StateDict}, or one with wider types. */
export interface StateDictInput {
  weight?: Float32Array | Float64Array | readonly number[];
  bias?: Float32Array | Float64Array | readonly number[];
  running_mean?: Float32Array | Float64Array | readonly number[];
  running_var?: Float32Array | Float64Array | readonly number[];
  num_batches_tracked?: number | bigint;
}

/** What {@link BatchNorm.backward} returns: `dx` is shaped like the input. */
export interface Gradients<T> {
  /** Gradient with respect to the input. */
  dx: T;
  /** Gradient with respect to `weight`, or `null` when `affine` is false. */
  dWeight: Float32Array | null;
  /** Gradient with respect to `bias`, or `null` when `affine` is false. */
  dBias: Float32Array | null;
}

/** What the last training or inference forward left for backward. */
interface Saved {
  /** The input: a module-owned copy, or the caller's tensor. */
  x: F32Buffer | Tensor;
  dims: Dims;
  shape: readonly number[];
  /** The mean the input was centred with, and 1/sqrt(var + eps), per channel. */
  center: Float32Array;
  invstd: Float64Array;
  /** The weight the forward used: backward differentiates that forward, whatever came since. */
  weight: Float32Array | null;
  /** Batch statistics (gradient flows through them) or running statistics (constants). */
  batchStats: boolean;
}

type Six = [F32Buffer, F32Buffer, F32Buffer, F32Buffer, F32Buffer, F32Buffer];

const LAYOUTS: readonly Layout[] = ["NCHW", "NHWC"];
const BACKENDS: readonly ("auto" | BackendKind)[] = ["auto", "simd", "scalar", "js"];

/**
 * Batch normalization over the channel axis (Ioffe & Szegedy, 2015), like PyTorch's
 * `BatchNorm1d/2d/3d`: `y = weight · (x − mean) / sqrt(var + eps) + bias`.
 *
 * In training mode (the initial mode) `mean` and `var` are the batch's per-channel mean and
 * biased variance, and the running statistics are updated with the unbiased variance. In
 * inference mode ({@link BatchNorm.eval}) the running statistics are used.
 *
 * Two ways to call it: with `Float32Array`s (copied in and out), or with {@link Tensor}s made by
 * {@link BatchNorm.tensor}, which live in the back end's memory and are not copied.
 *
 * Bad arguments throw a `TypeError` or `RangeError` naming the argument, what was expected and
 * what came, and leave the module exactly as it was.
 *
 * @example
 * ```ts
 * await init();
 * const bn = new BatchNorm(64);
 * const y = bn.forward(x, [8, 64, 32, 32]);
 * const { dx, dWeight, dBias } = bn.backward(dy);
 * ```
 */
export class BatchNorm {
  /** Number of channels `C`. */
  readonly numFeatures: number;
  readonly eps: number;
  readonly momentum: number | null;
  readonly affine: boolean;
  readonly trackRunningStats: boolean;
  readonly layout: Layout;
  /** The back end this module runs on. */
  readonly backend: BackendKind;
  /** γ, per channel (initially 1); `null` when `affine` is false. Update it in place. */
  readonly weight: Float32Array | null;
  /** β, per channel (initially 0); `null` when `affine` is false. Update it in place. */
  readonly bias: Float32Array | null;
  /** Running mean (initially 0); `null` when `trackRunningStats` is false. */
  readonly runningMean: Float32Array | null;
  /** Running unbiased variance (initially 1); `null` when `trackRunningStats` is false. */
  readonly runningVar: Float32Array | null;

  #numBatchesTracked = 0;
  #training = true;
  #impl: Backend;
  /** Per-channel arrays in the back end's memory: kernel parameters and results. */
  #channel: F32Buffer[] = [];
  /** The six per-channel buffers, in the order the two passes below name them. */
  get #six(): Six {
    return this.#channel as Six;
  }
  #ws: F32Buffer | undefined;
  /** Module-owned input and output buffers of the copy API, reused while the size holds. */
  #copyX: F32Buffer | undefined;
  #copyY: F32Buffer | undefined;
  #saved: Saved | undefined;
  #disposed = false;

  /**
   * @param numFeatures the number of channels `C`, a positive integer.
   * @throws RangeError or TypeError for an invalid option; Error when the back end is not
   *   loaded (call `await init()` first, except for `backend: "js"`).
   */
  constructor(numFeatures: number, options: BatchNormOptions = {}) {
    const where = "new BatchNorm";
    if (!Number.isSafeInteger(numFeatures) || numFeatures <= 0) {
      throw new RangeError(
        `${where}: numFeatures must be a positive integer, got ${show(numFeatures)}`,
      );
    }
    if (typeof options !== "object" || options === null || Array.isArray(options)) {
      throw new TypeError(`${where}: options must be an object, got ${show(options)}`);
    }
    const {
      eps = 1e-5,
      momentum = 0.1,
      affine = true,
      trackRunningStats = true,
      layout = "NCHW",
      backend = "auto",
    } = options;
    if (typeof eps !== "number" || !(eps >= 0) || eps === Infinity) {
      throw new RangeError(`${where}: options.eps must be a finite number ≥ 0, got ${show(eps)}`);
    }
    if (momentum !== null && (typeof momentum !== "number" || !(momentum >= 0 && momentum <= 1))) {
      throw new RangeError(
        `${where}: options.momentum must be in [0, 1] or null, got ${show(momentum)}`,
      );
    }
    if (typeof affine !== "boolean" || typeof trackRunningStats !== "boolean") {
      const [name, value] =
        typeof affine !== "boolean" ? ["affine", affine] : ["trackRunningStats", trackRunningStats];
      throw new TypeError(`${where}: options.${name} must be a boolean, got ${show(value)}`);
    }
    if (!LAYOUTS.includes(layout)) {
      throw new RangeError(
        `${where}: options.layout must be "NCHW" or "NHWC", got ${show(layout)}`,
      );
    }
    if (!BACKENDS.includes(backend)) {
      throw new RangeError(
        `${where}: options.backend must be "auto", "simd", "scalar" or "js", got ${show(backend)}`,
      );
    }
    this.#impl = resolveBackend(backend);
    this.backend = this.#impl.kind;
    // Six per-channel float32 arrays live in wasm memory: refuse what cannot fit in wasm32's
    // 4 GiB before allocating (and growing the memory for) any of it.
    if (this.#impl instanceof WasmBackend && numFeatures * 4 * 6 > 2 ** 32) {
      throw new RangeError(
        `${where}: numFeatures = ${numFeatures} is too large: its per-channel arrays need ` +
          `${numFeatures * 24} bytes of wasm memory, which holds at most 4 GiB`,
      );
    }
    // The back end's memory first: when it fails, nothing was allocated on the JS side.
    try {
      for (let i = 0; i < 6; i++) this.#channel.push(this.#impl.alloc(numFeatures));
      this.#ws = this.#impl.allocWorkspace(numFeatures);
    } catch (error) {
      this.dispose();
      throw error;
    }
    this.numFeatures = numFeatures;
    this.eps = eps;
    this.momentum = momentum;
    this.affine = affine;
    this.trackRunningStats = trackRunningStats;
    this.layout = layout;
    this.weight = affine ? new Float32Array(numFeatures).fill(1) : null;
    this.bias = affine ? new Float32Array(numFeatures) : null;
    this.runningMean = trackRunningStats ? new Float32Array(numFeatures) : null;
    this.runningVar = trackRunningStats ? new Float32Array(numFeatures).fill(1) : null;
  }

  /** Whether the module is in training mode (the initial mode). */
  get training(): boolean {
    return this.#training;
  }

  /** Training batches seen while tracking running statistics. */
  get numBatchesTracked(): number {
    return this.#numBatchesTracked;
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
    const length = shapeLength(shape, "BatchNorm.tensor", "shape");
    return new Tensor(this.#impl, shape, this.#impl.alloc(length));
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
      const out = outOption(arg, where);
      this.#own(x, where, "x");
      const dims = this.#dims(x.shape, where, "x.shape");
      this.#checkStats(dims, x.shape, where);
      if (out !== undefined) {
        this.#own(out, where, "options.out");
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
    this.#checkStats(dims, shape, where);
    const input = this.#pin(x);
    const [copyX, yb] = this.#copyBuffers(x.length, x.length);
    const xb = copyX as F32Buffer;
    xb.view().set(input());
    this.#run(xb, xb, yb, dims, shape);
    return yb.view().slice();
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
    const out = outOption(options, where);
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
      this.#own(dy, where, "dy");
      sameShape(dy.shape, saved.shape, where, "dy");
      if (out !== undefined) {
        this.#own(out, where, "options.out");
        sameShape(out.shape, saved.shape, where, "options.out");
      }
      const dx = out ?? this.tensor(saved.shape);
      try {
        return { dx, ...this.#gradients(saved, x, dy.buffer, dx.buffer) };
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
    const upstream = this.#pin(dy);
    const dyb = this.#copyBuffers(undefined, n)[1];
    dyb.view().set(upstream());
    const grads = this.#gradients(saved, x, dyb, dyb);
    return { dx: dyb.view().slice(), ...grads };
  }

  /**
   * The state, with PyTorch's keys: `weight` and `bias` (when `affine`), `running_mean`,
   * `running_var` and `num_batches_tracked` (when `trackRunningStats`). Arrays are copies.
   */
  stateDict(): StateDict {
    this.#live("stateDict");
    const sd: StateDict = {};
    if (this.weight !== null && this.bias !== null) {
      sd.weight = this.weight.slice();
      sd.bias = this.bias.slice();
    }
    if (this.runningMean !== null && this.runningVar !== null) {
      sd.running_mean = this.runningMean.slice();
      sd.running_var = this.runningVar.slice();
      sd.num_batches_tracked = this.#numBatchesTracked;
    }
    return sd;
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
    const where = "BatchNorm.loadStateDict";
    this.#live("loadStateDict");
    if (typeof stateDict !== "object" || stateDict === null) {
      throw new TypeError(`${where}: stateDict must be an object, got ${show(stateDict)}`);
    }
    const expected = Object.keys(this.stateDict());
    const given = Object.keys(stateDict);
    const missing = expected.filter((k) => !given.includes(k));
    const unexpected = given.filter((k) => !expected.includes(k));
    if (missing.length > 0 || unexpected.length > 0) {
      throw new RangeError(
        `${where}: expected keys [${expected.join(", ")}]` +
          (missing.length > 0 ? `; missing: ${missing.join(", ")}` : "") +
          (unexpected.length > 0 ? `; unexpected: ${unexpected.join(", ")}` : ""),
      );
    }
    const sd = stateDict as Record<string, unknown>;
    const arrays = (["weight", "bias", "running_mean", "running_var"] as const)
      .filter((k) => k in sd)
      .map((k) => [k, this.#channelValues(sd[k], where, k)] as const);
    let tracked = this.#numBatchesTracked;
    if ("num_batches_tracked" in sd) {
      const v = sd.num_batches_tracked;
      const num = typeof v === "bigint" ? Number(v) : v;
      if (typeof num !== "number") {
        throw new TypeError(
          `${where}: num_batches_tracked must be a number or bigint, got ${typeName(v)}`,
        );
      }
      if (!Number.isSafeInteger(num) || num < 0) {
        throw new RangeError(
          `${where}: num_batches_tracked must be an integer ≥ 0, got ${show(v)}`,
        );
      }
      tracked = num;
    }
    const targets = {
      weight: this.weight,
      bias: this.bias,
      running_mean: this.runningMean,
      running_var: this.runningVar,
    };
    for (const [k, values] of arrays) targets[k]?.set(values);
    this.#numBatchesTracked = tracked;
  }

  /** Frees the module's memory. Later calls throw; a second dispose does nothing. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const b of [...this.#channel, this.#ws, this.#copyX, this.#copyY]) b?.free();
    this.#channel = [];
    this.#ws = this.#copyX = this.#copyY = undefined;
    this.#saved = undefined;
  }

  /** `using bn = new BatchNorm(…)` disposes it at the end of the block. */
  [disposeSymbol](): void {
    this.dispose();
  }

  /** Runs a forward whose arguments are all checked; nothing here can fail half-way. */
  #run(
    input: F32Buffer | Tensor,
    x: F32Buffer,
    y: F32Buffer,
    dims: Dims,
    shape: readonly number[],
  ) {
    const C = this.numFeatures;
    const [center, scale, shift, , mean, variance] = this.#six;
    const ws = this.#ws as F32Buffer;
    const batchStats = this.#training || !this.trackRunningStats;
    const invstd = new Float64Array(C);
    let centerValues: Float32Array;
    let varianceValues: Float32Array;
    if (batchStats) {
      this.#impl.moments(x, dims, ws, mean, variance);
      centerValues = mean.view().slice();
      varianceValues = variance.view().slice();
    } else {
      centerValues = (this.runningMean as Float32Array).slice();
      varianceValues = this.runningVar as Float32Array;
    }
    for (let c = 0; c < C; c++) invstd[c] = 1 / Math.sqrt((varianceValues[c] as number) + this.eps);
    const scaleValues = scale.view();
    for (let c = 0; c < C; c++) scaleValues[c] = (this.weight?.[c] ?? 1) * (invstd[c] as number);
    shift.view().set(this.bias ?? new Float32Array(C));
    center.view().set(centerValues);
    this.#impl.scaleShift(x, y, dims, center, scale, shift, ws);

    if (this.#training && this.trackRunningStats) {
      this.#numBatchesTracked += 1;
      const m = this.momentum ?? 1 / this.#numBatchesTracked;
      const n = dims.outer * dims.inner;
      const rm = this.runningMean as Float32Array;
      const rv = this.runningVar as Float32Array;
      for (let c = 0; c < C; c++) {
        rm[c] = (1 - m) * (rm[c] as number) + m * (centerValues[c] as number);
        rv[c] = (1 - m) * (rv[c] as number) + (m * (varianceValues[c] as number) * n) / (n - 1);
      }
    }
    this.#saved = {
      x: input,
      dims,
      shape: [...shape],
      center: centerValues,
      invstd,
      weight: this.weight?.slice() ?? null,
      batchStats,
    };
  }

  /** Runs a backward whose arguments are all checked; consumes the saved forward. */
  #gradients(saved: Saved, x: F32Buffer, dy: F32Buffer, dx: F32Buffer) {
    const C = this.numFeatures;
    const [center, k1, k2, k3, sumDyBuf, sumDyXcBuf] = this.#six;
    const ws = this.#ws as F32Buffer;
    const { dims, invstd, weight } = saved;
    center.view().set(saved.center);
    this.#impl.gradSums(x, dy, dims, center, ws, sumDyBuf, sumDyXcBuf);
    const sumDy = sumDyBuf.view().slice();
    const sumDyXc = sumDyXcBuf.view();
    const dWeight = new Float32Array(C);
    const kDy = k1.view();
    for (let c = 0; c < C; c++) {
      const s = invstd[c] as number;
      dWeight[c] = s * (sumDyXc[c] as number);
      kDy[c] = (weight?.[c] ?? 1) * s;
    }
    if (saved.batchStats) {
      const n = dims.outer * dims.inner;
      const kXc = k2.view();
      const kConst = k3.view();
      for (let c = 0; c < C; c++) {
        const s = invstd[c] as number;
        const a = kDy[c] as number;
        kXc[c] = (-a * s * s * (sumDyXc[c] as number)) / n;
        kConst[c] = (-a * (sumDy[c] as number)) / n;
      }
      this.#impl.gradInput(x, dy, dx, dims, center, k1, k2, k3, ws);
    } else {
      k2.view().fill(0);
      this.#impl.scaleShift(dy, dx, dims, k2, k1, k2, ws);
    }
    this.#saved = undefined;
    return this.affine ? { dWeight, dBias: sumDy } : { dWeight: null, dBias: null };
  }

  /**
   * The copy API's reusable input and output buffers, resized to `xLength` and `yLength`
   * floats (`undefined`: keep the input buffer as it is). Both new buffers are allocated before
   * any old one is freed, so a failed allocation (memory full) changes nothing.
   */
  #copyBuffers(xLength: number | undefined, yLength: number): [F32Buffer | undefined, F32Buffer] {
    const fits = (b: F32Buffer | undefined, n: number | undefined) =>
      n === undefined || b?.length === n;
    const fresh: F32Buffer[] = [];
    try {
      const xb = fits(this.#copyX, xLength) ? this.#copyX : this.#impl.alloc(xLength as number);
      if (xb !== this.#copyX) fresh.push(xb as F32Buffer);
      const yb = fits(this.#copyY, yLength) ? this.#copyY : this.#impl.alloc(yLength);
      if (yb !== this.#copyY) fresh.push(yb as F32Buffer);
      if (xb !== this.#copyX) {
        if (this.#saved?.x === this.#copyX) this.#saved = undefined;
        this.#copyX?.free();
        this.#copyX = xb;
      }
      if (yb !== this.#copyY) {
        this.#copyY?.free();
        this.#copyY = yb;
      }
      return [xb, yb as F32Buffer];
    } catch (error) {
      for (const b of fresh) b.free();
      throw error;
    }
  }

  /**
   * A caller's array, read again after allocations: when it is a view of this back end's wasm
   * memory (a tensor's `.data`), an allocation that grows the memory detaches it, and the same
   * floats are then re-viewed at the same address in the new buffer.
   */
  #pin(a: Float32Array): () => Float32Array {
    const impl = this.#impl;
    if (!(impl instanceof WasmBackend) || a.buffer !== impl.heap.memory.buffer) return () => a;
    const { byteOffset, length } = a;
    return () =>
      a.length === length ? a : new Float32Array(impl.heap.memory.buffer, byteOffset, length);
  }

  #dims(shape: readonly number[], where: string, name: string): Dims {
    shapeLength(shape, where, name);
    if (shape.length < 2) {
      throw new RangeError(
        `${where}: ${name} must have at least 2 dimensions ([N, C, ...]), got [${shape.join(", ")}]`,
      );
    }
    const channelAxis = this.layout === "NCHW" ? 1 : shape.length - 1;
    const channels = shape[channelAxis] as number;
    if (channels !== this.numFeatures) {
      throw new RangeError(
        `${where}: ${name}[${channelAxis}] is the channel count (${this.layout}) and must be ` +
          `numFeatures = ${this.numFeatures}, got ${channels}`,
      );
    }
    const product = (a: readonly number[]) => a.reduce((p, d) => p * d, 1);
    return this.layout === "NCHW"
      ? { outer: shape[0] as number, channels, inner: product(shape.slice(2)) }
      : { outer: product(shape.slice(0, -1)), channels, inner: 1 };
  }

  /** PyTorch's rule: batch statistics of a single value per channel are meaningless. */
  #checkStats(dims: Dims, shape: readonly number[], where: string): void {
    // PyTorch checks this whenever batch statistics are used: in training, and in inference
    // too when there are no running statistics (`trackRunningStats: false`).
    if ((this.#training || !this.trackRunningStats) && dims.outer * dims.inner <= 1) {
      const when = this.#training
        ? "when training"
        : "when using batch statistics (trackRunningStats: false)";
      throw new RangeError(
        `${where}: expected more than 1 value per channel ${when}, got input shape [${shape.join(", ")}]`,
      );
    }
  }

  #own(t: Tensor, where: string, name: string): void {
    if (!(t instanceof Tensor)) {
      throw new TypeError(`${where}: ${name} must be a Tensor, got ${typeName(t)}`);
    }
    if (t.disposed) {
      throw new Error(`${where}: ${name} (Tensor [${t.shape.join(", ")}]) was disposed`);
    }
    if (t.backend !== this.#impl) {
      throw new TypeError(
        `${where}: ${name} belongs to the ${t.backend.kind} back end's memory, ` +
          `but this module runs on ${this.backend}: make it with this module's tensor()`,
      );
    }
  }

  #channelValues(v: unknown, where: string, key: string): ArrayLike<number> {
    const ok =
      isTyped(v, "Float32Array") ||
      isTyped(v, "Float64Array") ||
      (Array.isArray(v) && v.every((e) => typeof e === "number"));
    if (!ok) {
      throw new TypeError(
        `${where}: ${key} must be a Float32Array, Float64Array or number[], got ${typeName(v)}`,
      );
    }
    const values = v as ArrayLike<number>;
    if (values.length !== this.numFeatures) {
      throw new RangeError(
        `${where}: ${key} must have numFeatures = ${this.numFeatures} values, got ${values.length}`,
      );
    }
    return values;
  }

  #live(method: string): void {
    if (this.#disposed) throw new Error(`BatchNorm.${method}: the module was disposed`);
  }
}

/**
 * Whether `v` is a typed array of that kind, also when it comes from another realm (an
 * iframe, a `vm` context, a test environment), where `instanceof` is false.
 */
function isTyped(v: unknown, kind: "Float32Array"): v is Float32Array;
function isTyped(v: unknown, kind: "Float64Array"): v is Float64Array;
function isTyped(v: unknown, kind: string): boolean {
  return ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === `[object ${kind}]`;
}

/** The `out` of a Tensor call's options object (`undefined` when there is none). */
function outOption(options: unknown, where: string): Tensor | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(
      `${where}: with a Tensor, the second argument must be an options object { out?: Tensor }, got ${show(options)}`,
    );
  }
  const out = (options as { out?: unknown }).out;
  if (out !== undefined && !(out instanceof Tensor)) {
    throw new TypeError(`${where}: options.out must be a Tensor, got ${typeName(out)}`);
  }
  return out;
}

/**
 * Bytes of linear memory that a wasm back end's instance has now (`memory.buffer.byteLength`;
 * wasm memory grows and never shrinks); 0 for the JS back end, which has none. All modules and
 * tensors of one back end share its instance. For monitoring and leak tests.
 *
 * @throws Error when the back end is not loaded (call `await init()` first).
 */
export function memoryBytes(backend: "auto" | BackendKind = "auto"): number {
  if (!BACKENDS.includes(backend)) {
    throw new RangeError(
      `memoryBytes: backend must be "auto", "simd", "scalar" or "js", got ${show(backend)}`,
    );
  }
  const impl = resolveBackend(backend);
  return impl instanceof WasmBackend ? impl.heap.memoryBytes : 0;
}

/** Checks a shape's dimensions and returns the element count. */
function shapeLength(shape: readonly number[], where: string, name: string): number {
  if (!Array.isArray(shape))
    throw new TypeError(`${where}: ${name} must be an array, got ${show(shape)}`);
  let length = 1;
  // An index loop, not forEach: a sparse array's holes are checked (as undefined) too.
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d <= 0) {
      throw new RangeError(`${where}: ${name}[${i}] must be a positive integer, got ${show(d)}`);
    }
    length *= d;
  }
  if (!Number.isSafeInteger(length)) {
    throw new RangeError(
      `${where}: ${name} [${shape.join(", ")}] has too many elements (${length})`,
    );
  }
  return length;
}

function sameShape(
  got: readonly number[],
  want: readonly number[],
  where: string,
  name: string,
): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new RangeError(
      `${where}: ${name} must have shape [${want.join(", ")}], got [${got.join(", ")}]`,
    );
  }
}

function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  if (Array.isArray(v)) return `[${v.map(show).join(", ")}]`;
  if (typeof v === "object" && v !== null) return typeName(v);
  return String(v);
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return (v as object).constructor?.name ?? "object";
  return typeof v;
}
