/**
 * The copy API's input and output buffers in a module's back-end memory (and, for a backward
 * whose first pass writes g into dx, a dx apart from dy), kept between calls and re-made only
 * when the tensor size changes, so a training loop of one shape allocates nothing after its
 * first step.
 *
 * @module
 */
import type { F32Buffer } from "./backend.js";
import type { BufferSet } from "./lifetime.js";

export class CopyBuffers {
  readonly #buffers: BufferSet;
  #x: F32Buffer | undefined;
  #y: F32Buffer | undefined;
  #dx: F32Buffer | undefined;

  constructor(buffers: BufferSet) {
    this.#buffers = buffers;
  }

  /** The input buffer (holds the forward's input until the next forward of another size). */
  get x(): F32Buffer | undefined {
    return this.#x;
  }

  /**
   * Both buffers resized to `length` floats. New buffers are allocated before any old one is
   * freed, so a failed allocation (memory full) changes nothing; `replaced` says whether the
   * input buffer changed (what a pending backward saved of it is then gone).
   */
  forward(length: number): { x: F32Buffer; y: F32Buffer; replaced: boolean } {
    const fresh: F32Buffer[] = [];
    try {
      const x = this.#fit(this.#x, length, fresh);
      const y = this.#fit(this.#y, length, fresh);
      const replaced = x !== this.#x;
      this.#x = this.#swap(this.#x, x);
      this.#y = this.#swap(this.#y, y);
      return { x, y, replaced };
    } catch (error) {
      for (const b of fresh) this.#buffers.release(b);
      throw error;
    }
  }

  /**
   * The output buffer alone resized to `length` floats (for backward's dy, and its dx unless
   * {@link gradient} gives one).
   */
  output(length: number): F32Buffer {
    const y = this.#fit(this.#y, length, []);
    this.#y = this.#swap(this.#y, y);
    return y;
  }

  /**
   * A third buffer of `length` floats, for a backward's dx apart from its dy (where the first
   * backward pass writes g there: `Backend.writesGradient`); made on first use.
   */
  gradient(length: number): F32Buffer {
    const dx = this.#fit(this.#dx, length, []);
    this.#dx = this.#swap(this.#dx, dx);
    return dx;
  }

  /** `b` when it has `length` floats, else a new buffer (listed in `fresh`). */
  #fit(b: F32Buffer | undefined, length: number, fresh: F32Buffer[]): F32Buffer {
    if (b?.length === length) return b;
    const made = this.#buffers.alloc(length);
    fresh.push(made);
    return made;
  }

  /** Frees `old` when `next` replaces it. */
  #swap(old: F32Buffer | undefined, next: F32Buffer): F32Buffer {
    if (old !== next) this.#buffers.release(old);
    return next;
  }
}
