/**
 * Comparisons of module state and outputs, bit for bit, and the heap accounting the memory
 * tests use: one place for each.
 */
import { expect } from "vitest";
import type { BackendKind } from "../ts/backend.js";
import type { BatchNorm } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { WasmBackend } from "../ts/wasm/backend-wasm.js";
import type { Heap } from "../ts/wasm/memory.js";

/**
 * Bitwise equality of two float32 arrays (NaN with NaN, and 0 ≠ −0), or both null, with a
 * message naming the first difference.
 */
export function expectSameBits(
  what: string,
  got: ArrayLike<number> | null,
  want: ArrayLike<number> | null,
): void {
  if (got === null || want === null) {
    expect(got, what).toBe(want);
    return;
  }
  expect(got.length, `${what}: length`).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) throw new Error(`${what}[${i}]: ${got[i]} ≠ ${want[i]}`);
  }
}

/** The same state dict, batch count and mode, bit for bit. */
export function expectSameState(bn: BatchNorm, twin: BatchNorm): void {
  const a = bn.stateDict();
  const b = twin.stateDict();
  expect(Object.keys(a)).toEqual(Object.keys(b));
  for (const k of ["weight", "bias", "running_mean", "running_var"] as const) {
    expectSameBits(k, a[k] ?? null, b[k] ?? null);
  }
  expect(a.num_batches_tracked).toBe(b.num_batches_tracked);
  expect(bn.numBatchesTracked).toBe(twin.numBatchesTracked);
  expect(bn.training).toBe(twin.training);
}

/** The heap of a wasm back end (undefined for "js"): internal, for allocation accounting. */
export function heapOf(kind: BackendKind): Heap | undefined {
  const b = resolveBackend(kind);
  return b instanceof WasmBackend ? b.heap : undefined;
}

/** The heap of a wasm back end, for tests that only run on those: "js" has none (an error). */
export function wasmHeap(kind: BackendKind): Heap {
  const heap = heapOf(kind);
  if (heap === undefined) throw new Error(`${kind} has no wasm heap`);
  return heap;
}

/** Live bytes of a back end's heap; the JS back end has none to count (0). */
export function live(kind: BackendKind): number {
  return heapOf(kind)?.allocatedBytes ?? 0;
}
