/**
 * Folding a BatchNorm in inference mode into the Linear or convolution layer before it, with
 * the math of PyTorch's `fuse_linear_bn_eval` / `fuse_conv_bn_eval`, computed in float64:
 *
 *   scale = γ / √(runningVar + eps),   shift = β − runningMean·scale,
 *   W'[o, …] = W[o, …]·scale[o],       b'[o] = b[o]·scale[o] + shift[o],
 *
 * so that `BN(layer(x)) = layer'(x)` for every x once the BN uses its running statistics.
 *
 * @module
 */

/** What the folds need from a BatchNorm: its channel count and its folded affine map. */
export interface FoldableBatchNorm {
  readonly numFeatures: number;
  /** `y = scale·x + shift` per channel: the BatchNorm in inference mode. */
  foldedAffine(): { scale: ArrayLike<number>; shift: ArrayLike<number> };
}

/** A BatchNorm's parameters and running statistics, as {@link BatchNorm} holds them. */
export interface BatchNormParameters {
  /** γ; `null` when `affine` is false (γ = 1). */
  weight: ArrayLike<number> | null;
  /** β; `null` when `affine` is false (β = 0). */
  bias: ArrayLike<number> | null;
  /** `null` when `trackRunningStats` is false: then there is nothing to fold. */
  runningMean: ArrayLike<number> | null;
  runningVar: ArrayLike<number> | null;
  eps: number;
}

/** The weight and bias of a folded layer: new arrays, in the layout the weight came in. */
export interface Folded {
  weight: Float32Array;
  bias: Float32Array;
}

/**
 * Layouts of a Linear weight: `"outIn"` = PyTorch's and ONNX Gemm's `[out, in]` (`transB=1`);
 * `"inOut"` = the kernel of Keras's and TF.js's Dense, `[in, out]`.
 */
export type LinearLayout = "outIn" | "inOut";

/**
 * Layouts of a convolution weight, named for 2-D but valid for any number of spatial axes
 * (`"OIHW"` also means `[O, I, L]` and `[O, I, D, H, W]`): only where the output channel is
 * matters. `"OIHW"`: PyTorch and ONNX `Conv`, `[O, I/groups, kH, kW]`. `"OHWI"`: `[O, kH, kW, I]`
 * (TFLite, ONNX Runtime's NHWC kernels). `"HWIO"`: Keras's and TF.js's `Conv2D` kernel
 * `[kH, kW, I, O]`.
 *
 * `"HWIM"`: the depthwise kernel `[kH, kW, in, M]` of TF's and Keras's `DepthwiseConv2D` with
 * channel multiplier M, whose output channel `i·M + m` is the flattened index of its last two
 * axes (so it folds like `"HWIO"`, with `in·M` output channels). PyTorch's and ONNX's depthwise
 * convolutions (`groups = in`, weight `[in·M, 1, kH, kW]`, output channel `i·M + m` too) are
 * plain `"OIHW"`. In every case the BatchNorm has as many features as the convolution has output
 * channels.
 */
export type ConvLayout = "OIHW" | "OHWI" | "HWIO" | "HWIM";

export interface FoldLinearOptions {
  /** Default `"outIn"` (PyTorch's). */
  layout?: LinearLayout;
}

export interface FoldConvOptions {
  /** Default `"OIHW"` (PyTorch's). */
  layout?: ConvLayout;
  /** The weight's shape, if known: then checked against the layout and `bn.numFeatures`. */
  shape?: readonly number[];
}

/**
 * `scale = γ/√(runningVar + eps)` and `shift = β − runningMean·scale`, computed in float64 and
 * rounded once to float32: the BatchNorm in inference mode as an affine map per channel.
 *
 * @throws TypeError when the running statistics are `null` or an argument is not an array of
 *   numbers; RangeError when lengths differ, eps is not a finite number ≥ 0, or a
 *   `runningVar + eps` is not positive.
 */
