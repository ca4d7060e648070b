/**
 * The zero-copy path (docs/design.md, Zero-copy tensors): tensors made by `bn.tensor(shape)` live
 * in the back end's memory (wasm linear memory for "simd" and "scalar"), are filled and read
 * through `.data` views, and go through training forward, backward and inference without any copy
 * on the JS side. On the same back end they must give exactly the bits of the copy-in/copy-out API
 * (the same kernels run on the same values), and they must match the float64 reference of
 * test/reference.ts within a stated tolerance.
 */
import { beforeAll, describe, expect, it, vi } from "vitest";
import { BatchNorm, type BatchNormOptions, memoryBytes, Tensor } from "../ts/index.node.js";
import { checkBackward, checkForward, checkRunning } from "./compare.js";
import { Rng } from "./random.js";
import { RefBatchNorm } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits, expectSameState, heapOf, live } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

const originalSet = Float32Array.prototype.set;
const originalSlice = Float32Array.prototype.slice;

/**
 * Tolerance against the float64 reference, in units of test/compare.ts's error scales.
 * float32 has a unit roundoff of 2^-24 ≈ 6e-8; every output is a handful of float32 operations
 * on the input plus per-channel sums of at most a few hundred terms (the kernels use blocked,
 * shifted sums, so their error grows far slower than n·2^-24). 2^-16 ≈ 1.5e-5 (256 roundoffs)
 * leaves a margin of ~90 over the worst ratio measured here (1.7e-7), while still being
 * hundreds of times smaller than the differences a wrong convention makes (biased vs unbiased
 * variance: a factor n/(n − 1), ≥ 1/300 here; eps 1e-5 vs 1e-3 on a unit variance: 5e-4).
 */
const TOL = 2 ** -16;

/**
 * The module's running statistics and batch count equal the reference's (see checkRunning). The
 * running mean's scale takes the spread as at most 1, as this suite always did (|mean| + 1).
 */
function checkState(bn: BatchNorm, ref: RefBatchNorm): void {
  expect(bn.numBatchesTracked).toBe(ref.numBatchesTracked);
  checkRunning("state", bn, ref, TOL, new Float64Array(ref.C).fill(1));
}

/** Shapes with channel counts and inner sizes that are and are not multiples of 4 and 16. */
const CASES: { shape: number[]; options: BatchNormOptions }[] = [
  { shape: [6, 3], options: {} },
  { shape: [5, 3], options: { layout: "NHWC" } },
  { shape: [2, 5, 3, 3], options: {} },
  { shape: [2, 3, 3, 5], options: { layout: "NHWC", momentum: null } },
  { shape: [3, 17, 7], options: { eps: 1e-3 } },
  { shape: [2, 4, 4, 17], options: { layout: "NHWC", affine: false } },
  { shape: [4, 16, 2, 2], options: { trackRunningStats: false } },
  { shape: [2, 3, 2, 2, 3], options: { momentum: 0.3 } },
  { shape: [64, 16], options: { layout: "NHWC" } },
  { shape: [1, 4, 5, 5], options: { affine: false, trackRunningStats: false } },
];

const channelsOf = (shape: number[], options: BatchNormOptions) =>
  shape[options.layout === "NHWC" ? shape.length - 1 : 1] as number;

