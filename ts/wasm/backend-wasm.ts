/**
 * A {@link Backend} over one instance of a batchnorm wasm build. All modules on the same build
 * share this instance and its heap.
 *
 * @module
 */
import { ACTIVATION_CODES, type Fused } from "../activation.js";
import type { Backend, BackendKind, ChannelMath, F32Buffer } from "../backend.js";
import { type BatchNormExports, type ChannelExports, channelExports, checkExports } from "./abi.js";
import { Heap, MAX_BYTES, WasmF32Buffer } from "./memory.js";

export class WasmBackend implements Backend {
  readonly kind: BackendKind;
  readonly maxFloats = MAX_BYTES / 4;
  readonly heap: Heap;
  readonly #abi: BatchNormExports;
  /** Workspace bytes ≈ slope·C + base: see `workspaceFloats`. */
  readonly #workspaceSlope: number;
  readonly #workspaceBase: number;
  readonly channelMath?: ChannelMath;
  /** Float64 views of `invstd` buffers, by their float32 view (re-made when memory grew). */
  readonly #float64 = new WeakMap<Float32Array, Float64Array>();

  constructor(kind: "simd" | "scalar", instance: WebAssembly.Instance) {
    this.kind = kind;
    this.#abi = checkExports(instance, `the ${kind} build`);
    const channel = channelExports(instance);
    if (channel !== null) this.channelMath = this.#channelMath(channel);
    const lanes = this.#abi.bn_lanes();
    if (lanes !== (kind === "simd" ? 4 : 1)) {
      throw new TypeError(
        `wasm-batchnorm: the ${kind} build has ${lanes}-lane kernels: the .wasm files are swapped`,
      );
    }
    this.heap = new Heap(this.#abi.memory, this.#abi.__heap_base.value as number);
    const bytes = (c: number) => this.#abi.bn_workspace_bytes(c) >>> 0;
    this.#workspaceSlope = (bytes(2048) - bytes(1024)) / 1024;
    // An upper bound for small counts too (some scratch has a minimum size).
    this.#workspaceBase = Math.max(0, bytes(1024) - 1024 * this.#workspaceSlope, bytes(1));
  }

  /** The address of a buffer, which must belong to this instance's heap. */
  #p(b: F32Buffer): number {
    if (!(b instanceof WasmF32Buffer) || b.heap !== this.heap) {
      throw new TypeError(
        `wasm-batchnorm: a buffer of another back end was passed to the ${this.kind} build`,
      );
    }
    return b.ptr;
  }

  alloc(length: number): F32Buffer {
    return new WasmF32Buffer(this.heap, length);
  }

  subrange(b: F32Buffer, offset: number, length: number): F32Buffer {
    this.#p(b);
    return WasmF32Buffer.within(b as WasmF32Buffer, offset, length);
  }

  workspaceFloats(channels: number): number {
    // The export computes in 32-bit usize and saturates there (u32::MAX) rather than wrap; a
    // channel count past i32 would not even reach it intact.
    if (!(channels >= 0 && channels < 2 ** 31)) return Infinity;
    // The workspace grows linearly with the channel count (past a few channels): its size
    // extrapolated in float64 catches one that would wrap 32 bits, whatever the build does
    // past that.
    if (this.#workspaceSlope * channels + this.#workspaceBase >= MAX_BYTES - 1) return Infinity;
    const bytes = this.#abi.bn_workspace_bytes(channels) >>> 0;
    return bytes >= MAX_BYTES - 1 ? Infinity : Math.ceil(bytes / 4);
  }

  allocWorkspace(channels: number): F32Buffer {
    return this.alloc(this.workspaceFloats(channels));
  }

  fits(floats: number): boolean {
    return this.heap.fits(floats * 4);
  }

  memoryBytes(): number {
    return this.heap.memoryBytes;
  }

  pin(a: Float32Array): () => Float32Array {
    const memory = this.heap.memory;
    if (a.buffer !== memory.buffer) return () => a;
    const { byteOffset, length } = a;
    // A grown memory has detached `a` (its length reads 0): view the same floats again.
    return () => (a.length === length ? a : new Float32Array(memory.buffer, byteOffset, length));
  }

  // The passes are fields typed by the interface, so that their parameters are typed once, in
  // backend.ts (methods would repeat them; rest parameters made a call several times slower).

  readonly moments: Backend["moments"] = (x, d, ws, mean, variance) => {
    this.#abi.bn_moments(
      this.#p(x),
      d.outer,
      d.channels,
      d.inner,
      this.#p(ws),
      this.#p(mean),
      this.#p(variance),
    );
  };

