/**
 * Memory: growth of wasm linear memory (which detaches every old view) between and inside
 * calls, ownership (dispose, Symbol.dispose, use after dispose), scratch freed when a call
 * throws, and a leak test of 10,000 create → train → backward → infer → dispose cycles with a
 * stated, asserted bound on the instance's memory.
 *
 * Memory accounting uses two numbers: `memoryBytes(backend)` (public: the size of the linear
 * memory, which only grows) and the heap's `allocatedBytes` (internal: bytes handed out and
 * not yet freed).
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it, vi } from "vitest";
import type { Backend, BackendKind } from "../ts/backend.js";
import { BatchNorm, type Layout, memoryBytes, type Tensor } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { Heap } from "../ts/wasm/memory.js";
import { Rng } from "./random.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits, live, wasmHeap } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

const WASM = ["simd", "scalar"] as const;

function snapshot(bn: BatchNorm) {
  return { ...bn.stateDict(), training: bn.training, tracked: bn.numBatchesTracked };
}

/**
 * Grows the memory through the library, the way a user would: a tensor larger than the whole
 * current memory cannot fit anywhere, so allocating it must call `memory.grow`. The tensor is
 * freed at once (memory never shrinks). Returns the new size.
 */
function growByAllocating(bn: BatchNorm, kind: BackendKind): number {
  const before = memoryBytes(kind);
  bn.tensor([before / 4 + 1]).dispose();
  const after = memoryBytes(kind);
  expect(after, "the allocation grew the memory").toBeGreaterThan(before);
  return after;
}

/**
 * Fills the heap's free space at the top with one tensor, leaving less than `bytes` there, so
 * that the next allocation of `bytes` or more must grow the memory. (Every earlier tensor of
 * these tests is disposed and fillers are kept until the end of their test, so the heap has
 * no hole below the top large enough to take the filler instead.)
 */
function fillLeaving(bn: BatchNorm, kind: BackendKind, bytes: number): Tensor {
  const room = wasmHeap(kind).headroom;
  const filler = bn.tensor([Math.max(1, Math.floor((room - bytes) / 4) + 16)]);
  expect(wasmHeap(kind).headroom).toBeLessThan(bytes);
  return filler;
}