describe.each(BACKENDS)("zero-copy tensors on the %s back end", (backend) => {
  it("live in the back end's memory and are read and written in place", () => {
    const bn = new BatchNorm(3, { backend });
    const t = bn.tensor([2, 3, 4]);
    expect(t).toBeInstanceOf(Tensor);
    expect(t.shape).toEqual([2, 3, 4]);
    expect(t.length).toBe(24);
    expect(Object.isFrozen(t.shape)).toBe(true);
    const view = t.data;
    expect(view).toBeInstanceOf(Float32Array);
    expect(view.length).toBe(24);
    expect([...view].every((v) => v === 0)).toBe(true); // zero-filled
    const heap = heapOf(backend);
    if (heap !== undefined) {
      // The view is of the instance's linear memory itself, not of a JS-side copy.
      expect(view.buffer).toBe(heap.memory.buffer);
    }
    // Without growth in between, .data is the same view: writes through one are seen by all.
    expect(t.data).toBe(view);
    view[5] = 42;
    expect(t.data[5]).toBe(42);
    // Two tensors never overlap.
    const u = bn.tensor([2, 3, 4]);
    u.data.fill(7);
    expect(t.data[5]).toBe(42);
    expect([...t.data].filter((v) => v === 7)).toEqual([]);
    t.dispose();
    u.dispose();
    bn.dispose();
  });

  it.each(CASES)(
    "equal the copy API bit for bit and the float64 reference: $shape $options",
    ({ shape, options }) => {
      const C = channelsOf(shape, options);
      const rng = new Rng(shape.reduce((a, d) => a * 31 + d, C));
      const n = shape.reduce((a, d) => a * d, 1);
      const viaCopy = new BatchNorm(C, { ...options, backend });
      const viaTensor = new BatchNorm(C, { ...options, backend });
      const ref = new RefBatchNorm(C, options);

      // Different, non-trivial parameters, the same in all three.
      if (viaCopy.weight !== null) {
        const sd = viaCopy.stateDict();
        for (let c = 0; c < C; c++) {
          (sd.weight as Float32Array)[c] = 0.5 + rng.uniform();
          (sd.bias as Float32Array)[c] = rng.normal();
        }
        viaCopy.loadStateDict(sd);
        viaTensor.loadStateDict(sd);
        (ref.weight as Float64Array).set(sd.weight as Float32Array);
        (ref.bias as Float64Array).set(sd.bias as Float32Array);
      }

      const xs = [0, 1, 2].map(() => rng.normals(n).map((v, i) => 3 * v + (i % 5)));
      const dys = [0, 1, 2].map(() => rng.normals(n));
      const x = viaTensor.tensor(shape);
      const dy = viaTensor.tensor(shape);

      // 1. Training forward into a new output tensor.
      x.data.set(xs[0] as Float32Array);
      const yCopy = viaCopy.forward(xs[0] as Float32Array, shape);
      const y = viaTensor.forward(x);
      expect(y).toBeInstanceOf(Tensor);
      expect(y.shape).toEqual(shape);
      expectSameBits("training y", y.data, yCopy);
      expectSameState(viaTensor, viaCopy);
      checkForward("training y", y.data, xs[0] as Float32Array, shape, ref, TOL);
      checkState(viaTensor, ref);

      // 2. Backward into a new gradient tensor.
      dy.data.set(dys[0] as Float32Array);
      const gCopy = viaCopy.backward(dys[0] as Float32Array);
      const g = viaTensor.backward(dy);
      expect(g.dx).toBeInstanceOf(Tensor);
      expectSameBits("training dx", g.dx.data, gCopy.dx);
      if (options.affine !== false) {
        expectSameBits("dWeight", g.dWeight as Float32Array, gCopy.dWeight as Float32Array);
        expectSameBits("dBias", g.dBias as Float32Array, gCopy.dBias as Float32Array);
      }
      checkBackward(
        "training",
        { ...g, dx: g.dx.data },
        dys[0] as Float32Array,
        xs[0] as Float32Array,
        shape,
        ref,
        TOL,
      );

      // 3. Training forward again, the input refilled element by element, the output reused:
      //    no allocation at all.
      const data = x.data;
      const x1 = xs[1] as Float32Array;
      for (let i = 0; i < n; i++) data[i] = x1[i] as number;
      let before = live(backend);
      const y2 = viaTensor.forward(x, { out: y });
      expect(live(backend)).toBe(before);
      expect(y2).toBe(y);
      expectSameBits("second training y", y.data, viaCopy.forward(x1, shape));
      checkForward("second training y", y.data, x1, shape, ref, TOL);
      expectSameState(viaTensor, viaCopy);
      checkState(viaTensor, ref);

      // 4. Backward in place: dx overwrites dy.
      dy.data.set(dys[1] as Float32Array);
      before = live(backend);
      const g2 = viaTensor.backward(dy, { out: dy });
      expect(live(backend)).toBe(before);
      expect(g2.dx).toBe(dy);
      const g2Copy = viaCopy.backward(dys[1] as Float32Array);
      expectSameBits("in-place dx", dy.data, g2Copy.dx);
      checkBackward(
        "in place",
        { ...g2, dx: dy.data },
        dys[1] as Float32Array,
        x1,
        shape,
        ref,
        TOL,
      );

      // 5. Inference into the reused output, then its backward into the reused gradient tensor.
      viaCopy.eval();
      viaTensor.eval();
      ref.eval();
      const x2 = xs[2] as Float32Array;
      x.data.set(x2);
      before = live(backend);
      viaTensor.forward(x, { out: y });
      expect(live(backend)).toBe(before);
      expectSameBits("inference y", y.data, viaCopy.forward(x2, shape));
      checkForward("inference y", y.data, x2, shape, ref, TOL);
      dy.data.set(dys[2] as Float32Array);
      const g3 = viaTensor.backward(dy, { out: g.dx });
      expect(live(backend)).toBe(before);
      expect(g3.dx).toBe(g.dx);
      expectSameBits("inference dx", g.dx.data, viaCopy.backward(dys[2] as Float32Array).dx);
      checkBackward(
        "inference",
        { ...g3, dx: g.dx.data },
        dys[2] as Float32Array,
        x2,
        shape,
        ref,
        TOL,
      );

      // The state after the whole sequence is identical, and the input was never written.
      expectSameState(viaTensor, viaCopy);
      checkState(viaTensor, ref);
      expectSameBits("x after all", x.data, x2);

      for (const t of [x, y, dy, g.dx]) t.dispose();
      viaCopy.dispose();
      viaTensor.dispose();
    },
  );

  it.each(CASES)(
    "write gradients in place, into dy or into the forward's input: $shape",
    ({ shape, options }) => {
      const C = channelsOf(shape, options);
      const n = shape.reduce((a, d) => a * d, 1);
      const rng = new Rng(n);
      const values = rng.normals(n).map((v, i) => v * 2 + (i % 3));
      const upstream = rng.normals(n);
      const bn = new BatchNorm(C, { ...options, backend });
      const twin = new BatchNorm(C, { ...options, backend });
      for (const training of [true, false]) {
        bn.train(training);
        twin.train(training);
        const x = bn.tensor(shape);
        x.data.set(values);
        const y = bn.forward(x);
        expectSameBits("y", y.data, twin.forward(values, shape));
        const dy = bn.tensor(shape);
        dy.data.set(upstream);
        // dx over the forward's own input: x is read (for the sums) before it is overwritten.
        const g = bn.backward(dy, { out: x });
        expect(g.dx).toBe(x);
        const gTwin = twin.backward(upstream);
        expectSameBits(`dx into x (training ${training})`, x.data, gTwin.dx);
        expectSameBits("dy untouched", dy.data, upstream);
        // dx over dy.
        x.data.set(values);
        bn.forward(x, { out: y });
        twin.forward(values, shape);
        bn.backward(dy, { out: dy });
        expectSameBits(`dx into dy (training ${training})`, dy.data, twin.backward(upstream).dx);
        expectSameState(bn, twin);
        for (const t of [x, y, dy]) t.dispose();
      }
      bn.dispose();
      twin.dispose();
    },
  );

  it("copy nothing on the JS side (the copy API copies the whole tensor twice)", () => {
    const C = 4;
    const shape = [8, C, 16, 16];
    const n = 8 * C * 256;
    const values = new Rng(2).normals(n);
    const bn = new BatchNorm(C, { backend });
    const x = bn.tensor(shape);
    x.data.set(values);
    const y = bn.tensor(shape);
    const dy = bn.tensor(shape);
    dy.data.set(values);
    // Record every float32 copy made through the typed-array API while the library runs.
    const copied: number[] = [];
    const proto = Float32Array.prototype;
    const set = vi.spyOn(proto, "set").mockImplementation(function (
      this: Float32Array,
      source: ArrayLike<number>,
      offset?: number,
    ) {
      copied.push(source.length);
      Reflect.apply(originalSet, this, [source, offset]);
    });
    const slice = vi.spyOn(proto, "slice").mockImplementation(function (
      this: Float32Array,
      ...args: [number?, number?]
    ) {
      copied.push(this.length);
      return Reflect.apply(originalSlice, this, args) as Float32Array<ArrayBuffer>;
    });
    try {
      bn.forward(x, { out: y });
      bn.backward(dy, { out: dy });
      bn.eval();
      bn.forward(x, { out: y });
      bn.backward(y, { out: dy });
      // Only per-channel arrays (C values) were copied: never a tensor.
      expect(copied.length).toBeGreaterThan(0);
      expect(Math.max(...copied)).toBeLessThanOrEqual(C);
      // The same through the copy API: whole tensors in and out.
      copied.length = 0;
      bn.forward(values, shape);
      expect(copied.filter((len) => len === n).length).toBeGreaterThanOrEqual(2);
    } finally {
      set.mockRestore();
      slice.mockRestore();
    }
    for (const t of [x, y, dy]) t.dispose();
    bn.dispose();
  });

  it("share the memory of one back end between modules", () => {
    // Tensors belong to a back end's memory, not to the module that made them.
    const a = new BatchNorm(4, { backend });
    const b = new BatchNorm(4, { backend, momentum: 0.5 });
    const x = a.tensor([3, 4]);
    x.data.set(new Rng(1).normals(12));
    const ya = a.forward(x);
    const yb = b.forward(x);
    // Same batch statistics, same weight and bias: the same output.
    expectSameBits("y of two modules", ya.data, yb.data);
    const gb = b.backward(ya); // any same-shaped tensor of the back end can be dy
    const ga = a.backward(ya);
    expectSameBits("dx of two modules", gb.dx.data, ga.dx.data);
    // A module's tensors outlive it.
    a.dispose();
    expect(ya.data.length).toBe(12);
    b.forward(x, { out: ya });
    expectSameBits("after the maker was disposed", ya.data, yb.data);
    for (const t of [x, ya, yb, ga.dx, gb.dx]) t.dispose();
    b.dispose();
  });

  it("free with dispose(), Symbol.dispose and `using`", () => {
    const bn = new BatchNorm(2, { backend });
    const heap = heapOf(backend);
    const start = live(backend);
    let escaped: Tensor | undefined;
    {
      using x = bn.tensor([4, 2]);
      using y = bn.forward(x);
      escaped = y;
      expect(y.disposed).toBe(false);
      if (heap !== undefined) expect(heap.allocatedBytes).toBeGreaterThan(start);
    }
    expect(escaped.disposed).toBe(true);
    expect(live(backend)).toBe(start);
    const t = bn.tensor([4, 2]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    t.dispose(); // harmless
    expect(() => t.data).toThrow(/Tensor \[4, 2\] used after dispose\(\)/);
    {
      using scoped = new BatchNorm(2, { backend });
      escaped = scoped.tensor([2, 2]);
    }
    // The module was disposed by `using`; its tensor was not.
    expect(escaped.disposed).toBe(false);
    escaped.dispose();
    bn.dispose();
    expect(live(backend)).toBeLessThanOrEqual(start);
    if (heap !== undefined) expect(memoryBytes(backend)).toBe(heap.memory.buffer.byteLength);
  });
});

describe('the "auto" back end', () => {
  it("is the SIMD build's memory on Node 20: tensors pass between auto and simd modules", () => {
    const auto = new BatchNorm(2);
    const simd = new BatchNorm(2, { backend: "simd" });
    expect(auto.backend).toBe("simd");
    const x = auto.tensor([3, 2]);
    x.data.set([1, 2, 3, 5, 8, 13]);
    const y = simd.forward(x);
    const y2 = auto.forward(x, { out: simd.tensor([3, 2]) });
    expectSameBits("y", y2.data, y.data);
    expect(() => new BatchNorm(2, { backend: "scalar" }).forward(x)).toThrow(
      /x belongs to the simd back end's memory, but this module runs on scalar/,
    );
    for (const t of [x, y, y2]) t.dispose();
    auto.dispose();
    simd.dispose();
  });
});