  readonly scaleShift: Backend["scaleShift"] = (x, y, d, center, scale, shift, ws, act) => {
    const [outer, channels, inner] = [d.outer, d.channels, d.inner];
    this.#abi.bn_scale_shift(
      this.#p(x),
      this.#p(y),
      outer,
      channels,
      inner,
      this.#p(center),
      this.#p(scale),
      this.#p(shift),
      this.#p(ws),
      act ? ACTIVATION_CODES[act.kind] : 0,
      act ? act.negativeSlope : 0,
    );
  };

  readonly gradSums: Backend["gradSums"] = (x, dy, d, mean, ws, sumDy, sumDyXc, fused) => {
    const [outer, channels, inner] = [d.outer, d.channels, d.inner];
    const out = fused?.gradOut;
    const gOut = out && !this.#overlaps(out, x) && !this.#overlaps(out, dy) ? this.#p(out) : 0;
    const left = this.#abi.bn_grad_sums(
      this.#p(x),
      this.#p(dy),
      outer,
      channels,
      inner,
      this.#p(mean),
      this.#p(ws),
      this.#p(sumDy),
      this.#p(sumDyXc),
      ...this.#fused(fused),
      gOut,
    );
    return left === 1 ? "thresholds" : left === 2 ? "g" : null;
  };

  readonly writesGradient: NonNullable<Backend["writesGradient"]> = (act, d) =>
    this.#abi.bn_writes_g(ACTIVATION_CODES[act.kind], d.outer * d.channels * d.inner) === 1;

  /** Whether two buffers share memory (subranges of one tensor are distinct objects). */
  #overlaps(a: F32Buffer, b: F32Buffer): boolean {
    const [pa, pb] = [this.#p(a), this.#p(b)];
    return pa < pb + 4 * b.length && pb < pa + 4 * a.length;
  }

  readonly gradInput: Backend["gradInput"] = (x, dy, dx, d, mean, kDy, kXc, kConst, ws, fused) => {
    this.#abi.bn_grad_input(
      this.#p(x),
      this.#p(dy),
      this.#p(dx),
      d.outer,
      d.channels,
      d.inner,
      this.#p(mean),
      this.#p(kDy),
      this.#p(kXc),
      this.#p(kConst),
      this.#p(ws),
      ...this.#fused(fused),
      fused?.thresholdsReady ? 1 : 0,
    );
  };

  /** The gradient exports' `act, slope, scale, shift` (0s when not fused). */
  #fused(f: Fused | null | undefined): [number, number, number, number] {
    if (!f) return [0, 0, 0, 0];
    return [ACTIVATION_CODES[f.act.kind], f.act.negativeSlope, this.#p(f.scale), this.#p(f.shift)];
  }

  copy(src: F32Buffer, dst: F32Buffer): void {
    this.#abi.bn_copy(this.#p(src), this.#p(dst), src.length);
  }

  /** {@link ChannelMath} over the build's per-channel exports. */
  #channelMath(e: ChannelExports): ChannelMath {
    const p = (b: F32Buffer) => this.#p(b);
    const optional = (b: F32Buffer | null) => (b === null ? 0 : this.#p(b));
    return {
      forwardCoefficients: (variance, weight, eps, invstd, scale) =>
        e.bn_forward_coefficients(
          p(variance),
          optional(weight),
          eps,
          variance.length,
          p(invstd),
          p(scale),
        ),
      updateRunning: (mean, variance, runningMean, runningVar, momentum, unbias) =>
        e.bn_update_running(
          p(mean),
          p(variance),
          p(runningMean),
          p(runningVar),
          momentum,
          unbias,
          mean.length,
        ),
      backwardCoefficients: (sumDy, sumDyXc, invstd, weight, n, dWeight, kDy, kXc, kConst) =>
        e.bn_backward_coefficients(
          p(sumDy),
          p(sumDyXc),
          p(invstd),
          optional(weight),
          n,
          sumDy.length,
          p(dWeight),
          p(kDy),
          p(kXc),
          p(kConst),
        ),
      float64View: (invstd) => {
        const view = invstd.view();
        let values = this.#float64.get(view);
        if (values === undefined) {
          values = new Float64Array(view.buffer, view.byteOffset, view.length / 2);
          this.#float64.set(view, values);
        }
        return values;
      },
    };
  }

  refresh(src: F32Buffer, snapshot: F32Buffer): boolean {
    return this.#abi.bn_refresh(this.#p(src), this.#p(snapshot), src.length) === 1;
  }
}
