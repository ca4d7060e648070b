/**
 * `BatchNorm.recalibrate` and its functional form `populationStatistics`: Algorithm 2's
 * population statistics, against the float64 reference (test/variants-reference.ts) and
 * against the module's own cumulative average (`momentum: null`) over the same batches; what
 * it leaves alone; refusal midway.
 *
 * ## Tolerance
 * RUN_TOL = 1e-5 of the scale √var + |mean| (means) or var (variances): float32 batch
 * statistics (relative error ~1e-7) averaged in float64, and for the cumulative average B
 * float32 updates (B·2⁻²⁴ ≈ 4e-7 for B = 6). Observed worst: printed by the suite. The negative
 * control (biased variances, without m/(m − 1) = 16/15) misses it by four orders of magnitude.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm, populationStatistics, type Tensor } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { Rng } from "./random.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits, expectSameState } from "./state.js";
import { populationStats } from "./variants-reference.js";

const RUN_TOL = 1e-5;
const C = 5;

beforeAll(async () => {
  await initFromDist();
});

/** `count` batches of [n, C, 3] (NCHW) or [n, 3, C] (NHWC), per-channel offsets and spreads. */
function batches(layout: "NCHW" | "NHWC", sizes: readonly number[], seed: number) {
  const rng = new Rng(seed);
  const offset = Array.from({ length: C }, () => rng.range(-3, 3));
  const spread = Array.from({ length: C }, () => rng.range(0.2, 3));
  return sizes.map((n) => {
    const shape = layout === "NCHW" ? [n, C, 3] : [n, 3, C];
    const x = new Float32Array(n * C * 3);
    for (let i = 0; i < x.length; i++) {
      const c = layout === "NCHW" ? Math.floor(i / 3) % C : i % C;
      x[i] = (offset[c] as number) + (spread[c] as number) * rng.normal();
    }
    return { x, shape };
  });
}

function checkAgainst(
  got: { runningMean: Float32Array | null; runningVar: Float32Array | null },
  want: { mean: ArrayLike<number>; variance: ArrayLike<number> },
) {
  const mScale = Float64Array.from(
    want.mean,
    (m, c) => Math.abs(m) + Math.sqrt(want.variance[c] as number),
  );
  const rm = got.runningMean as Float32Array;
  const rv = got.runningVar as Float32Array;
  return Math.max(
    assertClose("runningMean", rm, want.mean, mScale, RUN_TOL),
    assertClose("runningVar", rv, want.variance, want.variance, RUN_TOL),
  );
}

let worst = 0;

