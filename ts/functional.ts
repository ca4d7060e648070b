/**
 * The functional layer: batch norm as plain functions of their arguments, with the semantics of
 * PyTorch's `torch.nn.functional.batch_norm`. The module and every variant are built from the
 * same passes (`core.ts`); these functions hold no state between calls, and allocate (and free)
 * their per-channel buffers in the back end's memory for each call.
 *
 * @module
 */
import { type Activation, checkActivation } from "./activation.js";
import type { Backend, BackendKind, Dims, F32Buffer } from "./backend.js";
import { dimsLength, perChannel } from "./backend.js";
import {
  type Affine,
  applyForward,
  backwardPasses,
  batchMoments,
  forwardCoefficients,
  type ParamGradients,
  updateRunningStats,
} from "./core.js";
import { checkChannelValues, checkOptions, isTyped, typeName } from "./errors.js";
import { resolveBackend } from "./init.js";
import { BufferSet } from "./lifetime.js";
import {
  type BatchNormOptions,
  checkBackend,
  checkBoolean,
  checkEps,
  checkEstimator,
  checkLayout,
  checkMomentum,
  type RunningVarEstimator,
} from "./options.js";
import { allocScratch, type ChannelScratch } from "./scratch.js";
import { dimsOf, type Layout, sameShape } from "./shape.js";
import { checkOut, checkTensor, Tensor } from "./tensor.js";

type ChannelArray = Float32Array | Float64Array | readonly number[];

/** Options of {@link batchNorm}; the defaults are PyTorch's. */
export interface BatchNormFunctionOptions {
  /** Running mean; updated in place by a training call. Required when `training` is false. */
  runningMean?: Float32Array | null;
  /** Running (unbiased) variance; updated in place by a training call. With `runningMean`. */
  runningVar?: Float32Array | null;
  /** γ per channel; absent or `null` is 1. */
  weight?: ChannelArray | null;
  /** β per channel; absent or `null` is 0. */
  bias?: ChannelArray | null;
  /** Batch statistics (true) or the running statistics (false, the default). */
  training?: boolean;
  /**
   * Weight of the batch statistic when a training call updates the running statistics:
   * `running = (1 − momentum)·running + momentum·batch`. Default 0.1, in [0, 1].
   */
  momentum?: number;
  /**
   * The variance a training call averages into `runningVar`: `"unbiased"` (default, PyTorch's)
   * or `"biased"` (Keras's, TF.js's, ONNX's). See {@link BatchNormOptions.runningVarEstimator}.
   */
  runningVarEstimator?: RunningVarEstimator;
  /** Default 1e-5. */
  eps?: number;
  /** Default "NCHW". */
  layout?: Layout;
  /** For `Float32Array` input (default "auto"); a Tensor runs on its own back end. */
  backend?: "auto" | BackendKind;
  /** An activation applied in the same pass (see {@link BatchNormOptions.activation}). */
  activation?: Activation | null;
  /** The slope of `"leakyRelu"` for negative inputs. Default 0.01. */
  negativeSlope?: number;
  /** With Tensor input: the output tensor (same shape, not `x`). */
  out?: Tensor;
}

/** Options of {@link moments}. */
export interface MomentsOptions {
  layout?: Layout;
  backend?: "auto" | BackendKind;
}

/** Per-channel statistics of a batch, as {@link moments} returns them. */
export interface Moments {
  /** Values per channel. */
  count: number;
  mean: Float64Array;
  /** The biased variance (divided by `count`). */
  variance: Float64Array;
}

/** Options of {@link batchNormBackward}. */
export interface BatchNormBackwardOptions {
  /**
   * The forward's per-channel mean and biased variance. With `training: true` (batch
   * statistics) they are computed from `x` when absent; otherwise they are the running mean and
   * variance the forward used, and required.
   */
  mean?: ChannelArray;
  variance?: ChannelArray;
  weight?: ChannelArray | null;
  /**
   * β of the forward: needed only with `activation`, whose input `(x − mean)·weight·invstd + bias`
   * the backward recomputes. Absent or `null` is 0.
   */
  bias?: ChannelArray | null;
  /** The forward's activation: gradients are returned through it. Default none. */
  activation?: Activation | null;
  /** The forward's `negativeSlope` (`"leakyRelu"`). Default 0.01. */
  negativeSlope?: number;
  /** Whether the forward used batch statistics (gradient flows through them). Default false. */
  training?: boolean;
  eps?: number;
  layout?: Layout;
  backend?: "auto" | BackendKind;
  /** With Tensor input: the tensor for `dx` (it may be `dy`). */
  out?: Tensor;
}

/** What {@link batchNormBackward} returns. */
export interface FunctionGradients<T> {
  dx: T;
  dWeight: Float32Array;
  dBias: Float32Array;
}

