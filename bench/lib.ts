/**
 * Everything the benchmark takes from the package, in one place: the public API and the few
 * internals it reaches past it for (a back end by name, for the copy yardstick; the JS back
 * end's kernels, for `js-kernels.ts`). When the
 * package's modules move, repoint the paths here.
 *
 * @module
 */
export type { Backend, Dims, F32Buffer } from "../ts/backend.js";
export { jsBackend } from "../ts/backend-js.js";
export { BatchNorm, init, type Layout, type StateDict } from "../ts/index.node.js";
export { resolveBackend } from "../ts/init.js";
