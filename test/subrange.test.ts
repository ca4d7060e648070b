/**
 * `Backend.subrange`: a non-owning view of part of a buffer (what ghost batches run on), on
 * every back end: it reads and writes the base's floats, survives wasm memory growth, frees
 * nothing, and refuses a range outside the base.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { resolveBackend } from "../ts/init.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { live } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

describe.each(BACKENDS)("Backend.subrange: %s", (kind) => {
  it("views the base's floats in place, also after memory grows, and owns nothing", () => {
    const be = resolveBackend(kind);
    const base = be.alloc(10);
    base.view().set(Array.from({ length: 10 }, (_, i) => i));
    const before = live(kind);
    const sub = be.subrange(base, 3, 4);
    expect(live(kind)).toBe(before); // no allocation
    expect([...sub.view()]).toEqual([3, 4, 5, 6]);
    sub.view()[0] = 30;
    expect(base.view()[3]).toBe(30);
    // Growth detaches old views; the sub-range re-views the same floats.
    const bytes = be.memoryBytes();
    const big = be.alloc(2 ** 24);
    if (kind !== "js") expect(be.memoryBytes()).toBeGreaterThan(bytes);
    expect([...sub.view()]).toEqual([30, 4, 5, 6]);
    // The kernels take it: the mean of floats 3–6 of the base.
    const ws = be.allocWorkspace(1);
    const mean = be.alloc(1);
    const variance = be.alloc(1);
    be.moments(sub, { outer: 4, channels: 1, inner: 1 }, ws, mean, variance);
    expect(mean.view()[0]).toBe((30 + 4 + 5 + 6) / 4);
    // Freeing it frees nothing of the base.
    const held = live(kind);
    sub.free();
    expect(live(kind)).toBe(held);
    expect([...base.view().subarray(3, 7)]).toEqual([30, 4, 5, 6]);
    for (const b of [big, ws, mean, variance, base]) b.free();
  });

  it("refuses a range outside its base, and its base once freed", () => {
    const be = resolveBackend(kind);
    const base = be.alloc(8);
    expect(() => be.subrange(base, 6, 3)).toThrow(/floats \[6, 9\) are not within a buffer of 8/);
    const sub = be.subrange(base, 2, 2);
    base.free();
    expect(() => sub.view()).toThrow(/used after free/);
  });
});
