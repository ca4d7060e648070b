/**
 * Modules and tensors dropped without dispose() are freed when the garbage collector reclaims
 * them (a FinalizationRegistry), so a forgotten dispose() costs memory for a while, not forever;
 * disposed ones are not freed twice. Needs `--expose-gc` (vitest.config.ts passes it).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits, live } from "./state.js";

const gc = (globalThis as { gc?: () => void }).gc;

beforeAll(async () => {
  await initFromDist();
});

/** Collects garbage until live bytes reach `target` or ten rounds pass; returns live bytes. */
async function collectUntil(kind: (typeof BACKENDS)[number], target: number): Promise<number> {
  for (let round = 0; round < 10 && live(kind) !== target; round++) {
    (gc as () => void)();
    // Finalization callbacks run in a later task, after the collection.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return live(kind);
}

/** Makes a module of 4,096 channels and its tensors, uses them, and drops them all. */
function useAndDrop(kind: (typeof BACKENDS)[number], i: number): void {
  const bn = new BatchNorm(4096, { backend: kind, layout: i % 2 ? "NHWC" : "NCHW" });
  const x = bn.tensor([2, 4096]);
  x.data.fill(i);
  bn.forward(x); // a new output tensor, dropped
  bn.forward(new Float32Array(3 * 4096), [3, 4096]); // the copy API's buffers
}

describe.each(BACKENDS.filter((k) => k !== "js"))("the %s back end", (kind) => {
  it("frees 1,000 dropped modules of 4,096 channels and their tensors", async () => {
    expect(gc, "run with --expose-gc").toBeTypeOf("function");
    const before = await collectUntil(kind, live(kind));
    for (let i = 0; i < 1000; i++) useAndDrop(kind, i);
    expect(live(kind)).toBeGreaterThan(before); // the last ones at least are still live
    expect(await collectUntil(kind, before)).toBe(before);
  });

  it("keeps what is reachable, and does not free a disposed module or tensor twice", async () => {
    const kept = new BatchNorm(64, { backend: kind });
    const keptTensor = kept.tensor([4, 64]);
    const base = live(kind);
    const x = Float32Array.from({ length: 4 * 64 }, (_, i) => Math.sin(i));
    const y = kept.forward(x, [4, 64]);
    const disposed = new BatchNorm(64, { backend: kind });
    disposed.tensor([4, 64]).dispose();
    disposed.dispose();
    const afterUse = live(kind);
    expect(await collectUntil(kind, -1)).toBe(afterUse); // nothing of it was freed
    // A freed-twice block would be handed out twice: a twin module's results would differ.
    const twin = new BatchNorm(64, { backend: kind });
    expectSameBits("y", twin.forward(x, [4, 64]), y);
    keptTensor.data.fill(1);
    expect(keptTensor.data[0]).toBe(1);
    expect(live(kind)).toBeGreaterThan(base);
    for (const o of [kept, keptTensor, twin]) o.dispose();
  });
});
