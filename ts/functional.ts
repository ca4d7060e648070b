/**
 * The functional layer: batch norm as plain functions of their arguments, with the semantics of
 * PyTorch's `torch.nn.functional.batch_norm`. The module and every variant are built from the
 * same passes (`core.ts`); these functions hold no state between calls, and allocate (and free)
 * their per-channel buffers in the back end's memory for each call.
 *
 * @module
 */
import { type Activation, checkActivation } from "./activation.js";
import type { BackendKind, F32Buffer } from "./backend.js";
import { dimsLength, perChannel } from "./backend.js";
import {
  applyForward,
  batchCoefficients,
  batchMoments,
  forwardCoefficients,
  type ParamGradients,
} from "./core.js";
import { checkChannelValues, isTyped, typeName } from "./errors.js";
import {
  checkAffine,
  checkBatch,
  checkCall,
  checkOutput,
  checkRunning,
  checkStatistics,
  copyIn,
  withScratch,
} from "./functional-args.js";
import {
  type BatchNormOptions,
  checkBoolean,
  checkEps,
  checkEstimator,
  checkMomentum,
  type RunningVarEstimator,
} from "./options.js";
import { type Layout, sameShape } from "./shape.js";
import { checkOut, checkTensor, Tensor } from "./tensor.js";
import { type Part, partsBackward } from "./variants.js";
import {
  checkVariants,
  type VariantOptions,
  variantForward,
  variantParts,
} from "./variants-functional.js";

type ChannelArray = Float32Array | Float64Array | readonly number[];

/**
 * Options of {@link batchNorm}; the defaults are PyTorch's (`renorm` and `virtualBatchSize`,
 * for training calls, go beyond it).
 */
export interface BatchNormFunctionOptions extends VariantOptions {
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

/**
 * Options of {@link batchNormBackward}. With `training: true`, `renorm` and
 * `virtualBatchSize` differentiate such a forward (its statistics are recomputed from `x`, so
 * `mean` and `variance` must then be absent; `renorm` needs the running statistics the forward
 * corrected toward, before its update).
 */
export interface BatchNormBackwardOptions extends VariantOptions {
  runningMean?: ChannelArray;
  runningVar?: ChannelArray;
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
  const { o, input } = checkCall(x, shape, options, where);
  const C = input.dims.channels;
  const training = checkBoolean(o.training ?? false, where, "options.training");
  const momentum = checkMomentum(o.momentum ?? 0.1, where, false) as number;
  const estimator = checkEstimator(o.runningVarEstimator ?? "unbiased", where);
  const eps = checkEps(o.eps ?? 1e-5, where);
  const affine = checkAffine(o, C, where);
  const act = checkActivation(o.activation, o.negativeSlope, where);
  const running = checkRunning(o, C, training, where);
  if (training) checkBatch(input, where);
  const variants = checkVariants(o, input, training, running, where);
  const out = x instanceof Tensor ? checkOutput(o.out, x, input.backend, where) : undefined;
  if (!(x instanceof Tensor) && o.out !== undefined) {
    throw new TypeError(`${where}: options.out is for Tensor input; with a Float32Array, y is new`);
  }
  return withScratch(input.backend, C, where, (s, buffers) => {
    const invstd = new Float64Array(C);
    const run = (xb: F32Buffer, yb: F32Buffer) => {
      if (training) {
        const call = { affine, eps, variants, running, momentum, estimator, act };
        variantForward(input.backend, xb, yb, input.dims, s, buffers, call);
        return;
      }
      const { mean, variance } = running as { mean: Float32Array; variance: Float32Array };
      s.center.view().set(mean);
      forwardCoefficients(s, affine, variance, eps, invstd);
      applyForward(input.backend, xb, yb, input.dims, s.center, s, act);
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
  const { input } = checkCall(x, shape, options, where);
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
 *   Tensors of one back end (dx is `options.out`, which may be `dy`, or a new tensor; see
 *   `BatchNorm.backward` for why one apart from `dy` is faster with an activation).
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
  const { o, input } = checkCall(x, shape, options, where);
  const C = input.dims.channels;
  const training = checkBoolean(o.training ?? false, where, "options.training");
  const eps = checkEps(o.eps ?? 1e-5, where);
  const { weight, bias } = checkAffine(o, C, where);
  const act = checkActivation(o.activation, o.negativeSlope, where);
  const given = checkStatistics(o, C, training, where);
  if (training) checkBatch(input, where);
  const running =
    o.runningMean === undefined && o.runningVar === undefined
      ? undefined
      : {
          mean: checkChannelValues(o.runningMean, C, where, "options.runningMean", "C"),
          variance: checkChannelValues(o.runningVar, C, where, "options.runningVar", "C"),
        };
  const variants = checkVariants(o, input, training, running, where);
  if (variants.active && given !== undefined) {
    throw new TypeError(
      `${where}: options.mean and options.variance must be absent with options.renorm or options.virtualBatchSize (the statistics are recomputed from x)`,
    );
  }
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
    let parts: readonly Part[];
    if (variants.active) {
      const call = { affine: { weight, bias }, eps, variants, running, act };
      parts = variantParts(input.backend, xb, null, input.dims, s, buffers, call).parts;
    } else {
      if (given === undefined) batchMoments(input.backend, xb, input.dims, s);
      else {
        s.mean.view().set(given.mean);
        s.variance.view().set(given.variance);
      }
      const invstd = new Float64Array(C);
      // The forward's scale and shift too: a fused activation's input is recomputed from them.
      batchCoefficients(input.backend, s, { weight, bias }, eps, invstd);
      const record = {
        dims: input.dims,
        center: s.mean,
        invstd,
        weight,
        batchStats: training,
        act,
      };
      parts = [{ offset: 0, length: dimsLength(input.dims), record }];
    }
    const passes = (dyb: F32Buffer, dxb: F32Buffer): ParamGradients =>
      partsBackward(input.backend, parts, weight, { x: xb, dy: dyb, dx: dxb }, s);
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
    // A dx apart from dy, where the first backward pass can write g there for the second.
    const apart = act !== null && input.backend.writesGradient?.(act, input.dims) === true;
    const dxb = apart ? buffers.alloc(dyb.length) : dyb;
    const grads = passes(dyb, dxb);
    return { dx: dxb.view().slice(), ...grads };
  });
}
