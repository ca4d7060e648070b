/**
 * wasm-batchnorm: batch normalization for JavaScript and TypeScript. This module holds the
 * public API shared by the Node and browser entry points, which add {@link init}.
 *
 * @module
 */

export type { Activation } from "./activation.js";
export { BatchNorm1d, BatchNorm2d, BatchNorm3d } from "./aliases.js";
export type { BackendKind } from "./backend.js";
export { BatchNorm, type Gradients } from "./batch-norm.js";
export type {
  ChannelValues,
  FromKerasOptions,
  FromOnnxOptions,
  KerasExport,
  KerasWeights,
  OnnxExport,
  OnnxInitializers,
} from "./convert.js";
export {
  type BatchNormParameters,
  type ConvLayout,
  type FoldableBatchNorm,
  type FoldConvOptions,
  type Folded,
  type FoldLinearOptions,
  foldedAffineOf,
  foldIntoConv,
  foldIntoLinear,
  type LinearLayout,
} from "./fold.js";
export {
  type BatchNormBackwardOptions,
  type BatchNormFunctionOptions,
  batchNorm,
  batchNormBackward,
  type FunctionGradients,
  type Moments,
  type MomentsOptions,
  moments,
} from "./functional.js";
export { type InitOptions, type InitResult, memoryBytes, type WasmSource } from "./init.js";
export type { BatchNormOptions, RunningVarEstimator } from "./options.js";
export {
  type CalibrationBatch,
  type PopulationOptions,
  type PopulationStatistics,
  populationStatistics,
} from "./recalibrate.js";
export type { Layout } from "./shape.js";
export type { StateDict, StateDictInput } from "./state.js";
export { allReduceSum, type BatchNormSync } from "./sync.js";
export {
  abortSyncGroup,
  createSyncGroup,
  joinSyncGroup,
  type SyncGroupHandle,
  type SyncGroupMember,
  type SyncGroupOptions,
} from "./sync-group.js";
export { Tensor } from "./tensor.js";
export type { RenormLimits } from "./variants.js";
export type { VariantOptions } from "./variants-functional.js";