export function foldedAffineOf(p: BatchNormParameters): {
  scale: Float32Array;
  shift: Float32Array;
} {
  const where = "foldedAffineOf";
  if (typeof p !== "object" || p === null) {
    throw new TypeError(`${where}: the argument must be a BatchNorm's parameters, got ${show(p)}`);
  }
  if (p.runningMean === null || p.runningVar === null) {
    throw new TypeError(
      `${where}: the BatchNorm has no running statistics (trackRunningStats: false), so it has ` +
        `no inference-mode affine map to fold; expected runningMean and runningVar arrays, got ` +
        `${show(p.runningMean)} and ${show(p.runningVar)}`,
    );
  }
  const mean = numbers(where, "runningMean", p.runningMean);
  const C = mean.length;
  const variance = numbers(where, "runningVar", p.runningVar, C);
  const gamma = p.weight === null ? null : numbers(where, "weight", p.weight, C);
  const beta = p.bias === null ? null : numbers(where, "bias", p.bias, C);
  if (typeof p.eps !== "number" || !(p.eps >= 0) || p.eps === Infinity) {
    throw new RangeError(`${where}: eps must be a finite number ≥ 0, got ${show(p.eps)}`);
  }
  const scale = new Float32Array(C);
  const shift = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    const v = (variance[c] as number) + p.eps;
    if (!(v > 0 && v < Infinity)) {
      throw new RangeError(
        `${where}: runningVar[${c}] + eps must be positive and finite, got ${variance[c]} + ${p.eps}`,
      );
    }
    const s = (gamma === null ? 1 : (gamma[c] as number)) / Math.sqrt(v);
    scale[c] = s;
    shift[c] = (beta === null ? 0 : (beta[c] as number)) - (mean[c] as number) * s;
  }
  return { scale, shift };
}

/**
 * Folds `bn` (in inference mode) into the Linear layer before it: `BN(x·Wᵀ + b) = x·W'ᵀ + b'`.
 * PyTorch's `fuse_linear_bn_eval`, in float64. The inputs are left untouched.
 *
 * @param bn the BatchNorm whose input is the Linear's output (`numFeatures` = out).
 * @param weight `[out, in]` or `[in, out]` (see `options.layout`), row-major.
 * @param bias `[out]`, or `null`/`undefined` for a Linear without bias (zeros).
 */
export function foldIntoLinear(
  bn: FoldableBatchNorm,
  weight: ArrayLike<number>,
  bias?: ArrayLike<number> | null,
  options: FoldLinearOptions = {},
): Folded {
  const where = "foldIntoLinear";
  checkBn(where, bn);
  const layout = option(where, options, "layout", "outIn", ["outIn", "inOut"] as const);
  return fold(where, bn, weight, bias, layout === "outIn" ? "first" : "last");
}

/**
 * Folds `bn` (in inference mode) into the convolution before it: `BN(conv(x, W) + b) =
 * conv(x, W') + b'`. PyTorch's `fuse_conv_bn_eval`, in float64. Grouped and depthwise
 * convolutions included (see {@link ConvLayout}). The inputs are left untouched.
 *
 * @param bn the BatchNorm whose input is the convolution's output (`numFeatures` = out channels).
 * @param weight the kernel in `options.layout`, row-major.
 * @param bias `[out]`, or `null`/`undefined` for a convolution without bias (zeros).
 */
export function foldIntoConv(
  bn: FoldableBatchNorm,
  weight: ArrayLike<number>,
  bias?: ArrayLike<number> | null,
  options: FoldConvOptions = {},
): Folded {
  const where = "foldIntoConv";
  checkBn(where, bn);
  const layout = option(where, options, "layout", "OIHW", [
    "OIHW",
    "OHWI",
    "HWIO",
    "HWIM",
  ] as const);
  const { shape } = options;
  if (shape !== undefined) {
    numbers(where, "weight", weight);
    if (
      !Array.isArray(shape) ||
      shape.length < 3 ||
      !shape.every((d) => Number.isSafeInteger(d) && d > 0)
    ) {
      throw new RangeError(
        `${where}: options.shape must list ≥ 3 positive integers (out and in channels and ≥ 1 ` +
          `spatial axis), got ${show(shape)}`,
      );
    }
    const last = shape[shape.length - 1] as number;
    const out =
      layout === "HWIO"
        ? last
        : layout === "HWIM"
          ? (shape[shape.length - 2] as number) * last
          : shape[0];
    if (out !== bn.numFeatures) {
      throw new RangeError(
        `${where}: options.shape ${show(shape)} in layout "${layout}" has ${out} output ` +
          `channels, expected bn.numFeatures = ${bn.numFeatures}`,
      );
    }
    const length = shape.reduce((a, d) => a * d, 1);
    if (weight.length !== length) {
      throw new RangeError(
        `${where}: weight must have ${length} elements for options.shape ${show(shape)}, got ` +
          `${weight.length}`,
      );
    }
  }
  const outLast = layout === "HWIO" || layout === "HWIM";
  return fold(where, bn, weight, bias, outLast ? "last" : "first");
}