describe.each(BACKENDS)("recalibrate: %s back end", (backend) => {
  const LAYOUTS = ["NCHW", "NHWC"] as const;
  const SIZES = [
    { name: "equal sizes", sizes: [4, 4, 4, 4, 4, 4] },
    { name: "different sizes (each batch counts once)", sizes: [2, 7, 4, 3] },
  ];
  it.each(LAYOUTS.flatMap((l) => SIZES.map((s) => [`${l}, ${s.name}`, l, s.sizes] as const)))(
    "%s: the reference's Algorithm 2 and the module's cumulative average",
    (_name, layout, sizes) => {
      const data = batches(layout, sizes, 11);
      const bn = new BatchNorm(C, { layout, backend, momentum: 0.3 });
      bn.weight?.set([1, 2, 3, 4, 5]);
      // Training first, so there are moving averages to replace.
      bn.forward(data[0]?.x as Float32Array, data[0]?.shape as number[]);
      const weight = bn.weight?.slice();
      bn.eval();
      bn.recalibrate(data);
      expect(bn.numBatchesTracked).toBe(sizes.length);
      expect(bn.training).toBe(false);
      expect(bn.momentum).toBe(0.3);
      expectSameBits("weight", bn.weight, weight ?? null);
      worst = Math.max(worst, checkAgainst(bn, populationStats(data, layout, C)));
      // PyTorch's cumulative average over the same batches: the same statistics.
      const cumulative = new BatchNorm(C, { layout, backend, momentum: null });
      for (const b of data) cumulative.forward(b.x, b.shape);
      const want = {
        mean: Float64Array.from(cumulative.runningMean as Float32Array),
        variance: Float64Array.from(cumulative.runningVar as Float32Array),
      };
      worst = Math.max(worst, checkAgainst(bn, want));
      expect(cumulative.numBatchesTracked).toBe(bn.numBatchesTracked);
      // Negative control: the biased variances (without m/(m − 1)) miss the tolerance.
      const biased = populationStats(data, layout, C);
      const m = (sizes[0] as number) * 3;
      const wrong = { mean: biased.mean, variance: biased.variance.map((v) => (v * (m - 1)) / m) };
      expect(() => checkAgainst(bn, wrong)).toThrow(/runningVar/);
      // The functional form: the module's bits, and the reference's statistics.
      const fn = populationStatistics(data, C, { layout, backend });
      expect(fn.batches).toBe(sizes.length);
      expectSameBits("runningMean", fn.runningMean, bn.runningMean);
      expectSameBits("runningVar", fn.runningVar, bn.runningVar);
      worst = Math.max(worst, checkAgainst(fn, populationStats(data, layout, C)));
      cumulative.dispose();
      bn.dispose();
    },
  );

  it("populationStatistics: async iterables give a Promise of the same result; bad arguments are named", async () => {
    const data = batches("NHWC", [3, 5], 14);
    const options = { layout: "NHWC", backend } as const;
    const sync = populationStatistics(data, C, options);
    async function* stream() {
      yield* data;
    }
    const result = populationStatistics(stream(), C, options);
    expect(result).toBeInstanceOf(Promise);
    const fromStream = await result;
    expectSameBits("runningMean", fromStream.runningMean, sync.runningMean);
    expectSameBits("runningVar", fromStream.runningVar, sync.runningVar);
    expect(fromStream.batches).toBe(2);
    for (const bad of [0, 2.5, "5", Number.NaN]) {
      expect(() => populationStatistics(data, bad as number, options)).toThrow(
        /populationStatistics: channels must be a positive integer/,
      );
    }
    expect(() => populationStatistics(data, C + 1, options)).toThrow(/batches\[0\]\.shape/);
    expect(() => populationStatistics(data, C, "NHWC" as never)).toThrow(
      /options must be an object/,
    );
    expect(() => populationStatistics(data, C, { layout: "CHW" as never })).toThrow(
      /options\.layout/,
    );
    expect(() => populationStatistics([], C, options)).toThrow(/at least one/);
    expect(() => populationStatistics(5 as never, C, options)).toThrow(/iterable/);
    // A tensor of another back end is named, with the back end the call runs on.
    const other = backend === "js" ? "scalar" : "js";
    const owner = new BatchNorm(C, { backend: other });
    const t = owner.tensor([2, C]);
    expect(() => populationStatistics([t], C, { backend })).toThrow(
      new RegExp(
        `batches\\[0\\] belongs to the ${other} back end's memory, but options\\.backend is "${backend}"`,
      ),
    );
    owner.dispose();
  });

  it("takes Tensors, { x: Tensor }, and async iterables (a Promise) with the same result", async () => {
    const data = batches("NCHW", [3, 3, 3], 12);
    const a = new BatchNorm(C, { backend });
    const b = new BatchNorm(C, { backend });
    a.recalibrate(data);
    const tensors: Tensor[] = data.map((d) => {
      const t = b.tensor(d.shape);
      t.data.set(d.x);
      return t;
    });
    async function* stream() {
      yield tensors[0] as Tensor;
      yield { x: tensors[1] as Tensor };
      yield { x: (data[2] as { x: Float32Array }).x, shape: data[2]?.shape as number[] };
    }
    const result = b.recalibrate(stream());
    expect(result).toBeInstanceOf(Promise);
    expect(b.numBatchesTracked).toBe(0); // nothing yet: it commits at the end
    await result;
    expectSameState(a, b);
    for (const t of tensors) t.dispose();
    a.dispose();
    b.dispose();
  });

  it("a batch refused midway changes nothing, and the error names it", async () => {
    const data = batches("NCHW", [3, 3], 13);
    const bn = new BatchNorm(C, { backend });
    const twin = new BatchNorm(C, { backend });
    for (const m of [bn, twin]) m.forward(data[0]?.x as Float32Array, [3, C, 3]);
    const bad = [data[0], data[1], { x: new Float32Array(6), shape: [2, 3] }];
    expect(() => bn.recalibrate(bad as never)).toThrow(/batches\[2\]\.shape.*channel/);
    expectSameState(bn, twin);
    async function* failing() {
      yield data[0] as { x: Float32Array; shape: number[] };
      throw new Error("data source broke");
    }
    await expect(bn.recalibrate(failing())).rejects.toThrow("data source broke");
    expectSameState(bn, twin);
    expect(() => bn.recalibrate([] as never)).toThrow(RangeError);
    expect(() => bn.recalibrate([{ x: new Float32Array(C), shape: [1, C] }])).toThrow(
      /more than 1 value per channel in batches\[0\]/,
    );
    expect(() => bn.recalibrate([[1, 2]] as never)).toThrow(TypeError);
    expect(() => bn.recalibrate(5 as never)).toThrow(/iterable/);
    expectSameState(bn, twin);
    const untracked = new BatchNorm(C, { backend, trackRunningStats: false });
    expect(() => untracked.recalibrate(data)).toThrow(/trackRunningStats: false/);
    for (const m of [bn, twin, untracked]) m.dispose();
  });
});

describe("measured", () => {
  it("worst error / scale is within RUN_TOL", () => {
    console.log(`recalibrate: worst |error|/scale ${worst.toExponential(2)} (RUN_TOL ${RUN_TOL})`);
    expect(worst).toBeLessThanOrEqual(RUN_TOL);
  });
});