/** A checked call's input: where it lives and how it is seen. */
interface Input {
  backend: Backend;
  dims: Dims;
  shape: readonly number[];
  /** A Float32Array input's values, re-read after allocations (see `Backend.pin`). */
  values?: () => Float32Array;
}

/**
 * Batch normalization as a function (PyTorch's `F.batch_norm`):
 * `y = weight·(x − mean)/sqrt(var + eps) + bias`, with the batch's mean and biased variance
 * when `training` is true (and the running statistics, when given, updated in place with the
 * unbiased variance), or with `runningMean` and `runningVar` when it is false.
 *
 * @param x the input: a `Float32Array` (y is a new `Float32Array`), or a {@link Tensor} (y is a
 *   Tensor of the same back end: `options.out`, or a new one the caller disposes).
 * @param shape `[N, C, ...]` (NCHW) or `[N, ..., C]` (NHWC); for a Tensor, its shape or omitted.
 * @throws TypeError / RangeError naming the bad argument; nothing given is changed then.
 */
export function batchNorm(
  x: Float32Array,
  shape: readonly number[],
  options?: BatchNormFunctionOptions,
): Float32Array;
export function batchNorm(
  x: Tensor,
  shape?: readonly number[],
  options?: BatchNormFunctionOptions,
): Tensor;
export function batchNorm(
  x: Float32Array | Tensor,
  shape?: readonly number[],
  options?: BatchNormFunctionOptions,
): Float32Array | Tensor {
  const where = "batchNorm";
  const o = checkOptions(options, where) as BatchNormFunctionOptions;
  const layout = checkLayout(o.layout ?? "NCHW", where);
  const input = checkInput(x, shape, layout, o.backend, where, "x");
  const C = input.dims.channels;
  const training = checkBoolean(o.training ?? false, where, "options.training");
  const momentum = checkMomentum(o.momentum ?? 0.1, where, false) as number;
  const estimator = checkEstimator(o.runningVarEstimator ?? "unbiased", where);
  const eps = checkEps(o.eps ?? 1e-5, where);
  const affine = checkAffine(o, C, where);
  const act = checkActivation(o.activation, o.negativeSlope, where);
  const running = checkRunning(o, C, training, where);
  if (training) checkBatch(input, where);
  const out = x instanceof Tensor ? checkOutput(o.out, x, input.backend, where) : undefined;
  if (!(x instanceof Tensor) && o.out !== undefined) {
    throw new TypeError(`${where}: options.out is for Tensor input; with a Float32Array, y is new`);
  }
  return withScratch(input.backend, C, where, (s, buffers) => {
    const invstd = new Float64Array(C);
    const run = (xb: F32Buffer, yb: F32Buffer) => {
      let center = s.mean;
      if (training) {
        batchMoments(input.backend, xb, input.dims, s);
        forwardCoefficients(s, affine, s.variance.view(), eps, invstd);
      } else {
        const { mean, variance } = running as { mean: Float32Array; variance: Float32Array };
        s.center.view().set(mean);
        forwardCoefficients(s, affine, variance, eps, invstd);
        center = s.center;
      }
      applyForward(input.backend, xb, yb, input.dims, center, s, act);
      if (training && running !== undefined) {
        const n = perChannel(input.dims);
        updateRunningStats(
          running.mean,
          running.variance,
          s.mean.view(),
          s.variance.view(),
          n,
          momentum,
          estimator,
        );
      }
    };
    if (x instanceof Tensor) {
      const y = out ?? Tensor.alloc(input.backend, x.shape, where);
      try {
        run(x.buffer, y.buffer);
      } catch (error) {
        if (y !== out) y.dispose();
        throw error;
      }
      return y;
    }
    const xb = copyIn(buffers, input);
    run(xb, xb);
    return xb.view().slice();
  });
}

/**
 * Per-channel count, mean and biased variance of `x`, computed with the same stable kernels
 * as the forward (float64 merges of shifted block sums; float32-rounded results).
 */
export function moments(
  x: Float32Array | Tensor,
  shape?: readonly number[],
  options?: MomentsOptions,
): Moments {
  const where = "moments";
  const o = checkOptions(options, where) as MomentsOptions;
  const layout = checkLayout(o.layout ?? "NCHW", where);
  const input = checkInput(x, shape, layout, o.backend, where, "x");
  return withScratch(input.backend, input.dims.channels, where, (s, buffers) => {
    const xb = x instanceof Tensor ? x.buffer : copyIn(buffers, input);
    batchMoments(input.backend, xb, input.dims, s);
    return {
      count: perChannel(input.dims),
      mean: Float64Array.from(s.mean.view()),
      variance: Float64Array.from(s.variance.view()),
    };
  });
}

