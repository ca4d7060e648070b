/**
 * The threaded back end: the SIMD kernels of the shared-memory build, each pass of a large
 * tensor split into the fixed chunks of `plan.ts` and run by a {@link Pool} of workers and the
 * calling thread together. Its kind is `"simd"`: `init({ threads })` puts it in the registry in
 * place of the single-threaded SIMD build, so modules and functional ops use it unchanged.
 *
 * Results do not depend on the thread count: a tensor below `minFloats` runs whole on the
 * calling thread (as the single-threaded build does), any other in the chunks its shape
 * gives, each chunk computed by the same kernel whichever thread runs it, and the chunks'
 * float64 partials merged in chunk order. They differ from the single-threaded build's only
 * by the rounding of where blocks are cut.
 *
 * @module
 */
import { ACTIVATION_CODES, type Act } from "../activation.js";
import type { Backend, Dims, F32Buffer } from "../backend.js";
import { dimsLength } from "../backend.js";
import { WasmBackend } from "../wasm/backend-wasm.js";
import { WasmF32Buffer } from "../wasm/memory.js";
import {
  CHUNK_FLOATS,
  type ChunkPlan,
  mergeGradSums,
  mergeMoments,
  partialFloat64s,
  planChunks,
} from "./plan.js";
import type { Pool } from "./pool.js";

/** The ops of `threads.rs`. */
const OP = { moments: 0, scaleShift: 1, gradSums: 2, gradInput: 3, copy: 4 } as const;
/** leakyRelu's slope as float32 bits, for the job. */
const SLOPE = new Float32Array(1);
const SLOPE_BITS = new Uint32Array(SLOPE.buffer);
/** Words of `threads.rs`'s `Job`, and the bytes reserved for it. */
const JOB_WORDS = 21;
const JOB_BYTES = 128;

/** A pass for the chunk runner: `out = f(x, b)` or reductions of them. */
interface Pass {
  readonly op: number;
  readonly x: F32Buffer;
  readonly b: F32Buffer;
  readonly out: F32Buffer;
  /** Per-channel parameters, in the order of `threads.rs`'s ops (at most six). */
  readonly params: readonly F32Buffer[];
  readonly act?: Act | null | undefined;
  /** Per-channel outputs that the merge writes: checked before anything runs. */
  readonly outputs?: readonly F32Buffer[];
}

/**
 * Tensors below this many floats (2 MiB) run on the calling thread. Below `CHUNK_FLOATS`
 * (3·2^17) a tensor is one chunk whatever the threshold; from 2^19 on a tensor whose chunks are
 * `CHUNK_FLOATS` long has two or more, none above 3/4 of it, so a second thread has work. (A
 * chunk also holds at least 1536 values of each channel, see plan.ts: channels-last tensors of
 * more than 256 channels, and one sample of short runs, get larger chunks, so fewer of them.)
 * bench/threads.ts (threads on every size) on the 2-core machine, when a copy scales there:
 * 2^18 floats and below 0.85–1.02× (one chunk: the shared build's own cost), 2^19 1.11–1.38×,
 * 2^20 1.51–1.73× (three quiet runs); so no benchmark shape is below 0.95× with 2^19, while
 * 2^20 (the first guess) left 2^19's gain unused. Between 3·2^17 and 2^19 the second chunk can
 * be tiny (no gain for the cost). When the machine is busy and a copy does not scale, no size
 * gains (0.59–0.87× at 2^19 and 2^20, large tensors 0.68–1.03×): no threshold helps there.
 */
export const MIN_THREADED_FLOATS = 1 << 19;

export interface ThreadedExports {
  bn_work(job: number, slot: number): number;
  bn_slot_bytes(group: number): number;
}

export interface ThreadedOptions {
  /** Tensors below this many floats run on the calling thread alone. */
  readonly minFloats?: number;
  /** Floats per chunk: fixed for a back end, whatever its thread count (tests make it small). */
  readonly chunkFloats?: number;
}

