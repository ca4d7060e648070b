/**
 * Moving a BatchNorm between this library (PyTorch's conventions) and Keras / TF.js layers or
 * ONNX: the names and order of the four per-channel arrays, the momentum's direction
 * (`m_keras = m_onnx = 1 − m_pytorch`), eps, and the variance averaged into the running
 * variance (biased in Keras and ONNX Runtime, unbiased in PyTorch). See docs/conventions.md.
 *
 * `BatchNorm.fromKeras`/`fromOnnx` build a module from these; the `to…` functions read one.
 *
 * @module
 */
import type { BackendKind } from "./backend.js";
import { checkChannelValues, checkOptions, isTyped, show, typeName } from "./errors.js";
import {
  checkBackend,
  checkBoolean,
  checkEps,
  checkLayout,
  checkMomentum,
  type InternalOptions,
  PARAMETERS,
  type RunningVarEstimator,
} from "./options.js";
import type { Layout } from "./shape.js";
import type { StateDictInput } from "./state.js";

/** Per-channel values as the converters accept them. */
export type ChannelValues = Float32Array | Float64Array | readonly number[];

/**
 * A Keras `BatchNormalization`'s weights by name. `gamma` exists only with `scale: true` and
 * `beta` only with `center: true` (Keras's defaults), as in Keras's `get_weights()`.
 */
export interface KerasWeights {
  gamma?: ChannelValues;
  beta?: ChannelValues;
  movingMean: ChannelValues;
  movingVariance: ChannelValues;
}

/** Keras's `BatchNormalization` arguments, with Keras's defaults. */
export interface FromKerasOptions {
  /** Keras's momentum: the weight of the OLD value. Default 0.99. */
  momentum?: number;
  /** Default 1e-3. */
  epsilon?: number;
  /** Learnable β (`beta`). Default true. */
  center?: boolean;
  /** Learnable γ (`gamma`). Default true. */
  scale?: boolean;
  /** Default `"NHWC"`: Keras's default `axis: -1`, channels last. `"NCHW"` is `axis: 1`. */
  layout?: Layout;
  backend?: "auto" | BackendKind;
}

/** What {@link BatchNorm.toKeras} returns. */
export interface KerasExport {
  /** `[gamma, beta, moving_mean, moving_variance]` without those the layer lacks: `set_weights` order. */
  weights: Float32Array[];
  /** Keras's layer arguments; `axis` is −1 for an NHWC module, 1 for NCHW. */
  config: { momentum: number; epsilon: number; center: boolean; scale: boolean; axis: -1 | 1 };
}

/** The inputs of ONNX's `BatchNormalization` after `X`, by their names in the operator's spec. */
export interface OnnxInitializers {
  scale: ChannelValues;
  B: ChannelValues;
  input_mean: ChannelValues;
  input_var: ChannelValues;
}

/** ONNX's `BatchNormalization` attributes, with the operator's defaults. */
export interface FromOnnxOptions {
  /** Default 1e-5. */
  epsilon?: number;
  /** ONNX's momentum: the weight of the OLD value. Default 0.9. */
  momentum?: number;
  /** Default `"NCHW"`: the operator normalizes over axis 1. */
  layout?: Layout;
  backend?: "auto" | BackendKind;
}

/** What {@link BatchNorm.toOnnx} returns. */
export interface OnnxExport {
  initializers: {
    scale: Float32Array;
    B: Float32Array;
    input_mean: Float32Array;
    input_var: Float32Array;
  };
  attributes: { epsilon: number; momentum: number };
}

/** A module to build: `new BatchNorm(numFeatures, options)`, then `loadStateDict(state)`. */
export interface ModuleRecipe {
  numFeatures: number;
  options: InternalOptions;
  state: StateDictInput;
}

/** `new Module(numFeatures, options)`, then `loadStateDict(state)`: the recipe built. */
export function build<T extends { loadStateDict(state: StateDictInput): void }>(
  Module: new (numFeatures: number, options: InternalOptions) => T,
  recipe: ModuleRecipe,
): T {
  const bn = new Module(recipe.numFeatures, recipe.options);
  bn.loadStateDict(recipe.state);
  return bn;
}