describe.each(WASM)("wasm memory of the %s back end", (kind) => {
  // First in this file, so that it starts from the instance's initial memory.
  it("stays bounded over 10,000 create → forward → backward → eval → dispose cycles", () => {
    const heap = wasmHeap(kind);
    const initial = memoryBytes(kind);
    const baseline = heap.allocatedBytes;
    // Varied shapes, layouts and options: channel counts and inner sizes on and off multiples of
    // the vector width, so blocks of many sizes are carved from and returned to the heap.
    const cases: { shape: number[]; layout: Layout; affine: boolean; track: boolean }[] = [
      { shape: [4, 3], layout: "NCHW", affine: true, track: true },
      { shape: [2, 5, 3, 3], layout: "NCHW", affine: true, track: true },
      { shape: [3, 2, 2, 7], layout: "NHWC", affine: false, track: true },
      { shape: [8, 16], layout: "NHWC", affine: true, track: false },
      { shape: [2, 1, 9], layout: "NCHW", affine: true, track: true },
      { shape: [5, 6, 4], layout: "NCHW", affine: false, track: false },
      { shape: [2, 4, 4, 17], layout: "NHWC", affine: true, track: true },
      { shape: [3, 33, 5], layout: "NCHW", affine: true, track: true },
    ];
    const inputs = cases.map(({ shape }) =>
      new Rng(shape.length).normals(shape.reduce((a, d) => a * d, 1)),
    );
    const cycle = (i: number) => {
      const k = i % cases.length;
      const { shape, layout, affine, track } = cases[k] as (typeof cases)[number];
      const input = inputs[k] as Float32Array;
      const C = shape[layout === "NCHW" ? 1 : shape.length - 1] as number;
      const bn = new BatchNorm(C, { backend: kind, layout, affine, trackRunningStats: track });
      const x = bn.tensor(shape);
      x.data.set(input);
      const y = bn.forward(x);
      const dy = bn.tensor(shape);
      dy.data.set(input);
      const { dx } = bn.backward(dy);
      bn.eval();
      bn.forward(x, { out: y });
      bn.backward(dy, { out: dx });
      if (i % 3 === 0) {
        // The copy API's module-owned buffers are freed by dispose() too.
        bn.train();
        bn.backward(bn.forward(input, shape));
      }
      for (const t of [x, y, dy, dx]) t.dispose();
      bn.dispose();
    };
    // Warm-up: one pass over every case.
    for (let i = 0; i < cases.length; i++) cycle(i);
    expect(heap.allocatedBytes).toBe(baseline);
    const warm = memoryBytes(kind);
    for (let i = 0; i < 10_000; i++) cycle(i);
    // Nothing leaked: every byte handed out came back…
    expect(heap.allocatedBytes).toBe(baseline);
    // …so the memory did not grow after the warm-up pass, and it stays under the stated bound:
    // the instance's initial memory (17 pages = 1,114,112 bytes here: 1 MiB of Rust stack and
    // data, and the first page of heap) plus one growth step (the heap grows by at least half
    // of the memory at a time), i.e. 1.5 × the initial size, rounded up to whole 64 KiB pages.
    const bound = Math.ceil((initial * 1.5) / 65536) * 65536;
    expect(memoryBytes(kind)).toBe(warm);
    expect(memoryBytes(kind)).toBeLessThanOrEqual(bound);
    expect(heap.memory.buffer.byteLength).toBeLessThanOrEqual(bound);
  });

  it("keeps .data valid when memory grows between making a tensor and reading it", () => {
    const bn = new BatchNorm(3, { backend: kind });
    const values = new Rng(7).normals(24);
    const x = bn.tensor([2, 3, 4]);
    x.data.set(values);
    const oldView = x.data;
    const address = oldView.byteOffset;
    const heap = wasmHeap(kind);

    // Growth through an allocation of the library.
    growByAllocating(bn, kind);
    // Growth detached the old view (that is why .data must be read again, not kept)…
    expect(oldView.length).toBe(0);
    // …and .data re-makes it over the new buffer, at the same address, with the same values.
    expect(x.data.buffer).toBe(heap.memory.buffer);
    expect(x.data.byteOffset).toBe(address);
    expectSameBits("x after growth", x.data, values);

    // Growth by anyone else holding the memory (memory.grow directly) is handled the same way.
    const view2 = x.data;
    heap.memory.grow(1);
    expect(view2.length).toBe(0);
    expectSameBits("x after memory.grow", x.data, values);

    // And the tensor computes what its values say.
    const twin = new BatchNorm(3, { backend: kind });
    const y = bn.forward(x);
    expectSameBits("y", y.data, twin.forward(values, [2, 3, 4]));
    for (const t of [x, y]) t.dispose();
    bn.dispose();
    twin.dispose();
  });

  it("keeps every reachable view valid when memory grows between forward, backward and inference", () => {
    const C = 5;
    const shape = [3, C, 2, 3];
    const rng = new Rng(11);
    const values = rng.normals(90);
    const upstream = rng.normals(90);
    const bn = new BatchNorm(C, { backend: kind });
    const twin = new BatchNorm(C, { backend: kind }); // same calls, no growth in between
    const heap = wasmHeap(kind);

    const x = bn.tensor(shape);
    x.data.set(values);
    const y = bn.forward(x);
    const yTwin = twin.forward(values, shape);
    const views = [x.data, y.data];

    growByAllocating(bn, kind);
    heap.memory.grow(1);
    for (const v of views) expect(v.length).toBe(0); // detached…
    // …but everything the user reaches through the API is valid and unchanged.
    expectSameBits("x", x.data, values);
    expectSameBits("y", y.data, yTwin);
    expectSameBits("runningMean", bn.runningMean as Float32Array, twin.runningMean as Float32Array);
    expectSameBits("runningVar", bn.runningVar as Float32Array, twin.runningVar as Float32Array);
    expectSameBits("weight", bn.weight as Float32Array, twin.weight as Float32Array);

    // Backward after growth: the saved input is found again in the grown memory.
    const dy = bn.tensor(shape);
    dy.data.set(upstream);
    const g = bn.backward(dy);
    const gTwin = twin.backward(upstream);
    expectSameBits("dx", g.dx.data, gTwin.dx);
    expectSameBits("dWeight", g.dWeight as Float32Array, gTwin.dWeight as Float32Array);
    expectSameBits("dBias", g.dBias as Float32Array, gTwin.dBias as Float32Array);

    // Growth between backward and inference.
    const dxView = g.dx.data;
    growByAllocating(bn, kind);
    expect(dxView.length).toBe(0);
    expectSameBits("dx after growth", g.dx.data, gTwin.dx);
    bn.eval();
    twin.eval();
    bn.forward(x, { out: y });
    expectSameBits("inference y", y.data, twin.forward(values, shape));
    expectSameBits("state", bn.runningVar as Float32Array, twin.runningVar as Float32Array);
    for (const t of [x, y, dy, g.dx]) t.dispose();
    bn.dispose();
    twin.dispose();
  });

  it("stays correct when the call itself grows the memory", () => {
    const bn = new BatchNorm(1, { backend: kind });
    const twin = new BatchNorm(1, { backend: kind });
    const shape = [2, 1, 5000];
    const values = new Float32Array(10_000).map((_, i) => Math.sin(i) * 3 + (i % 7));
    const dyValues = values.map((v) => Math.cos(v));
    const expected = twin.forward(values, shape);
    const expectedDx = twin.backward(dyValues).dx;
    const x = bn.tensor(shape);
    x.data.set(values);

    // The output of forward() cannot fit in what is left: forward() grows the memory between
    // allocating its output and running the kernels.
    const filler = fillLeaving(bn, kind, 20_000);
    let before = memoryBytes(kind);
    const y = bn.forward(x);
    expect(memoryBytes(kind), "forward grew the memory").toBeGreaterThan(before);
    expectSameBits("x", x.data, values);
    expectSameBits("y", y.data, expected);
    const dy = bn.tensor(shape);
    dy.data.set(dyValues);
    const filler2 = fillLeaving(bn, kind, 20_000);
    before = memoryBytes(kind);
    const { dx } = bn.backward(dy);
    expect(memoryBytes(kind), "backward grew the memory").toBeGreaterThan(before);
    expectSameBits("dx", dx.data, expectedDx);
    for (const t of [x, y, dy, dx, filler, filler2]) t.dispose();
    bn.dispose();
    twin.dispose();
  });

  it("fails cleanly when memory.grow fails (memory exhausted), and works once it can grow", () => {
    const heap = wasmHeap(kind);
    const shape = [2, 1, 5000];
    const values = new Float32Array(10_000).map((_, i) => Math.cos(i) + (i % 5));
    const bn = new BatchNorm(1, { backend: kind });
    const twin = new BatchNorm(1, { backend: kind });
    // A history with a forward waiting for its backward, through the copy API.
    bn.forward(values, shape);
    twin.forward(values, shape);
    const big = [4, 1, 5000]; // 80,000 bytes
    const x = bn.tensor(big);
    x.data.set(new Float32Array(20_000).map((_, i) => Math.sin(i)));
    const input = x.data.slice();
    // Room for one 80,000-byte buffer at the top, not for two.
    const filler = fillLeaving(bn, kind, 100_000);
    const state = snapshot(bn);
    const memory = memoryBytes(kind);
    let start = live(kind);
    const grow = vi.spyOn(heap.memory, "grow").mockImplementation(() => {
      throw new RangeError("WebAssembly.Memory.grow(): Maximum memory size exceeded");
    });
    const fillers: Tensor[] = [filler];
    try {
      // The copy API needs two bigger buffers for this shape: the first fits, the second
      // cannot be had; the first is given back and the old ones (holding the pending
      // forward's input) are kept.
      expect(() => bn.forward(input, big)).toThrow(
        /cannot allocate 80000 bytes: wasm32 memory holds at most 4 GiB/,
      );
      expect(live(kind)).toBe(start);
      // Now not even one: the output of a tensor forward cannot be allocated.
      fillers.push(bn.tensor([15_000]));
      start = live(kind);
      expect(() => bn.forward(x)).toThrow(/cannot allocate 80000 bytes/);
      expect(() => bn.tensor([20_000])).toThrow(RangeError);
      expect(grow).toHaveBeenCalled();
    } finally {
      grow.mockRestore();
    }
    expect(snapshot(bn)).toEqual(state);
    expect(memoryBytes(kind)).toBe(memory);
    expect(live(kind)).toBe(start);
    // The pending forward survived: its backward is the twin's.
    const dy = values.map((v) => v * v - 1);
    expectSameBits("dx after the failures", bn.backward(dy).dx, twin.backward(dy).dx);
    // With memory to grow into, the same calls work.
    const y = bn.forward(x);
    expectSameBits("y", y.data, twin.forward(input, big));
    expectSameBits("copy API", bn.forward(input, big), twin.forward(input, big));
    for (const t of [x, y, ...fillers]) t.dispose();
    bn.dispose();
    twin.dispose();
  });

  it("falls back to the smallest growth when a generous one is refused", () => {
    const heap = wasmHeap(kind);
    const bn = new BatchNorm(1, { backend: kind });
    const filler = fillLeaving(bn, kind, 1024);
    const memory = memoryBytes(kind);
    const original = heap.memory.grow.bind(heap.memory);
    const asked: number[] = [];
    // A runtime that has only 2 pages left: the heap's usual growth (half the memory) fails.
    const grow = vi.spyOn(heap.memory, "grow").mockImplementation((pages: number) => {
      asked.push(pages);
      if (pages > 2)
        throw new RangeError("WebAssembly.Memory.grow(): Maximum memory size exceeded");
      return original(pages);
    });
    let t: Tensor | undefined;
    try {
      t = bn.tensor([4096]); // 16 KiB: needs one more page
    } finally {
      grow.mockRestore();
    }
    expect(asked.length).toBe(2);
    expect(asked[0]).toBeGreaterThan(2);
    expect(asked[1]).toBe(1);
    expect(memoryBytes(kind)).toBe(memory + 65536);
    t.data.fill(1);
    expect(t.data[4095]).toBe(1);
    for (const u of [t, filler]) u.dispose();
    bn.dispose();
  });

  it("copies a tensor's .data passed to the copy API even when the copy grows the memory", () => {
    // The copy API allocates its buffers before reading x: when x is a view of the same
    // memory and that allocation grows it, the view is detached; the wrapper re-views it.
    const bn = new BatchNorm(1, { backend: kind });
    const twin = new BatchNorm(1, { backend: kind });
    const shape = [2, 1, 5000];
    const values = new Float32Array(10_000).map((_, i) => Math.sin(i) + (i % 3));
    const t = bn.tensor(shape);
    t.data.set(values);
    const filler = fillLeaving(bn, kind, 20_000);
    let before = memoryBytes(kind);
    const y = bn.forward(t.data, shape);
    expect(memoryBytes(kind), "the copy buffers grew the memory").toBeGreaterThan(before);
    expectSameBits("y", y, twin.forward(values, shape));
    // Same for dy in backward, after a tensor forward (so the copy buffer for dy is new).
    const dyValues = values.map((v) => v * 0.5 - 1);
    const fresh = new BatchNorm(1, { backend: kind });
    fresh.forward(t).dispose();
    const d = bn.tensor(shape);
    d.data.set(dyValues);
    const filler2 = fillLeaving(bn, kind, 20_000);
    before = memoryBytes(kind);
    const g = fresh.backward(d.data);
    expect(memoryBytes(kind), "the copy buffer of dy grew the memory").toBeGreaterThan(before);
    expectSameBits("dx", g.dx, twin.backward(dyValues).dx);
    for (const u of [t, d, filler, filler2]) u.dispose();
    for (const m of [bn, twin, fresh]) m.dispose();
  });
});

