/**
 * wasm-batchnorm: batch normalization for JavaScript and TypeScript. This module holds the
 * public API shared by the Node and browser entry points, which add {@link init}.
 *
 * @module
 */
export type { BackendKind } from "./backend.js";
export {
  BatchNorm,
  type BatchNormOptions,
  type Gradients,
  type Layout,
  memoryBytes,
  type StateDict,
  type StateDictInput,
} from "./batch-norm.js";
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
export type { InitOptions, InitResult, WasmSource } from "./init.js";
export { Tensor } from "./tensor.js";