/** What the `to…` functions read of a module. */
export interface ConvertibleBatchNorm {
  readonly eps: number;
  readonly momentum: number | null;
  readonly layout: Layout;
  readonly runningVarEstimator: RunningVarEstimator;
  readonly weight: Float32Array | null;
  readonly bias: Float32Array | null;
  readonly runningMean: Float32Array | null;
  readonly runningVar: Float32Array | null;
}

/**
 * `1 − m`, the same smoothing seen from the other end. Rounded to 15 significant digits (float64
 * holds 15.9), so that Keras's 0.99 becomes 0.01 and not 0.010000000000000009, the binary error
 * of 0.99 showing through, and converting back gives any momentum written with at most 15
 * significant digits exactly (others move by less than 1e-15).
 */
export function flipMomentum(m: number): number {
  return Number((1 - m).toPrecision(15));
}

/** The recipe of `BatchNorm.fromKeras`: Keras's momentum flipped, the biased estimator. */
export function kerasRecipe(weights: KerasWeights, options: FromKerasOptions = {}): ModuleRecipe {
  const where = "BatchNorm.fromKeras";
  const o = checkOptions(options, where) as FromKerasOptions;
  const momentum = checkMomentum(o.momentum ?? 0.99, where, false) as number;
  const eps = checkEps(o.epsilon ?? 1e-3, where, "options.epsilon");
  const center = checkBoolean(o.center ?? true, where, "options.center");
  const scale = checkBoolean(o.scale ?? true, where, "options.scale");
  const w = checkOptions(weights, where, "weights") as Partial<KerasWeights>;
  const { numFeatures, running_mean, running_var } = runningStats(
    where,
    ["weights.movingMean", w.movingMean],
    ["weights.movingVariance", w.movingVariance],
  );
  const state: StateDictInput = { running_mean, running_var, num_batches_tracked: 0 };
  const parameter = (name: string, value: unknown, present: boolean, flag: string) => {
    if (present !== (value !== undefined)) {
      throw new TypeError(
        `${where}: weights.${name} must be ${present ? "given" : "absent"} when options.${flag} is ${present}, got ${typeName(value)}`,
      );
    }
    return present ? channels(value, numFeatures, where, `weights.${name}`) : undefined;
  };
  const gamma = parameter("gamma", w.gamma, scale, "scale");
  const beta = parameter("beta", w.beta, center, "center");
  if (gamma) state.weight = gamma;
  if (beta) state.bias = beta;
  return {
    numFeatures,
    options: {
      ...imported(where, eps, momentum, o.layout ?? "NHWC", o.backend),
      [PARAMETERS]: { weight: scale, bias: center },
    },
    state,
  };
}

/** The recipe of `BatchNorm.fromOnnx`: ONNX's momentum flipped, the biased estimator. */
export function onnxRecipe(
  initializers: OnnxInitializers,
  options: FromOnnxOptions = {},
): ModuleRecipe {
  const where = "BatchNorm.fromOnnx";
  const o = checkOptions(options, where) as FromOnnxOptions;
  const eps = checkEps(o.epsilon ?? 1e-5, where, "options.epsilon");
  const momentum = checkMomentum(o.momentum ?? 0.9, where, false) as number;
  const i = checkOptions(initializers, where, "initializers") as Partial<OnnxInitializers>;
  const { numFeatures, running_mean, running_var } = runningStats(
    where,
    ["initializers.input_mean", i.input_mean],
    ["initializers.input_var", i.input_var],
  );
  return {
    numFeatures,
    options: imported(where, eps, momentum, o.layout ?? "NCHW", o.backend),
    state: {
      weight: channels(i.scale, numFeatures, where, "initializers.scale"),
      bias: channels(i.B, numFeatures, where, "initializers.B"),
      running_mean,
      running_var,
      num_batches_tracked: 0,
    },
  };
}

