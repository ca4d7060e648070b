/**
 * Whether a module's inference coefficients, computed at an earlier call, still hold. In
 * inference `center` and `shift` are copies of the running mean and the bias, cheap to make
 * again, but `scale = weight/sqrt(runningVar + eps)` costs a float64 square root and a division
 * per channel, which share one unit of the CPU: 3–4 µs at C = 1000 (Node 20, x86-64), most of
 * an inference call at a small batch. It depends on `eps` (fixed when the module is made) and
 * the bits of `weight` and `runningVar`: public Float32Arrays a caller may write in place at
 * any time, so no flag can tell whether they changed. Each call copies their bits into the
 * back end's memory and compares them there with a snapshot taken when `scale` was computed
 * (`Backend.refresh`, in vectors); comparing bits, not values, is exact for NaN and ±0.
 * Comparing in JavaScript instead cost as much as recomputing (1.2–2 µs an array at C = 1000).
 *
 * @module
 */
import type { Backend, F32Buffer } from "./backend.js";
import type { BufferSet } from "./lifetime.js";
import type { ModuleState } from "./state.js";

/**
 * Arrays of C floats a module's cache takes in `backend`'s memory: the bits of `weight` and
 * `runningVar` now and at the last computation; none where the back end cannot compare.
 */
export function coefficientCacheArrays(backend: Backend): number {
  return backend.refresh === undefined ? 0 : 4;
}

export class CoefficientCache {
  readonly #backend: Backend;
  readonly #state: ModuleState;
  /** `weight` then `runningVar` as they are now, and as they were; null: no cache. */
  readonly #now: F32Buffer | null;
  readonly #then: F32Buffer | null;
  #valid = false;

  /** Allocates in `buffers` what {@link coefficientCacheArrays} counted. */
  constructor(buffers: BufferSet, state: ModuleState, channels: number) {
    this.#backend = buffers.backend;
    this.#state = state;
    const cached = coefficientCacheArrays(buffers.backend) > 0;
    this.#now = cached ? buffers.alloc(2 * channels) : null;
    this.#then = cached ? buffers.alloc(2 * channels) : null;
  }

  /**
   * True when the coefficients computed after the last call that returned false still hold.
   * False (compute them now) at the first call, after {@link invalidate}, when `weight` or
   * `runningVar` changed since, or where the back end cannot compare.
   */
  holds(): boolean {
    const now = this.#now;
    const then = this.#then;
    if (now === null || then === null || this.#backend.refresh === undefined) return false;
    const { weight, runningVar } = this.#state;
    const view = now.view();
    const variance = runningVar as Float32Array;
    // Without a weight its half stays zero, in both.
    if (weight !== null) view.set(weight);
    view.set(variance, variance.length);
    const same = this.#backend.refresh(now, then);
    const held = same && this.#valid;
    this.#valid = true;
    return held;
  }

  /** Something else wrote the buffers that hold the coefficients. */
  invalidate(): void {
    this.#valid = false;
  }
}
