/**
 * The functional layer (`batchNorm`, `moments`, `batchNormBackward`) on every back end, both
 * layouts, Float32Array and Tensor input: against the float64 reference (test/reference.ts),
 * bit for bit against the module (they share the passes), and with the module's error
 * behaviour (a named error; the arrays given are untouched). Also the PyTorch aliases
 * BatchNorm1d/2d/3d and resetRunningStats / resetParameters.
 *
 * Tolerance: TOL = 1e-5 relative to the error scales of test/compare.ts, as in the conformance
 * suite (its header derives it: float32 rounding of terms of that size, with room for the
 * scalar build's sums, observed ≤ 1.2e-6).
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  BatchNorm,
  BatchNorm1d,
  BatchNorm2d,
  BatchNorm3d,
  batchNorm,
  batchNormBackward,
  type Layout,
  moments,
} from "../ts/index.node.js";
import { assertClose, errorScales } from "./compare.js";
import { Rng } from "./random.js";
import { backwardBatch, backwardConst, batchStats, channelOf, normalize } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";

const TOL = 1e-5;
const EPS = 1e-5;

beforeAll(async () => {
  await initFromDist();
});

const CASES: { layout: Layout; shape: number[] }[] = [
  { layout: "NCHW", shape: [4, 3, 5, 7] },
  { layout: "NHWC", shape: [3, 5, 6, 5] },
  { layout: "NCHW", shape: [17, 4] },
  { layout: "NCHW", shape: [9, 6, 1] },
  { layout: "NHWC", shape: [2, 3, 2, 1, 17] },
];

function inputs(shape: number[], layout: Layout, seed: number) {
  const rng = new Rng(seed);
  const C = shape[layout === "NCHW" ? 1 : shape.length - 1] as number;
  const n = shape.reduce((p, d) => p * d, 1);
  const x = Float32Array.from({ length: n }, () => 3 + 2 * rng.normal());
  const dy = Float32Array.from({ length: n }, () => rng.normal());
  const weight = Float32Array.from({ length: C }, () => 0.5 + rng.uniform());
  const bias = Float32Array.from({ length: C }, () => rng.normal());
  const runningMean = Float32Array.from({ length: C }, () => 3 + 0.1 * rng.normal());
  const runningVar = Float32Array.from({ length: C }, () => 3 + rng.uniform());
  return { C, x, dy, weight, bias, runningMean, runningVar, chan: channelOf(shape, layout) };
}

describe.each(BACKENDS)("functional ops on the %s back end", (backend) => {
  it.each(CASES)(
    "training batchNorm, moments and backward: $layout $shape",
    ({ layout, shape }) => {
      const v = inputs(shape, layout, 11);
      const ref = batchStats(v.x, v.chan, v.C);
      const m = moments(v.x, shape, { layout, backend });
      expect(m.count).toBe(ref.count);
      assertClose("mean", m.mean, ref.mean, new Float64Array(v.C).fill(10), TOL);
      assertClose("variance", m.variance, ref.variance, ref.variance, TOL);

      const rm = v.runningMean.slice();
      const rv = v.runningVar.slice();
      const options = { layout, backend, training: true, weight: v.weight, bias: v.bias, eps: EPS };
      const y = batchNorm(v.x, shape, {
        ...options,
        runningMean: rm,
        runningVar: rv,
        momentum: 0.25,
      });
      const scales = errorScales(
        v.x,
        v.dy,
        {
          chan: v.chan,
          mean: ref.mean,
          variance: ref.variance,
          eps: EPS,
          weight: v.weight,
          bias: v.bias,
        },
        true,
      );
      const want = normalize(v.x, v.chan, ref.mean, ref.variance, EPS, v.weight, v.bias);
      assertClose("y", y, want, scales.y, TOL);
      // PyTorch's update: momentum weights the batch, whose variance enters unbiased.
      for (let c = 0; c < v.C; c++) {
        const unbiased = ((ref.variance[c] as number) * ref.count) / (ref.count - 1);
        expect(rm[c]).toBeCloseTo(
          0.75 * (v.runningMean[c] as number) + 0.25 * (ref.mean[c] as number),
          5,
        );
        expect(rv[c]).toBeCloseTo(0.75 * (v.runningVar[c] as number) + 0.25 * unbiased, 5);
      }

      const g = batchNormBackward(v.dy, v.x, shape, { ...options });
      const gRef = backwardBatch(v.x, v.dy, v.chan, ref, EPS, v.weight);
      assertClose("dx", g.dx, gRef.dx, scales.dx, TOL);
      assertClose("dWeight", g.dWeight, gRef.dWeight, scales.dWeight, TOL);
      assertClose("dBias", g.dBias, gRef.dBias, scales.dBias, TOL);
    },
  );

  it.each(CASES)("inference batchNorm and backward: $layout $shape", ({ layout, shape }) => {
    const v = inputs(shape, layout, 12);
    const rm = v.runningMean.slice();
    const rv = v.runningVar.slice();
    const options = {
      layout,
      backend,
      weight: v.weight,
      bias: v.bias,
      runningMean: rm,
      runningVar: rv,
    };
    const y = batchNorm(v.x, shape, options);
    const scales = errorScales(
      v.x,
      v.dy,
      { chan: v.chan, mean: rm, variance: rv, eps: EPS, weight: v.weight, bias: v.bias },
      false,
    );
    assertClose("y", y, normalize(v.x, v.chan, rm, rv, EPS, v.weight, v.bias), scales.y, TOL);
    expectSameBits("runningMean untouched", rm, v.runningMean);
    expectSameBits("runningVar untouched", rv, v.runningVar);
    const g = batchNormBackward(v.dy, v.x, shape, { ...options, mean: rm, variance: rv });
    const gRef = backwardConst(v.x, v.dy, v.chan, rm, rv, EPS, v.weight);
    assertClose("dx", g.dx, gRef.dx, scales.dx, TOL);
    assertClose("dWeight", g.dWeight, gRef.dWeight, scales.dWeight, TOL);
    assertClose("dBias", g.dBias, gRef.dBias, scales.dBias, TOL);
  });

  it("gives the module's bits, on Float32Arrays and on Tensors", () => {
    const shape = [6, 5, 3, 4];
    const v = inputs(shape, "NCHW", 13);
    const bn = new BatchNorm(v.C, { backend, momentum: 0.3 });
    bn.loadStateDict({ ...bn.stateDict(), weight: v.weight, bias: v.bias });
    const yModule = bn.forward(v.x, shape);
    const gModule = bn.backward(v.dy);
    const rm = new Float32Array(v.C);
    const rv = new Float32Array(v.C).fill(1);
    const options = { backend, training: true, weight: v.weight, bias: v.bias, momentum: 0.3 };
    expectSameBits(
      "y",
      batchNorm(v.x, shape, { ...options, runningMean: rm, runningVar: rv }),
      yModule,
    );
    expectSameBits("runningMean", rm, bn.runningMean as Float32Array);
    expectSameBits("runningVar", rv, bn.runningVar as Float32Array);
    const g = batchNormBackward(v.dy, v.x, shape, options);
    expectSameBits("dx", g.dx, gModule.dx);
    expectSameBits("dWeight", g.dWeight, gModule.dWeight as Float32Array);
    expectSameBits("dBias", g.dBias, gModule.dBias as Float32Array);

    // The zero-copy path: tensors in, tensors out, the same bits.
    const xt = bn.tensor(shape);
    const dyt = bn.tensor(shape);
    xt.data.set(v.x);
    dyt.data.set(v.dy);
    const yt = batchNorm(xt, undefined, options);
    expectSameBits("y (tensor)", yt.data, yModule);
    const gt = batchNormBackward(dyt, xt, shape, { ...options, out: dyt });
    expect(gt.dx).toBe(dyt);
    expectSameBits("dx (tensor, in place)", gt.dx.data, gModule.dx);
    for (const t of [xt, dyt, yt]) t.dispose();
    bn.dispose();
  });

  it("refuses bad input with a named error and leaves the arrays given untouched", () => {
    const shape = [4, 3, 2];
    const v = inputs(shape, "NCHW", 14);
    const rm = v.runningMean.slice();
    const x = v.x.slice();
    const bad: [() => unknown, RegExp][] = [
      [
        () => batchNorm(x, shape, { backend, runningMean: rm }),
        /options\.runningVar must be a Float32Array \(updated in place\), got undefined/,
      ],
      [
        () => batchNorm(x, [4, 3, 3], { backend, training: true }),
        /x has 24 values but shape \[4, 3, 3\] needs 36/,
      ],
      [
        () => batchNorm(x, shape, { backend, training: true, weight: [1, 2] }),
        /options\.weight must have C = 3 values, got 2/,
      ],
      [
        () => batchNorm(x, shape, { backend, runningMean: rm, runningVar: [1, 1, 1] as never }),
        /options\.runningVar must be a Float32Array \(updated in place\), got Array/,
      ],
      [
        () =>
          batchNorm(x, shape, {
            backend,
            training: true,
            runningMean: rm,
            runningVar: v.runningVar,
            momentum: 2,
          }),
        /options\.momentum must be in \[0, 1\], got 2/,
      ],
      [
        () => batchNorm(x, shape, { backend, training: true, layout: "CHW" as Layout }),
        /options\.layout must be "NCHW" or "NHWC", got "CHW"/,
      ],
      [
        () => batchNorm(x.subarray(0, 3), [1, 3], { backend, training: true }),
        /expected more than 1 value per channel when training/,
      ],
      [
        () => batchNorm([1, 2] as never, [1, 2], { backend, training: true }),
        /x must be a Float32Array or a Tensor, got Array/,
      ],
      [
        () => batchNormBackward(v.dy, x, shape, { backend }),
        /options\.mean and options\.variance are required when training is false/,
      ],
      [
        () => batchNormBackward(v.dy.subarray(1), x, shape, { backend, training: true }),
        /dy has 23 values but x has 24/,
      ],
      [() => moments(x, [4, 3], { backend }), /x has 24 values but shape \[4, 3\] needs 12/],
    ];
    for (const [call, message] of bad) {
      expect(call).toThrow(message);
      expectSameBits("x untouched", x, v.x);
      expectSameBits("runningMean untouched", rm, v.runningMean);
    }
  });
});

describe("BatchNorm1d, BatchNorm2d and BatchNorm3d", () => {
  it("check the input rank as PyTorch does, and are otherwise BatchNorm", () => {
    const cases = [
      {
        Module: BatchNorm1d,
        good: [
          [8, 3],
          [8, 3, 5],
        ],
        bad: [8, 3, 2, 2],
      },
      { Module: BatchNorm2d, good: [[8, 3, 2, 2]], bad: [8, 3, 5] },
      { Module: BatchNorm3d, good: [[8, 3, 2, 2, 2]], bad: [8, 3, 2, 2] },
    ];
    for (const { Module, good, bad } of cases) {
      const bn = new Module(3, { backend: "js" });
      const plain = new BatchNorm(3, { backend: "js" });
      expect(bn).toBeInstanceOf(BatchNorm);
      for (const shape of good) {
        const x = Float32Array.from(
          { length: shape.reduce((p, d) => p * d, 1) },
          (_, i) => (i * 7) % 11,
        );
        expectSameBits(`${Module.name} ${shape}`, bn.forward(x, shape), plain.forward(x, shape));
      }
      const x = new Float32Array(bad.reduce((p, d) => p * d, 1));
      expect(() => bn.forward(x, bad)).toThrow(
        new RegExp(
          `BatchNorm\\.forward: ${Module.name} expects .* input, got shape \\[${bad.join(", ")}\\] \\(rank ${bad.length}\\)`,
        ),
      );
      expect(bn.numBatchesTracked).toBe(good.length);
    }
  });

  it("resetRunningStats and resetParameters restore PyTorch's initial values", () => {
    const bn = new BatchNorm(2, { backend: "js" });
    bn.forward(Float32Array.from([1, 5, 2, 9, 4, 1]), [3, 2]);
    (bn.weight as Float32Array).set([3, 4]);
    (bn.bias as Float32Array).set([1, 2]);
    bn.resetRunningStats();
    expect([...(bn.runningMean as Float32Array)]).toEqual([0, 0]);
    expect([...(bn.runningVar as Float32Array)]).toEqual([1, 1]);
    expect(bn.numBatchesTracked).toBe(0);
    expect([...(bn.weight as Float32Array)]).toEqual([3, 4]);
    bn.resetParameters();
    expect([...(bn.weight as Float32Array)]).toEqual([1, 1]);
    expect([...(bn.bias as Float32Array)]).toEqual([0, 0]);
    bn.dispose();
    expect(() => bn.resetParameters()).toThrow(
      /BatchNorm\.resetParameters: the module was disposed/,
    );
  });
});