/**
 * The options of a module imported from Keras or ONNX: their momentum flipped, and the biased
 * estimator, which both average into the running variance.
 */
function imported(
  where: string,
  eps: number,
  momentum: number,
  layout: unknown,
  backend: unknown,
): InternalOptions {
  return {
    eps,
    momentum: flipMomentum(momentum),
    runningVarEstimator: "biased",
    layout: checkLayout(layout, where),
    backend: checkBackend(backend ?? "auto", where),
  };
}

/** {@link checkChannelValues}, typed as what it checked. */
const channels = (v: unknown, C: number, where: string, name: string, count?: string) =>
  checkChannelValues(v, C, where, name, count) as ChannelValues;

/** Checks the running mean (which gives the channel count) and variance. */
function runningStats(
  where: string,
  [meanName, mean]: [string, unknown],
  [varName, variance]: [string, unknown],
) {
  const isArray =
    isTyped(mean, "Float32Array") || isTyped(mean, "Float64Array") || Array.isArray(mean);
  const numFeatures = isArray ? (mean as ArrayLike<number>).length : 0;
  if (isArray && numFeatures === 0) {
    throw new RangeError(`${where}: ${meanName} must have at least one channel, got 0 values`);
  }
  const count = `${meanName}.length`;
  return {
    numFeatures,
    running_mean: channels(mean, numFeatures, where, meanName, count),
    running_var: channels(variance, numFeatures, where, varName, count),
  };
}

/**
 * The module's weights and arguments for Keras's or TF.js's `BatchNormalization`. The running
 * statistics are exported as they are (every framework uses them unchanged at inference); the
 * momentum is flipped. A module with PyTorch's `"unbiased"` estimator is exported too: Keras has
 * no such option, so training continued in Keras averages in the biased variance from then on.
 *
 * @throws RangeError when the module has no running statistics or a `null` momentum (a
 *   cumulative average): Keras has neither.
 */
export function toKeras(bn: ConvertibleBatchNorm): KerasExport {
  const { runningMean, runningVar, momentum } = exportable(bn, "BatchNorm.toKeras", "Keras");
  const weights = [bn.weight, bn.bias, runningMean, runningVar]
    .filter((a): a is Float32Array => a !== null)
    .map((a) => a.slice());
  return {
    weights,
    config: {
      momentum,
      epsilon: bn.eps,
      center: bn.bias !== null,
      scale: bn.weight !== null,
      axis: bn.layout === "NHWC" ? -1 : 1,
    },
  };
}

/**
 * The module's inputs and attributes for ONNX's `BatchNormalization` (whose scale and B are
 * required: ones and zeros for a module without them). Same rules as {@link toKeras}; the
 * operator normalizes over axis 1, so an NHWC module needs its input transposed in the graph.
 */
export function toOnnx(bn: ConvertibleBatchNorm): OnnxExport {
  const { runningMean, runningVar, momentum } = exportable(bn, "BatchNorm.toOnnx", "ONNX");
  const C = runningMean.length;
  return {
    initializers: {
      scale: bn.weight?.slice() ?? new Float32Array(C).fill(1),
      B: bn.bias?.slice() ?? new Float32Array(C),
      input_mean: runningMean.slice(),
      input_var: runningVar.slice(),
    },
    attributes: { epsilon: bn.eps, momentum },
  };
}

/** The running statistics and the flipped momentum, or the reason there are none. */
function exportable(bn: ConvertibleBatchNorm, where: string, target: string) {
  const { runningMean, runningVar, momentum } = bn;
  if (runningMean === null || runningVar === null) {
    throw new RangeError(
      `${where}: the module has no running statistics (trackRunningStats: false), and ${target}'s BatchNormalization needs them`,
    );
  }
  if (momentum === null) {
    throw new RangeError(
      `${where}: momentum is null (a cumulative average), which ${target} has no equivalent of; expected a number in [0, 1], got ${show(momentum)}`,
    );
  }
  return { runningMean, runningVar, momentum: flipMomentum(momentum) };
}