describe("memoryBytes()", () => {
  it("reports each back end's linear memory", () => {
    for (const kind of WASM)
      expect(memoryBytes(kind)).toBe(wasmHeap(kind).memory.buffer.byteLength);
    expect(memoryBytes()).toBe(memoryBytes("simd")); // "auto" is SIMD on Node 20
    expect(memoryBytes("auto")).toBe(memoryBytes("simd"));
    expect(memoryBytes("js")).toBe(0); // no linear memory
    expect(() => memoryBytes("gpu" as never)).toThrow(
      /memoryBytes: backend must be "auto", "simd", "scalar" or "js", got "gpu"/,
    );
  });
});

describe.each(BACKENDS)("ownership on the %s back end", (kind) => {
  it("frees on dispose(); a second dispose is harmless; use after dispose throws", () => {
    const start = live(kind);
    const bn = new BatchNorm(2, { backend: kind });
    const x = bn.tensor([3, 2]);
    x.data.set([1, 2, 3, 4, 5, 6]);
    const y = bn.forward(x);
    const withTensors = live(kind);
    x.dispose();
    x.dispose();
    x[Symbol.dispose]();
    expect(x.disposed).toBe(true);
    if (kind !== "js") expect(live(kind)).toBeLessThan(withTensors);
    for (const use of [() => x.data, () => x.length]) {
      expect(use).toThrow(/Tensor \[3, 2\] used after dispose\(\)/);
    }
    expect(() => bn.forward(x)).toThrow(/BatchNorm\.forward: x \(Tensor \[3, 2\]\) was disposed/);
    expect(() => bn.forward(y, { out: x })).toThrow(
      /options\.out \(Tensor \[3, 2\]\) was disposed/,
    );
    // The last forward's input is gone: nothing to differentiate.
    expect(() => bn.backward(y)).toThrow(/input tensor of the last forward\(\) was disposed/);
    y.dispose();
    bn.dispose();
    bn.dispose();
    expect(live(kind)).toBe(start);
    for (const [name, use] of [
      ["forward", () => bn.forward(new Float32Array(4), [2, 2])],
      ["backward", () => bn.backward(new Float32Array(4))],
      ["tensor", () => bn.tensor([2, 2])],
      ["train", () => bn.train()],
      ["stateDict", () => bn.stateDict()],
      ["loadStateDict", () => bn.loadStateDict({})],
    ] as const) {
      expect(use, name).toThrow(new RegExp(`BatchNorm\\.${name}: the module was disposed`));
    }
  });

  it("gives `using` the same ownership", () => {
    const start = live(kind);
    let kept: Tensor | undefined;
    {
      using bn = new BatchNorm(2, { backend: kind });
      using x = bn.tensor([2, 2]);
      x.data.set([1, 2, 3, 5]);
      kept = bn.forward(x); // returned tensors belong to the caller, not to the block
    }
    expect(kept.disposed).toBe(false);
    const twin = new BatchNorm(2, { backend: kind });
    expectSameBits("y", kept.data, twin.forward(new Float32Array([1, 2, 3, 5]), [2, 2]));
    twin.dispose();
    kept.dispose();
    expect(live(kind)).toBe(start);
  });

  it("reuses freed memory: repeated allocate/dispose does not move", () => {
    const bn = new BatchNorm(4, { backend: kind });
    if (kind === "js") {
      bn.dispose();
      return; // the JS back end's tensors are garbage-collected Float32Arrays
    }
    const first = bn.tensor([8, 4]);
    const offset = first.data.byteOffset;
    first.dispose();
    for (let i = 0; i < 100; i++) {
      const t = bn.tensor([8, 4]);
      expect(t.data.byteOffset).toBe(offset);
      expect(
        [...t.data].every((v) => v === 0),
        "reused memory is cleared",
      ).toBe(true);
      t.data.fill(i + 1);
      t.dispose();
    }
    bn.dispose();
  });

  it.each(["moments", "scaleShift"] as const)(
    "frees a call's output and keeps the state when %s throws in forward",
    (pass) => {
      const bn = new BatchNorm(3, { backend: kind });
      const x = bn.tensor([4, 3]);
      x.data.set(new Rng(3).normals(12));
      bn.backward(bn.forward(x)).dx.dispose(); // some history
      const y0 = bn.forward(x); // a forward waiting for its backward
      const state = snapshot(bn);
      const start = live(kind);
      const impl = resolveBackend(kind) as Backend;
      const spy = vi.spyOn(impl, pass).mockImplementation(() => {
        throw new Error(`injected failure in ${pass}`);
      });
      try {
        expect(() => bn.forward(x)).toThrow(`injected failure in ${pass}`);
      } finally {
        spy.mockRestore();
      }
      expect(live(kind)).toBe(start); // the output tensor made for that call was freed
      expect(snapshot(bn)).toEqual(state);
      // The instance and the module still work, and the pending forward can still be differentiated.
      const twin = new BatchNorm(3, { backend: kind });
      twin.loadStateDict(bn.stateDict());
      const dy = bn.tensor([4, 3]);
      dy.data.fill(0.5);
      expect(() => bn.backward(dy).dx.dispose()).not.toThrow();
      const y1 = bn.forward(x);
      const ref = twin.forward(x.data.slice(), [4, 3]);
      expectSameBits("y after the failure", y1.data, ref);
      for (const t of [x, y0, y1, dy]) t.dispose();
      bn.dispose();
      twin.dispose();
    },
  );

  it.each(["gradSums", "gradInput"] as const)(
    "frees a call's output and keeps the forward when %s throws in backward",
    (pass) => {
      const bn = new BatchNorm(3, { backend: kind });
      const twin = new BatchNorm(3, { backend: kind });
      const values = new Rng(5).normals(12);
      const x = bn.tensor([4, 3]);
      x.data.set(values);
      const y = bn.forward(x);
      twin.forward(values, [4, 3]);
      const dy = bn.tensor([4, 3]);
      dy.data.set(values.map((v) => v * v));
      const state = snapshot(bn);
      const start = live(kind);
      const spy = vi.spyOn(resolveBackend(kind) as Backend, pass).mockImplementation(() => {
        throw new Error(`injected failure in ${pass}`);
      });
      try {
        expect(() => bn.backward(dy)).toThrow(`injected failure in ${pass}`);
      } finally {
        spy.mockRestore();
      }
      expect(live(kind)).toBe(start);
      expect(snapshot(bn)).toEqual(state);
      // The forward was not consumed: its backward still gives the right gradients.
      const g = bn.backward(dy);
      const gTwin = twin.backward(dy.data.slice());
      expectSameBits("dx", g.dx.data, gTwin.dx);
      expectSameBits("dWeight", g.dWeight as Float32Array, gTwin.dWeight as Float32Array);
      for (const t of [x, y, dy, g.dx]) t.dispose();
      bn.dispose();
      twin.dispose();
    },
  );
});

