/**
 * The module's side of the deployment peer tests: the peers' names for a set of {@link BnParams},
 * and a module made the PyTorch way (constructor and state dict), for the negative controls that
 * must not go through the converters under test.
 */
import { BatchNorm, type BatchNormOptions } from "../../ts/index.node.js";
import type { BnParams } from "./data.js";

/** ONNX BatchNormalization's inputs after X, as `BatchNorm.fromOnnx` takes them. */
export const onnxInputs = (p: BnParams) => ({
  scale: p.weight,
  B: p.bias,
  input_mean: p.mean,
  input_var: p.variance,
});

/** Keras's four weights by name, as `BatchNorm.fromKeras` takes them. */
export const kerasWeights = (p: BnParams) => ({
  gamma: p.weight,
  beta: p.bias,
  movingMean: p.mean,
  movingVariance: p.variance,
});

/** `new BatchNorm(C, options)` holding p's parameters and running statistics. */
export function moduleWith(p: BnParams, options: BatchNormOptions): BatchNorm {
  const bn = new BatchNorm(p.weight.length, options);
  bn.loadStateDict({
    weight: p.weight,
    bias: p.bias,
    running_mean: p.mean,
    running_var: p.variance,
    num_batches_tracked: 0,
  });
  return bn;
}
