/**
 * The interface that the wasm back ends (SIMD and scalar builds) and the pure-JS back end all
 * implement. It holds only the O(N) passes over a tensor; everything per channel (running
 * statistics, coefficients) is computed once, in float64, by {@link BatchNorm}.
 *
 * @module
 */

/** Which implementation runs the kernels. */
export type BackendKind = "simd" | "scalar" | "js";

/**
 * A tensor seen as `[outer, channels, inner]`: NCHW `[N, C, ...spatial]` is
 * `[N, C, prod(spatial)]`; NHWC `[N, ...spatial, C]` and 2-D `[N, C]` are `[N·prod(spatial), C, 1]`.
 */
export interface Dims {
  readonly outer: number;
  readonly channels: number;
  readonly inner: number;
}

/** A run of float32 values in a back end's memory, with one owner that frees it. */
export interface F32Buffer {
  readonly length: number;
  /** A view of the values. Wasm views are re-made after `memory.grow`; do not keep one across calls. */
  view(): Float32Array;
  /** Releases the memory; the buffer must not be used again. */
  free(): void;
}

/** One implementation of the batch-norm passes. Buffers must come from the same back end. */
export interface Backend {
  readonly kind: BackendKind;
  /** Allocates `length` floats (zeroed). Throws a RangeError when memory cannot hold them. */
  alloc(length: number): F32Buffer;
  /** Allocates the scratch space that the passes below need for `channels` channels. */
  allocWorkspace(channels: number): F32Buffer;
  /** Per-channel mean and biased variance of `x`. */
  moments(x: F32Buffer, dims: Dims, ws: F32Buffer, mean: F32Buffer, variance: F32Buffer): void;
  /** `y = (x − center)·scale + shift`, per channel; `y` may be `x`. */
  scaleShift(
    x: F32Buffer,
    y: F32Buffer,
    dims: Dims,
    center: F32Buffer,
    scale: F32Buffer,
    shift: F32Buffer,
    ws: F32Buffer,
  ): void;
  /** Per-channel `Σdy` and `Σdy·(x − mean)`. */
  gradSums(
    x: F32Buffer,
    dy: F32Buffer,
    dims: Dims,
    mean: F32Buffer,
    ws: F32Buffer,
    sumDy: F32Buffer,
    sumDyXc: F32Buffer,
  ): void;
  /** `dx = kDy·dy + kXc·(x − mean) + kConst`, per channel; `dx` may be `dy`. */
  gradInput(
    x: F32Buffer,
    dy: F32Buffer,
    dx: F32Buffer,
    dims: Dims,
    mean: F32Buffer,
    kDy: F32Buffer,
    kXc: F32Buffer,
    kConst: F32Buffer,
    ws: F32Buffer,
  ): void;
  /** Copies `src` to `dst` (same length): the streaming-bandwidth yardstick of the benchmarks. */
  copy(src: F32Buffer, dst: F32Buffer): void;
}

/** Number of elements of a `Dims`. */
export function dimsLength(dims: Dims): number {
  return dims.outer * dims.channels * dims.inner;
}