/** Checks that `bn` is foldable: a positive integer `numFeatures` and a `foldedAffine()`. */
function checkBn(where: string, bn: FoldableBatchNorm): void {
  if (
    typeof bn !== "object" ||
    bn === null ||
    typeof bn.foldedAffine !== "function" ||
    !Number.isSafeInteger(bn.numFeatures) ||
    bn.numFeatures <= 0
  ) {
    throw new TypeError(
      `${where}: bn must have a positive integer numFeatures and a foldedAffine() method, got ${show(bn)}`,
    );
  }
}

/**
 * The shared fold, for a checked `bn`: the output channel is the weight's first axis
 * (`"first"`) or its last (`"last"`).
 */
function fold(
  where: string,
  bn: FoldableBatchNorm,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null | undefined,
  outAxis: "first" | "last",
): Folded {
  const C = bn.numFeatures;
  const w = numbers(where, "weight", weight);
  if (w.length === 0 || w.length % C !== 0) {
    throw new RangeError(
      `${where}: weight must have a positive multiple of bn.numFeatures = ${C} elements (one ` +
        `block per output channel), got ${w.length}`,
    );
  }
  const b = bias === null || bias === undefined ? null : numbers(where, "bias", bias, C);
  const affine = bn.foldedAffine();
  const scale = numbers(where, "bn.foldedAffine().scale", affine?.scale, C);
  const shift = numbers(where, "bn.foldedAffine().shift", affine?.shift, C);

  const outWeight = new Float32Array(w.length);
  const block = w.length / C;
  for (let i = 0; i < w.length; i++) {
    const o = outAxis === "first" ? Math.floor(i / block) : i % C;
    outWeight[i] = (w[i] as number) * (scale[o] as number);
  }
  const outBias = new Float32Array(C);
  for (let o = 0; o < C; o++) {
    outBias[o] = (b === null ? 0 : (b[o] as number)) * (scale[o] as number) + (shift[o] as number);
  }
  return { weight: outWeight, bias: outBias };
}

/** Checks that `value` is an array of numbers (of `length`, when given) and returns it. */
function numbers(where: string, name: string, value: unknown, length?: number): ArrayLike<number> {
  const ok =
    value instanceof Float32Array ||
    value instanceof Float64Array ||
    (Array.isArray(value) && value.every((v) => typeof v === "number"));
  if (!ok) {
    throw new TypeError(
      `${where}: ${name} must be a Float32Array, Float64Array or array of numbers, got ${show(value)}`,
    );
  }
  const a = value as ArrayLike<number>;
  if (length !== undefined && a.length !== length) {
    throw new RangeError(
      `${where}: ${name} must have ${length} elements (one per channel), got ${a.length}`,
    );
  }
  return a;
}

function option<T extends string>(
  where: string,
  options: object,
  name: string,
  fallback: T,
  allowed: readonly T[],
): T {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`${where}: options must be an object, got ${show(options)}`);
  }
  const value = (options as Record<string, unknown>)[name] ?? fallback;
  if (!allowed.includes(value as T)) {
    throw new RangeError(
      `${where}: options.${name} must be ${allowed.map((a) => `"${a}"`).join(", ")}, got ${show(value)}`,
    );
  }
  return value as T;
}

/** A short description of a value for error messages (arrays by type and length). */
function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) {
    // Short lists of numbers (shapes) in full; anything else by length.
    const short = v.length <= 8 && v.every((e) => typeof e === "number");
    return short ? `[${v.join(", ")}]` : `an array of ${v.length}`;
  }
  if (ArrayBuffer.isView(v))
    return `${v.constructor.name}(${(v as unknown as ArrayLike<number>).length})`;
  if (typeof v === "object" && v !== null) return v.constructor?.name ?? "object";
  return String(v);
}