export class ThreadedBackend extends WasmBackend {
  #pool: Pool | undefined;
  /**
   * Tensors below this many floats run on the calling thread alone, and floats per chunk:
   * results depend on both (never on the thread count). Tests set them small, so that small
   * tensors are chunked.
   */
  minFloats: number;
  chunkFloats: number;
  readonly #exports: ThreadedExports;
  /** Job descriptor, per-thread slots and partials, reused while large enough. */
  #scratch: { ptr: number; bytes: number } | undefined;

  /**
   * @param instance the calling thread's instance of the shared-memory build
   * @param memory the shared memory it imports (the build exports none)
   *
   * Passes run on the calling thread alone until {@link attach} gives it a pool.
   */
  constructor(
    instance: WebAssembly.Instance,
    memory: WebAssembly.Memory,
    options: ThreadedOptions = {},
  ) {
    // WasmBackend reads the memory from the exports, where the other builds have it.
    super("simd", { exports: { ...instance.exports, memory } } as unknown as WebAssembly.Instance);
    this.#exports = instance.exports as unknown as ThreadedExports;
    this.minFloats = options.minFloats ?? MIN_THREADED_FLOATS;
    this.chunkFloats = options.chunkFloats ?? CHUNK_FLOATS;
  }

  /** Gives the back end its pool (made over this back end's heap), once. */
  attach(pool: Pool): void {
    if (this.#pool !== undefined) throw new Error("wasm-batchnorm: the back end has a pool");
    this.#pool = pool;
  }

  /** The pool's counts (passes, chunks, chunks the calling thread ran), for benchmarks. */
  get stats(): { readonly passes: number; readonly chunks: number; readonly callerChunks: number } {
    return { ...(this.#pool?.stats ?? { passes: 0, chunks: 0, callerChunks: 0 }) };
  }

  /** Threads that run a pass: the pool's workers and the calling thread. */
  get threads(): number {
    return (this.#pool?.workers ?? 0) + 1;
  }

  /** The pass's plan, or undefined when it runs whole on the calling thread. */
  #plan(d: Dims): ChunkPlan | undefined {
    if (this.#pool === undefined || dimsLength(d) < this.minFloats) return undefined;
    const plan = planChunks(d, this.chunkFloats);
    return plan.chunks > 1 ? plan : undefined;
  }

  #ptr(b: F32Buffer): number {
    if (!(b instanceof WasmF32Buffer) || b.heap !== this.heap) {
      throw new TypeError(
        "wasm-batchnorm: a buffer of another back end was passed to the threaded simd build",
      );
    }
    return b.ptr;
  }

  /** Runs `pass` on the pool in `plan`; returns its partials (float64, valid until the next pass). */
  #run(d: Dims, plan: ChunkPlan, pass: Pass): Float64Array {
    const slotBytes = this.#exports.bn_slot_bytes(plan.group) >>> 0;
    const partialBytes = partialFloat64s(plan) * 8;
    const bytes = JOB_BYTES + slotBytes * this.threads + partialBytes;
    if (!Number.isFinite(bytes) || slotBytes >= 2 ** 32 - 16 || bytes >= 2 ** 32) {
      throw new RangeError("wasm-batchnorm: the threaded pass's scratch does not fit in memory");
    }
    // Check every buffer before any allocation.
    const at = (k: number) => {
      const p = pass.params[k];
      return p === undefined ? 0 : this.#ptr(p);
    };
    const addresses = [this.#ptr(pass.x), this.#ptr(pass.b), this.#ptr(pass.out)];
    const params = [at(0), at(1), at(2), at(3), at(4), at(5)];
    for (const o of pass.outputs ?? []) this.#ptr(o);
    SLOPE[0] = pass.act?.negativeSlope ?? 0;
    let scratch = this.#scratch;
    if (scratch === undefined || scratch.bytes < bytes) {
      if (scratch !== undefined) this.heap.free(scratch.ptr, scratch.bytes);
      this.#scratch = undefined;
      scratch = { ptr: this.heap.alloc(bytes), bytes };
      this.#scratch = scratch;
    }
    const slots = scratch.ptr + JOB_BYTES;
    const partials = slots + slotBytes * this.threads;
    const job = new Uint32Array(this.heap.memory.buffer, scratch.ptr, JOB_WORDS);
    // From literal arrays: spreads and Array.from cost more per pass.
    job.set([pass.op, plan.chunks, d.outer, d.channels, d.inner, plan.rows, plan.group]);
    job.set(addresses, 7);
    job.set(params, 10);
    const act = pass.act ? ACTIVATION_CODES[pass.act.kind] : 0;
    job.set([act, SLOPE_BITS[0] as number, partials, slots, slotBytes], 16);
    (this.#pool as Pool).run(scratch.ptr, plan.chunks);
    return new Float64Array(this.heap.memory.buffer, partials, partialFloat64s(plan));
  }

  // As in WasmBackend, the passes are fields typed by the interface. A tensor without a plan
  // runs whole on the calling thread, in the single-threaded pass kept here (read through
  // `base`: TypeScript would take `this.moments` for the field below, not yet assigned).
  readonly #whole = ((base: WasmBackend) => ({
    moments: base.moments,
    scaleShift: base.scaleShift,
    gradSums: base.gradSums,
    gradInput: base.gradInput,
    writesGradient: base.writesGradient,
  }))(this);

  override readonly moments: Backend["moments"] = (x, d, ws, mean, variance) => {
    const plan = this.#plan(d);
    if (plan === undefined) this.#whole.moments(x, d, ws, mean, variance);
    else {
      const pass = { op: OP.moments, x, b: x, out: x, params: [], outputs: [mean, variance] };
      mergeMoments(this.#run(d, plan, pass), plan, d, mean.view(), variance.view());
    }
  };

  override readonly scaleShift: Backend["scaleShift"] = (x, y, d, c, k, s, ws, act) => {
    const plan = this.#plan(d);
    if (plan === undefined) this.#whole.scaleShift(x, y, d, c, k, s, ws, act);
    else this.#run(d, plan, { op: OP.scaleShift, x, b: x, out: y, params: [c, k, s], act });
  };

  override readonly gradSums: Backend["gradSums"] = (x, dy, d, m, ws, s0, s1, f) => {
    const plan = this.#plan(d);
    if (plan === undefined) return this.#whole.gradSums(x, dy, d, m, ws, s0, s1, f);
    const params = f ? [m, f.scale, f.shift] : [m];
    const outputs = [s0, s1];
    const pass = { op: OP.gradSums, x, b: dy, out: x, params, act: f?.act, outputs };
    mergeGradSums(this.#run(d, plan, pass), plan, d, s0.view(), s1.view());
    // The chunks form z and leave no thresholds, nor g.
    return null;
  };

  /** Chunked passes form z and never write g. */
  override readonly writesGradient: WasmBackend["writesGradient"] = (act, d) =>
    this.#plan(d) === undefined && this.#whole.writesGradient(act, d);

  override readonly gradInput: Backend["gradInput"] = (x, dy, dx, d, m, k0, k1, k2, ws, f) => {
    const plan = this.#plan(d);
    if (plan === undefined) this.#whole.gradInput(x, dy, dx, d, m, k0, k1, k2, ws, f);
    else {
      const params = f ? [m, k0, k1, k2, f.scale, f.shift] : [m, k0, k1, k2];
      this.#run(d, plan, { op: OP.gradInput, x, b: dy, out: dx, params, act: f?.act });
    }
  };

  override copy(src: F32Buffer, dst: F32Buffer): void {
    // As a [length, 1, 1] tensor: chunks of rows, like any other pass.
    const d = { outer: src.length, channels: 1, inner: 1 };
    const plan = this.#plan(d);
    if (plan === undefined || dst.length !== src.length) super.copy(src, dst);
    else this.#run(d, plan, { op: OP.copy, x: src, b: src, out: dst, params: [] });
  }

  /** Stops the workers; passes of large tensors throw afterwards. */
  close(): void {
    this.#pool?.close();
  }
}