/**
 * Gradients of {@link batchNorm} for the upstream gradient `dy`: `dBias = Σdy`,
 * `dWeight = Σdy·x̂`, and `dx` through the batch statistics (`training: true`,
 * `dx = weight·invstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂))`) or with the running statistics as
 * constants (`dx = dy·weight·invstd`). The module's `backward` runs the same passes.
 *
 * @param dy the upstream gradient, shaped like `x`; both `Float32Array`s (dx is new) or both
 *   Tensors of one back end (dx is `options.out`, which may be `dy`, or a new tensor).
 */
export function batchNormBackward(
  dy: Float32Array,
  x: Float32Array,
  shape: readonly number[],
  options?: BatchNormBackwardOptions,
): FunctionGradients<Float32Array>;
export function batchNormBackward(
  dy: Tensor,
  x: Tensor,
  shape?: readonly number[],
  options?: BatchNormBackwardOptions,
): FunctionGradients<Tensor>;
export function batchNormBackward(
  dy: Float32Array | Tensor,
  x: Float32Array | Tensor,
  shape?: readonly number[],
  options?: BatchNormBackwardOptions,
): FunctionGradients<Float32Array | Tensor> {
  const where = "batchNormBackward";
  const o = checkOptions(options, where) as BatchNormBackwardOptions;
  const layout = checkLayout(o.layout ?? "NCHW", where);
  const input = checkInput(x, shape, layout, o.backend, where, "x");
  const C = input.dims.channels;
  const training = checkBoolean(o.training ?? false, where, "options.training");
  const eps = checkEps(o.eps ?? 1e-5, where);
  const { weight, bias } = checkAffine(o, C, where);
  const act = checkActivation(o.activation, o.negativeSlope, where);
  const given = checkStatistics(o, C, training, where);
  if (training) checkBatch(input, where);
  let out: Tensor | undefined;
  if (x instanceof Tensor) {
    if (!(dy instanceof Tensor)) {
      throw new TypeError(`${where}: dy must be a Tensor like x, got ${typeName(dy)}`);
    }
    checkTensor(dy, input.backend, where, "dy");
    sameShape(dy.shape, x.shape, where, "dy");
    out = checkOut({ out: o.out }, where);
    if (out !== undefined) {
      checkTensor(out, input.backend, where, "options.out");
      sameShape(out.shape, x.shape, where, "options.out");
    }
  } else {
    if (!isTyped(dy, "Float32Array")) {
      throw new TypeError(`${where}: dy must be a Float32Array like x, got ${typeName(dy)}`);
    }
    if (dy.length !== x.length) {
      throw new RangeError(`${where}: dy has ${dy.length} values but x has ${x.length}`);
    }
    if (o.out !== undefined) {
      throw new TypeError(
        `${where}: options.out is for Tensor input; with a Float32Array, dx is new`,
      );
    }
  }
  const upstream = dy instanceof Tensor ? undefined : input.backend.pin(dy);
  return withScratch(input.backend, C, where, (s, buffers) => {
    const xb = x instanceof Tensor ? x.buffer : copyIn(buffers, input);
    if (given === undefined) batchMoments(input.backend, xb, input.dims, s);
    else {
      s.mean.view().set(given.mean);
      s.variance.view().set(given.variance);
    }
    const invstd = new Float64Array(C);
    // The forward's scale and shift too: a fused activation's input is recomputed from them.
    forwardCoefficients(s, { weight, bias }, s.variance.view(), eps, invstd);
    const record = { dims: input.dims, center: s.mean, invstd, weight, batchStats: training, act };
    const passes = (dyb: F32Buffer, dxb: F32Buffer): ParamGradients =>
      backwardPasses(input.backend, record, xb, dyb, dxb, s);
    if (dy instanceof Tensor) {
      const dx = out ?? Tensor.alloc(input.backend, dy.shape, where);
      try {
        return { dx, ...passes(dy.buffer, dx.buffer) };
      } catch (error) {
        if (dx !== out) dx.dispose();
        throw error;
      }
    }
    const dyb = copyIn(buffers, { values: upstream });
    const grads = passes(dyb, dyb);
    return { dx: dyb.view().slice(), ...grads };
  });
}

