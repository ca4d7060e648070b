/**
 * The interface that the wasm back ends (SIMD and scalar builds) and the pure-JS back end all
 * implement. It holds the O(N) passes over a tensor; everything per channel (running
 * statistics, coefficients) is computed once, in float64, by core.ts, or by a back end's
 * {@link ChannelMath} where it has one.
 *
 * @module
 */
import type { Act, Fused } from "./activation.js";

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

/** What {@link Backend.gradSums} left for the second backward pass. */
export type GradSumsLeft = "thresholds" | "g" | null;

/**
 * One implementation of the batch-norm passes, and the memory its buffers live in. Buffers
 * must come from the same back end. Everything a module needs to know of memory is asked here.
 */
export interface Backend {
  readonly kind: BackendKind;
  /** The most floats one buffer can hold (wasm32: 2^30, its 4 GiB). */
  readonly maxFloats: number;
  /** Allocates `length` floats (zeroed). Throws a RangeError when memory cannot hold them. */
  alloc(length: number): F32Buffer;
  /**
   * Floats of scratch space that the passes below need for `channels` channels, or `Infinity`
   * when that is more than memory can hold.
   */
  workspaceFloats(channels: number): number;
  /**
   * `length` floats of `b` from `offset` on, as a buffer of its own that owns nothing (its
   * `free()` does nothing; it must not outlive `b`): the passes then run on a sub-range of a
   * tensor, such as one ghost batch of it, without copying.
   */
  subrange(b: F32Buffer, offset: number, length: number): F32Buffer;
  /** Allocates `workspaceFloats(channels)` floats. */
  allocWorkspace(channels: number): F32Buffer;
  /**
   * Whether `floats` more floats (in any number of buffers) can fit next to what is live now:
   * lets a caller refuse a whole set of allocations before making any of them.
   */
  fits(floats: number): boolean;
  /** Bytes of memory the back end holds now (wasm: its linear memory; JS: 0). */
  memoryBytes(): number;
  /**
   * A caller's array, re-read after allocations: when it is a view of this back end's memory
   * (a tensor's `.data`), an allocation that grows the memory detaches it, and the getter then
   * re-views the same floats in the new memory. Other arrays are returned as they are.
   */
  pin(a: Float32Array): () => Float32Array;
  /** Per-channel mean and biased variance of `x`. */
  moments(x: F32Buffer, dims: Dims, ws: F32Buffer, mean: F32Buffer, variance: F32Buffer): void;
  /**
   * `y = (x − center)·scale + shift`, per channel, then `act` (when given) in the same pass;
   * `y` may be `x`.
   */
  scaleShift(
    x: F32Buffer,
    y: F32Buffer,
    dims: Dims,
    center: F32Buffer,
    scale: F32Buffer,
    shift: F32Buffer,
    ws: F32Buffer,
    act?: Act | null,
  ): void;
  /**
   * Per-channel `Σg` and `Σg·(x − mean)`, where `g = dy`, or with `fused`,
   * `g = dy·act′((x − mean)·scale + shift)` (the pre-activation recomputed in the pass).
   * Returns what it left for the second pass: `"thresholds"` in `ws`, which a `gradInput`
   * with the same `fused` can take (see {@link Fused.thresholdsReady}); `"g"` in
   * `fused.gradOut` (see {@link Fused.gradOut}), from which a `gradInput` without `fused`
   * gives the same `dx`; or null.
   */
  gradSums(
    x: F32Buffer,
    dy: F32Buffer,
    dims: Dims,
    mean: F32Buffer,
    ws: F32Buffer,
    sumDy: F32Buffer,
    sumDyXc: F32Buffer,
    fused?: Fused | null,
  ): GradSumsLeft;
  /**
   * Whether `gradSums` through `act` on a tensor of `dims` writes `g` into a `fused.gradOut`
   * apart from `x` and `dy` (unless it tests z's sign against thresholds instead): the copy
   * paths give `dx` a buffer of its own only then. Back ends that never write `g` have none.
   */
  writesGradient?(act: Act, dims: Dims): boolean;
  /**
   * `dx = kDy·g + kXc·(x − mean) + kConst`, per channel, with `g` as in `gradSums`; `dx` may be
   * `dy`.
   */
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
    fused?: Fused | null,
  ): void;
  /** Copies `src` to `dst` (same length): the streaming-bandwidth yardstick of the benchmarks. */
  copy(src: F32Buffer, dst: F32Buffer): void;
  /**
   * True when `snapshot` holds the bits of `src` (same length); otherwise copies them there and
   * returns false. Only back ends for which this costs much less than recomputing a module's
   * inference coefficients have it (see coefficient-cache.ts).
   */
  refresh?(src: F32Buffer, snapshot: F32Buffer): boolean;
  /**
   * The O(C) float64 work of a training call, where the back end does it much faster than
   * JavaScript (the SIMD builds: two channels per `f64x2`); the others leave it to core.ts.
   */
  readonly channelMath?: ChannelMath;
}

/**
 * Per-channel float64 arithmetic in a back end's memory, giving the values of its JavaScript
 * twin in core.ts (named at each), bit for bit but for NaN payloads. A `weight` of `null` is 1;
 * `invstd` buffers hold float64 values, two floats a channel.
 */
export interface ChannelMath {
  /** `forwardCoefficients` without a correction: `invstd` and `scale` (not `shift`). */
  forwardCoefficients(
    variance: F32Buffer,
    weight: F32Buffer | null,
    eps: number,
    invstd: F32Buffer,
    scale: F32Buffer,
  ): void;
  /** `updateRunningStats`, with `unbias` the factor of the batch variance. */
  updateRunning(
    mean: F32Buffer,
    variance: F32Buffer,
    runningMean: F32Buffer,
    runningVar: F32Buffer,
    momentum: number,
    unbias: number,
  ): void;
  /** `gradientCoefficients` through batch statistics of `n` values, without a correction. */
  backwardCoefficients(
    sumDy: F32Buffer,
    sumDyXc: F32Buffer,
    invstd: F32Buffer,
    weight: F32Buffer | null,
    n: number,
    dWeight: F32Buffer,
    kDy: F32Buffer,
    kXc: F32Buffer,
    kConst: F32Buffer,
  ): void;
  /** A Float64Array view of an `invstd` buffer's values. */
  float64View(invstd: F32Buffer): Float64Array;
}

/** Number of values per channel of a `Dims` (what batch statistics are taken over). */
export function perChannel(dims: Dims): number {
  return dims.outer * dims.inner;
}

/** Number of elements of a `Dims`. */
export function dimsLength(dims: Dims): number {
  return dims.outer * dims.channels * dims.inner;
}
