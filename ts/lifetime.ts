/**
 * Back-end memory of objects dropped without `dispose()`. `dispose()` (or `using`) is the way to
 * free a module or tensor, deterministically; this is the safety net: when the garbage collector
 * reclaims an undisposed module or tensor, a `FinalizationRegistry` frees its memory, so a
 * forgotten `dispose()` costs memory for a while, not forever. (A `Float32Array` view of a
 * tensor's `.data` does not keep the tensor alive: keep the tensor while you use its data.)
 *
 * @module
 */
import type { Backend, F32Buffer } from "./backend.js";

/** Something that frees memory, held by the registry until its owner is collected. */
interface Freeable {
  free(): void;
}

const registry =
  typeof FinalizationRegistry === "function"
    ? new FinalizationRegistry<Freeable>((held) => held.free())
    : undefined;

/** Frees `held` when `owner` is garbage-collected, unless {@link keepAlive} cancelled it. */
export function freeWhenCollected(owner: object, held: Freeable): void {
  registry?.register(owner, held, owner);
}

/** Cancels {@link freeWhenCollected} for `owner` (it was disposed: nothing left to free). */
export function keepAlive(owner: object): void {
  registry?.unregister(owner);
}

/**
 * The buffers one owner (a module, a functional call) allocated in one back end, freed
 * together. It must not reference its owner, so that the owner can be collected.
 */
export class BufferSet implements Freeable {
  readonly backend: Backend;
  #buffers = new Set<F32Buffer>();

  constructor(backend: Backend) {
    this.backend = backend;
  }

  alloc(length: number): F32Buffer {
    const b = this.backend.alloc(length);
    this.#buffers.add(b);
    return b;
  }

  /** Frees one buffer of this set. */
  release(b: F32Buffer | undefined): void {
    if (b === undefined || !this.#buffers.delete(b)) return;
    b.free();
  }

  /** Frees every buffer; the set can be used again afterwards. */
  free(): void {
    for (const b of this.#buffers) b.free();
    this.#buffers.clear();
  }
}
