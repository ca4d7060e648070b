/**
 * Allocation in a wasm instance's linear memory. The Rust crate has no allocator of its own:
 * everything above `__heap_base` belongs to this heap, a first-fit free list with coalescing.
 * Memory only grows (wasm cannot shrink it), and growth detaches every `ArrayBuffer` view of
 * the old memory, so a buffer's view is re-made from `memory.buffer` when it was detached.
 *
 * @module
 */
import type { F32Buffer } from "../backend.js";

const PAGE = 65536;
/** Every block starts on 16 bytes, so v128 loads are aligned and float64 scratch is too. */
const ALIGN = 16;
/** wasm32 addresses 4 GiB at most. */
export const MAX_BYTES = 2 ** 32;

interface Block {
  start: number;
  size: number;
}

export class Heap {
  readonly memory: WebAssembly.Memory;
  /** Free blocks, sorted by address; memory from `#top` up is free too. */
  #free: Block[] = [];
  #top: number;
  readonly #base: number;
  /**
   * Memory from here up has never been handed out, so it still holds the zeros that wasm
   * memory starts (and grows) with: allocations there need no clearing, and a huge tensor does
   * not touch (and so commit) all of its pages at once.
   */
  #pristine: number;

  constructor(memory: WebAssembly.Memory, heapBase: number) {
    this.memory = memory;
    this.#base = this.#top = this.#pristine = roundUp(heapBase, ALIGN);
  }

  /** Allocates `bytes` bytes (zeroed) and returns their address. */
  alloc(bytes: number): number {
    const size = roundUp(Math.max(bytes, 1), ALIGN);
    const i = this.#free.findIndex((b) => b.size >= size);
    let start: number;
    const found = this.#free[i];
    if (found !== undefined) {
      start = found.start;
      if (found.size === size) this.#free.splice(i, 1);
      else {
        found.start += size;
        found.size -= size;
      }
    } else {
      start = this.#top;
      this.#ensure(start + size, bytes);
      this.#top = start + size;
    }
    const dirty = Math.min(start + size, this.#pristine) - start;
    if (dirty > 0) new Uint8Array(this.memory.buffer, start, dirty).fill(0);
    this.#pristine = Math.max(this.#pristine, start + size);
    return start;
  }

  /** Returns a block to the heap. `bytes` must be what `alloc` was given. */
  free(start: number, bytes: number): void {
    const size = roundUp(Math.max(bytes, 1), ALIGN);
    let i = 0;
    while (i < this.#free.length && (this.#free[i] as Block).start < start) i++;
    this.#free.splice(i, 0, { start, size });
    // Merge with the next block, then with the previous one.
    const next = this.#free[i + 1];
    const cur = this.#free[i] as Block;
    if (next !== undefined && cur.start + cur.size === next.start) {
      cur.size += next.size;
      this.#free.splice(i + 1, 1);
    }
    const prev = this.#free[i - 1];
    if (prev !== undefined && prev.start + prev.size === cur.start) {
      prev.size += cur.size;
      this.#free.splice(i, 1);
    }
    // A free block that reaches the top gives its space back to the top.
    const last = this.#free[this.#free.length - 1];
    if (last !== undefined && last.start + last.size === this.#top) {
      this.#top = last.start;
      this.#free.pop();
    }
  }

  /**
   * Whether `bytes` more (in blocks of any size, each rounded up to 16) can fit beside what is
   * live: a necessary condition, checked before a set of allocations so that one that cannot
   * fit is refused before any of it is made. (An allocation may still fail on a fragmented
   * heap; callers free what they made then.)
   */
  fits(bytes: number): boolean {
    return Number.isFinite(bytes) && this.allocatedBytes + bytes <= MAX_BYTES - this.#base;
  }

  /** Bytes handed out by `alloc` and not yet freed (each block rounded up to 16 bytes). */
  get allocatedBytes(): number {
    return this.#free.reduce((live, b) => live - b.size, this.#top - this.#base);
  }

  /** Bytes free at the top of the heap, which an allocation can take without growing memory. */
  get headroom(): number {
    return this.memory.buffer.byteLength - this.#top;
  }

  /** Bytes of linear memory the instance has now (it never shrinks). */
  get memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  #ensure(end: number, requested: number): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    const tooLarge = () =>
      new RangeError(
        `wasm-batchnorm: cannot allocate ${requested} bytes: wasm32 memory holds at most 4 GiB ` +
          `and ${this.#top} bytes are in use`,
      );
    if (end > MAX_BYTES) throw tooLarge();
    // Grow at least by half of what there is, so that a sequence of growing tensors costs
    // logarithmically many grows.
    const pages = Math.max(Math.ceil((end - have) / PAGE), Math.ceil(have / PAGE / 2));
    const maxPages = Math.ceil((MAX_BYTES - have) / PAGE);
    try {
      this.memory.grow(Math.min(pages, maxPages));
    } catch {
      try {
        this.memory.grow(Math.ceil((end - have) / PAGE));
      } catch {
        throw tooLarge();
      }
    }
  }
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** `length` floats in a heap, viewed through a Float32Array re-made whenever memory grew. */
export class WasmF32Buffer implements F32Buffer {
  readonly heap: Heap;
  readonly length: number;
  #ptr: number;
  #view: Float32Array | undefined;
  /** For a sub-range: the buffer it lies in and its float offset there (it owns no memory). */
  #within: { base: WasmF32Buffer; offset: number } | undefined;

  /** `length` floats of `base` from `offset` on, owning nothing (see `Backend.subrange`). */
  static within(base: WasmF32Buffer, offset: number, length: number): WasmF32Buffer {
    if (!(offset >= 0 && length >= 0 && offset + length <= base.length)) {
      throw new RangeError(
        `wasm-batchnorm: floats [${offset}, ${offset + length}) are not within a buffer of ${base.length}`,
      );
    }
    return new WasmF32Buffer(base.heap, length, { base, offset });
  }

  constructor(heap: Heap, length: number, within?: { base: WasmF32Buffer; offset: number }) {
    if (!Number.isSafeInteger(length) || length < 0 || length * 4 > MAX_BYTES) {
      throw new RangeError(
        `wasm-batchnorm: cannot allocate ${length} floats: wasm32 memory holds at most 2^30`,
      );
    }
    this.heap = heap;
    this.length = length;
    this.#within = within;
    this.#ptr = within === undefined ? heap.alloc(length * 4) : 0;
  }

  /** The byte address, for passing to an export. */
  get ptr(): number {
    // A sub-range's address follows its base's, so a freed base is caught there.
    if (this.#within !== undefined) return this.#within.base.ptr + 4 * this.#within.offset;
    if (this.#ptr < 0) throw new Error("wasm-batchnorm: buffer used after free()");
    return this.#ptr;
  }

  view(): Float32Array {
    // Growth detaches a plain memory's old buffer, and a detached view's length reads 0; a
    // shared memory's old views stay valid. So the length tells, without `memory.buffer`,
    // whose getter took 10–15% of a small training call. (A buffer of 0 floats would keep
    // a detached view; none is made: shapes and channel counts are positive.)
    if (this.#view === undefined || this.#view.length !== this.length) {
      this.#view = new Float32Array(this.heap.memory.buffer, this.ptr, this.length);
    }
    return this.#view;
  }

  free(): void {
    if (this.#within !== undefined || this.#ptr < 0) return;
    this.heap.free(this.#ptr, this.length * 4);
    this.#ptr = -1;
    this.#view = undefined;
  }
}
