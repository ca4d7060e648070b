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
import type { Act, Fused } from "../activation.js";
import { type Dims, dimsLength, type F32Buffer } from "../backend.js";
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

/** Must match `threads.rs`. */
const OP_MOMENTS = 0;
const OP_SCALE_SHIFT = 1;
const OP_GRAD_SUMS = 2;
const OP_GRAD_INPUT = 3;
const OP_COPY = 4;
/** Bytes reserved for a job descriptor (`threads.rs`'s `Job`: 17 u32). */
const JOB_BYTES = 128;

/**
 * Tensors below this many floats (4 MiB) run on the calling thread. Handing out a pass costs
 * waking a worker, which on a busy machine comes late: bench/threads.ts on this 2-core machine
 * (shared with other work, load 4-5) measured no gain below it (0.75-1.0x from 64K to 1M
 * floats with every size threaded), while the chunked passes cost 0-20% more than the whole
 * tensor on one thread.
 */
export const MIN_THREADED_FLOATS = 1 << 20;

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
  readonly minFloats: number;
  readonly chunkFloats: number;
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

  /**
   * Writes a job and runs it on the pool; returns the partials (float64, valid until the next
   * pass).
   */
  #run(
    op: number,
    d: Dims,
    plan: ChunkPlan,
    tensors: [F32Buffer, F32Buffer, F32Buffer],
    params: F32Buffer[],
  ): Float64Array {
    const slotBytes = this.#exports.bn_slot_bytes(plan.group) >>> 0;
    const partialBytes = partialFloat64s(plan) * 8;
    const bytes = JOB_BYTES + slotBytes * this.threads + partialBytes;
    if (!Number.isFinite(bytes) || slotBytes >= 2 ** 32 - 16 || bytes >= 2 ** 32) {
      throw new RangeError("wasm-batchnorm: the threaded pass's scratch does not fit in memory");
    }
    // Check every buffer before any allocation.
    const [x, b, out] = tensors.map((t) => this.#ptr(t)) as [number, number, number];
    const p = params.map((t) => this.#ptr(t));
    let scratch = this.#scratch;
    if (scratch === undefined || scratch.bytes < bytes) {
      if (scratch !== undefined) this.heap.free(scratch.ptr, scratch.bytes);
      this.#scratch = undefined;
      scratch = { ptr: this.heap.alloc(bytes), bytes };
      this.#scratch = scratch;
    }
    const slots = scratch.ptr + JOB_BYTES;
    const partials = slots + slotBytes * this.threads;
    const job = new Uint32Array(this.heap.memory.buffer, scratch.ptr, 17);
    job.set([
      op,
      plan.chunks,
      d.outer,
      d.channels,
      d.inner,
      plan.rows,
      plan.group,
      x,
      b,
      out,
      p[0] ?? 0,
      p[1] ?? 0,
      p[2] ?? 0,
      p[3] ?? 0,
      partials,
      slots,
      slotBytes,
    ]);
    (this.#pool as Pool).run(scratch.ptr, plan.chunks);
    return new Float64Array(this.heap.memory.buffer, partials, partialFloat64s(plan));
  }

  override moments(
    x: F32Buffer,
    d: Dims,
    ws: F32Buffer,
    mean: F32Buffer,
    variance: F32Buffer,
  ): void {
    const plan = this.#plan(d);
    if (plan === undefined) {
      super.moments(x, d, ws, mean, variance);
      return;
    }
    this.#ptr(mean);
    this.#ptr(variance);
    const partials = this.#run(OP_MOMENTS, d, plan, [x, x, x], []);
    mergeMoments(partials, plan, d, mean.view(), variance.view());
  }

  override scaleShift(
    x: F32Buffer,
    y: F32Buffer,
    d: Dims,
    center: F32Buffer,
    scale: F32Buffer,
    shift: F32Buffer,
    ws: F32Buffer,
    act?: Act | null,
  ): void {
    // A fused activation runs on the calling thread: the chunk runner has no activation yet.
    const plan = act ? undefined : this.#plan(d);
    if (plan === undefined) {
      super.scaleShift(x, y, d, center, scale, shift, ws, act);
      return;
    }
    this.#run(OP_SCALE_SHIFT, d, plan, [x, x, y], [center, scale, shift]);
  }

  override gradSums(
    x: F32Buffer,
    dy: F32Buffer,
    d: Dims,
    mean: F32Buffer,
    ws: F32Buffer,
    sumDy: F32Buffer,
    sumDyXc: F32Buffer,
    fused?: Fused | null,
  ): void {
    const plan = fused ? undefined : this.#plan(d);
    if (plan === undefined) {
      super.gradSums(x, dy, d, mean, ws, sumDy, sumDyXc, fused);
      return;
    }
    this.#ptr(sumDy);
    this.#ptr(sumDyXc);
    const partials = this.#run(OP_GRAD_SUMS, d, plan, [x, dy, x], [mean]);
    mergeGradSums(partials, plan, d, sumDy.view(), sumDyXc.view());
  }

  override gradInput(
    x: F32Buffer,
    dy: F32Buffer,
    dx: F32Buffer,
    d: Dims,
    mean: F32Buffer,
    kDy: F32Buffer,
    kXc: F32Buffer,
    kConst: F32Buffer,
    ws: F32Buffer,
    fused?: Fused | null,
  ): void {
    const plan = fused ? undefined : this.#plan(d);
    if (plan === undefined) {
      super.gradInput(x, dy, dx, d, mean, kDy, kXc, kConst, ws, fused);
      return;
    }
    this.#run(OP_GRAD_INPUT, d, plan, [x, dy, dx], [mean, kDy, kXc, kConst]);
  }

  override copy(src: F32Buffer, dst: F32Buffer): void {
    // As a [length, 1, 1] tensor: chunks of rows, like any other pass.
    const d = { outer: src.length, channels: 1, inner: 1 };
    const plan = this.#plan(d);
    if (plan === undefined || dst.length !== src.length) {
      super.copy(src, dst);
      return;
    }
    this.#run(OP_COPY, d, plan, [src, src, dst], []);
  }

  /** Stops the workers; passes of large tensors throw afterwards. */
  close(): void {
    this.#pool?.close();
  }
}