/** Checks `x` and its shape, and finds the back end it runs on. */
function checkInput(
  x: unknown,
  shape: readonly number[] | undefined,
  layout: Layout,
  requested: unknown,
  where: string,
  name: string,
): Input {
  const kind = checkBackend(requested ?? "auto", where);
  if (x instanceof Tensor) {
    if (shape !== undefined) sameShape(shape, x.shape, where, "shape");
    const backend = x.backend;
    if (kind !== "auto" && resolveBackend(kind) !== backend) {
      throw new TypeError(
        `${where}: ${name} is a tensor of the ${backend.kind} back end, but options.backend is "${kind}"`,
      );
    }
    checkTensor(x, backend, where, name);
    return { backend, dims: dimsOf(x.shape, layout, where, `${name}.shape`), shape: x.shape };
  }
  if (!isTyped(x, "Float32Array")) {
    throw new TypeError(
      `${where}: ${name} must be a Float32Array or a Tensor, got ${typeName(x)} (convert with Float32Array.from)`,
    );
  }
  if (!Array.isArray(shape)) {
    throw new TypeError(`${where}: shape must be an array of dimensions, got ${typeName(shape)}`);
  }
  const dims = dimsOf(shape, layout, where, "shape");
  if (x.length !== dimsLength(dims)) {
    throw new RangeError(
      `${where}: ${name} has ${x.length} values but shape [${shape.join(", ")}] needs ${dimsLength(dims)}`,
    );
  }
  const backend = resolveBackend(kind);
  return { backend, dims, shape, values: backend.pin(x) };
}

/** PyTorch's rule: batch statistics of one value per channel are meaningless. */
function checkBatch(input: Input, where: string): void {
  if (perChannel(input.dims) <= 1) {
    throw new RangeError(
      `${where}: expected more than 1 value per channel when training, got input shape [${input.shape.join(", ")}]`,
    );
  }
}

function checkAffine(
  o: { weight?: ChannelArray | null; bias?: ChannelArray | null },
  C: number,
  where: string,
): Affine {
  const values = (v: unknown, name: string) =>
    v == null ? null : checkChannelValues(v, C, where, `options.${name}`, "C");
  return { weight: values(o.weight, "weight"), bias: values(o.bias, "bias") };
}

/** The running statistics: both or neither, Float32Arrays of C values, required in inference. */
function checkRunning(
  o: BatchNormFunctionOptions,
  C: number,
  training: boolean,
  where: string,
): { mean: Float32Array; variance: Float32Array } | undefined {
  const { runningMean: mean, runningVar: variance } = o;
  if (mean == null && variance == null) {
    if (!training) {
      throw new TypeError(
        `${where}: options.runningMean and options.runningVar are required when training is false`,
      );
    }
    return undefined;
  }
  for (const [name, v] of [
    ["runningMean", mean],
    ["runningVar", variance],
  ] as const) {
    if (!isTyped(v, "Float32Array")) {
      throw new TypeError(
        `${where}: options.${name} must be a Float32Array (updated in place), got ${typeName(v)}`,
      );
    }
    checkChannelValues(v, C, where, `options.${name}`, "C");
  }
  return { mean: mean as Float32Array, variance: variance as Float32Array };
}

/** A backward's given statistics (both or neither; required unless training). */
function checkStatistics(
  o: BatchNormBackwardOptions,
  C: number,
  training: boolean,
  where: string,
): { mean: ArrayLike<number>; variance: ArrayLike<number> } | undefined {
  if (o.mean === undefined && o.variance === undefined && training) return undefined;
  if (o.mean === undefined || o.variance === undefined) {
    throw new TypeError(
      `${where}: options.mean and options.variance are required ${training ? "together" : "when training is false (the running statistics the forward used)"}`,
    );
  }
  return {
    mean: checkChannelValues(o.mean, C, where, "options.mean", "C"),
    variance: checkChannelValues(o.variance, C, where, "options.variance", "C"),
  };
}

function checkOutput(out: unknown, x: Tensor, backend: Backend, where: string): Tensor | undefined {
  const t = checkOut({ out }, where);
  if (t === undefined) return undefined;
  checkTensor(t, backend, where, "options.out");
  sameShape(t.shape, x.shape, where, "options.out");
  if (t === x) throw new RangeError(`${where}: options.out must not be x`);
  return t;
}

/** Runs `body` with per-channel buffers for the call, freed afterwards whatever happens. */
function withScratch<T>(
  backend: Backend,
  channels: number,
  where: string,
  body: (s: ChannelScratch, buffers: BufferSet) => T,
): T {
  const buffers = new BufferSet(backend);
  try {
    return body(allocScratch(buffers, channels, where, "the channel count"), buffers);
  } finally {
    buffers.free();
  }
}

/**
 * A copy of a Float32Array input in the call's back-end memory. Its values are read through
 * the getter `pin` made before any allocation, which re-views a wasm-memory view that the
 * allocations detached.
 */
function copyIn(buffers: BufferSet, input: { values?: () => Float32Array }): F32Buffer {
  const values = (input.values as () => Float32Array)();
  const b = buffers.alloc(values.length);
  b.view().set((input.values as () => Float32Array)());
  return b;
}