describe("the heap allocator", () => {
  it("never overlaps, aligns to 16, hands out zeroed memory and coalesces everything back", () => {
    type Op = { t: "alloc"; bytes: number } | { t: "free"; pick: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 3,
        arbitrary: fc.record({
          t: fc.constant("alloc" as const),
          bytes: fc.oneof(
            fc.integer({ min: 1, max: 64 }),
            fc.integer({ min: 1, max: 5000 }),
            fc.integer({ min: 60_000, max: 200_000 }), // beyond a page: grows the memory
          ),
        }),
      },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("free" as const), pick: fc.nat() }) },
    );
    fc.assert(
      fc.property(
        fc.array(op, { maxLength: 60 }),
        fc.integer({ min: 1, max: 5000 }),
        (ops, base) => {
          const memory = new WebAssembly.Memory({ initial: 1 });
          const heap = new Heap(memory, base);
          const start = Math.ceil(base / 16) * 16;
          expect(heap.headroom).toBe(65536 - start);
          const blocks: { ptr: number; bytes: number }[] = [];
          const size = (bytes: number) => Math.ceil(bytes / 16) * 16;
          for (const o of ops) {
            if (o.t === "alloc") {
              const ptr = heap.alloc(o.bytes);
              expect(ptr % 16).toBe(0);
              expect(ptr).toBeGreaterThanOrEqual(start);
              expect(ptr + o.bytes).toBeLessThanOrEqual(memory.buffer.byteLength);
              for (const b of blocks) {
                const disjoint = ptr + size(o.bytes) <= b.ptr || b.ptr + size(b.bytes) <= ptr;
                expect(disjoint, "blocks overlap").toBe(true);
              }
              const bytes = new Uint8Array(memory.buffer, ptr, size(o.bytes));
              expect(
                bytes.every((v) => v === 0),
                "a new block is zeroed",
              ).toBe(true);
              bytes.fill(0xab); // dirty it, so that reuse must clear it
              blocks.push({ ptr, bytes: o.bytes });
            } else if (blocks.length > 0) {
              const [b] = blocks.splice(o.pick % blocks.length, 1);
              heap.free((b as { ptr: number }).ptr, (b as { bytes: number }).bytes);
            }
            expect(heap.allocatedBytes).toBe(blocks.reduce((sum, b) => sum + size(b.bytes), 0));
          }
          for (const b of blocks.splice(0)) heap.free(b.ptr, b.bytes);
          // Everything coalesced back into one free region from the heap base up.
          expect(heap.allocatedBytes).toBe(0);
          expect(heap.headroom).toBe(memory.buffer.byteLength - start);
          expect(heap.alloc(1)).toBe(start);
        },
      ),
      { numRuns: 200, seed: 3 },
    );
  });
});
