/**
 * The operators the peer tests chain, each as a node plus its constant initializers:
 * BatchNormalization (opset 15, inference or training mode), Conv, Gemm and Relu. Join them
 * with {@link onnxModel}.
 */
import type { BnParams } from "./data.js";
import { encodeModel, type Initializer, type OnnxNode } from "./onnx-graph.js";

export interface Part {
  nodes: OnnxNode[];
  initializers: Initializer[];
}

export interface BnNodeOptions {
  /** Left out = the operator's default (1e-5). */
  epsilon?: number;
  /** Left out = the operator's default (0.9). */
  momentum?: number;
  /** `training_mode=1`: also outputs `running_mean` and `running_var`. */
  training?: boolean;
}

/**
 * BatchNormalization(X, scale, B, input_mean, input_var) → Y [, running_mean, running_var]: the
 * spec's input order, which is PyTorch's state_dict order (weight, bias, running_mean,
 * running_var) and Keras's (gamma, beta, moving_mean, moving_variance).
 */
export function batchNormalization(x: string, y: string, p: BnParams, o: BnNodeOptions = {}): Part {
  const C = p.weight.length;
  const init = (name: string, data: Float32Array) => ({ name: `${y}.${name}`, dims: [C], data });
  const initializers = [
    init("scale", p.weight),
    init("B", p.bias),
    init("input_mean", p.mean),
    init("input_var", p.variance),
  ];
  const attributes: NonNullable<OnnxNode["attributes"]> = {};
  if (o.epsilon !== undefined) attributes.epsilon = { float: o.epsilon };
  if (o.momentum !== undefined) attributes.momentum = { float: o.momentum };
  if (o.training) attributes.training_mode = { int: 1 };
  const outputs = o.training ? [y, "running_mean", "running_var"] : [y];
  const node = {
    op: "BatchNormalization",
    inputs: [x, ...initializers.map((i) => i.name)],
    outputs,
    attributes,
  };
  return { nodes: [node], initializers };
}

/** Conv with weight `[O, I/group, kH, kW]` (OIHW), optional bias `[O]`, no padding, stride 1. */
export function conv(
  x: string,
  y: string,
  weight: { data: Float32Array; dims: readonly number[] },
  bias: Float32Array | null,
  group = 1,
): Part {
  const initializers: Initializer[] = [{ name: `${y}.W`, ...weight }];
  if (bias) initializers.push({ name: `${y}.B`, dims: [bias.length], data: bias });
  const node = {
    op: "Conv",
    inputs: [x, ...initializers.map((i) => i.name)],
    outputs: [y],
    attributes: { group: { int: group } },
  };
  return { nodes: [node], initializers };
}

/** Gemm: Y = X·Bᵀ + C with B `[out, in]` (PyTorch's Linear weight, `transB=1`). */
export function gemm(
  x: string,
  y: string,
  weight: Float32Array,
  bias: Float32Array,
  out: number,
): Part {
  const initializers = [
    { name: `${y}.B`, dims: [out, weight.length / out], data: weight },
    { name: `${y}.C`, dims: [out], data: bias },
  ];
  const node = {
    op: "Gemm",
    inputs: [x, ...initializers.map((i) => i.name)],
    outputs: [y],
    attributes: { transB: { int: 1 } },
  };
  return { nodes: [node], initializers };
}

export function relu(x: string, y: string): Part {
  return { nodes: [{ op: "Relu", inputs: [x], outputs: [y] }], initializers: [] };
}

/** A model of `parts` in order, with one input `X` of `dims` and the named outputs. */
export function onnxModel(parts: Part[], dims: readonly number[], outputs: string[]): Uint8Array {
  return encodeModel({
    nodes: parts.flatMap((p) => p.nodes),
    initializers: parts.flatMap((p) => p.initializers),
    inputs: [{ name: "X", dims }],
    outputs,
  });
}
