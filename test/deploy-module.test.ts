/**
 * The module's deployment parts on every back end: the `runningVarEstimator` option (module and
 * functional `batchNorm`), `foldedAffine()` and the folds taking a module directly. The
 * conversions to and from Keras and ONNX are in test/deploy-convert.test.ts; the proofs against
 * the real peers in test/deploy-onnx.test.ts and test/deploy-tfjs.test.ts.
 *
 * Tolerance: TOL = 1e-5 relative to the value's error scale, as in test/conformance.test.ts
 * (whose header derives it from float32 rounding of the sums over a batch, observed ≤ 1.2e-6).
 * The estimators are told apart on batches of n = 24 values per channel, where n/(n − 1) moves
 * the running variance by ≥ 0.4 %, far more than TOL (asserted: > 10·TOL).
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  BatchNorm,
  type BatchNormOptions,
  batchNorm,
  foldedAffineOf,
  foldIntoConv,
  foldIntoLinear,
} from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { bnParams } from "./peers/data.js";
import { newWeighted, unbiased } from "./peers/formulas.js";
import { moduleWith } from "./peers/module.js";
import { missRatio } from "./peers/scales.js";
import { Rng } from "./random.js";
import { batchStats, channelOf } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";

const TOL = 1e-5;
const SHAPE = [4, 3, 2, 3]; // NCHW, C = 3, n = 24 values per channel
const C = 3;
const n = 24;

beforeAll(async () => {
  await initFromDist();
});

/** A module with the parameters and running statistics of `bnParams(seed)`. */
function loaded(seed: number, options: BatchNormOptions) {
  const p = bnParams(new Rng(seed), C);
  return { bn: moduleWith(p, options), p };
}

const data = (seed: number) => {
  const rng = new Rng(seed);
  return Float32Array.from({ length: 72 }, () => 1 + 2 * rng.normal());
};

describe.each(BACKENDS)("runningVarEstimator on the %s back end", (backend) => {
  it('defaults to "unbiased" (PyTorch\'s) and refuses other values, changing nothing', () => {
    expect(new BatchNorm(C, { backend }).runningVarEstimator).toBe("unbiased");
    expect(() => new BatchNorm(C, { backend, runningVarEstimator: "Biased" as never })).toThrow(
      new RangeError(
        'new BatchNorm: options.runningVarEstimator must be "unbiased" or "biased", got "Biased"',
      ),
    );
    const runningMean = new Float32Array(C).fill(2);
    const runningVar = new Float32Array(C).fill(3);
    const call = () =>
      batchNorm(data(1), SHAPE, {
        backend,
        training: true,
        runningMean,
        runningVar,
        runningVarEstimator: "sample" as never,
      });
    expect(call).toThrow(RangeError);
    expect(call).toThrow(
      /batchNorm: options.runningVarEstimator must be "unbiased" or "biased", got "sample"/,
    );
    expect([...runningMean, ...runningVar]).toEqual([2, 2, 2, 3, 3, 3]);
  });

  for (const estimator of ["biased", "unbiased"] as const) {
    it(`"${estimator}": runningVar = (1 − m)·old + m·(${estimator} batch variance); batchNorm agrees bit for bit`, () => {
      const m = 0.3;
      const bn = new BatchNorm(C, { backend, momentum: m, runningVarEstimator: estimator });
      expect(bn.runningVarEstimator).toBe(estimator);
      const x = data(2);
      const y = bn.forward(x, SHAPE);
      const batch = batchStats(x, channelOf(SHAPE, "NCHW"), C);
      const ones = new Float64Array(C).fill(1);
      const biasedWant = newWeighted(ones, batch.variance, m);
      const unbiasedWant = newWeighted(ones, unbiased(batch.variance, n), m);
      const [want, other] =
        estimator === "biased" ? [biasedWant, unbiasedWant] : [unbiasedWant, biasedWant];
      const rv = bn.runningVar as Float32Array;
      assertClose("runningVar", rv, want, want, TOL);
      // Negative control: the other estimator's running variance is far out.
      expect(missRatio(rv, other, want)).toBeGreaterThan(10 * TOL);
      const mean = newWeighted(new Float64Array(C), batch.mean, m);
      assertClose("runningMean", bn.runningMean as Float32Array, mean, ones, TOL);

      // The functional op with the same option runs the same passes: the same bits.
      const runningMean = new Float32Array(C);
      const runningVar = new Float32Array(C).fill(1);
      const yf = batchNorm(x, SHAPE, {
        backend,
        training: true,
        momentum: m,
        runningMean,
        runningVar,
        runningVarEstimator: estimator,
      });
      expectSameBits("y", yf, y);
      expectSameBits("runningMean", runningMean, bn.runningMean);
      expectSameBits("runningVar", runningVar, rv);
    });
  }
});

describe.each(BACKENDS)("foldedAffine() and the folds on the %s back end", (backend) => {
  it("foldedAffine() is foldedAffineOf(the module's state), and the module in eval() is that affine map", () => {
    const { bn, p } = loaded(3, { backend, eps: 1e-3 });
    const f = bn.foldedAffine();
    const want = foldedAffineOf({
      weight: p.weight,
      bias: p.bias,
      runningMean: p.mean,
      runningVar: p.variance,
      eps: 1e-3,
    });
    expectSameBits("scale", f.scale, want.scale);
    expectSameBits("shift", f.shift, want.shift);
    const x = data(4);
    const y = bn.eval().forward(x, SHAPE);
    const chan = channelOf(SHAPE, "NCHW");
    const s = (i: number) => f.scale[chan[i] as number] as number;
    const affine = Float64Array.from(
      x,
      (v, i) => s(i) * v + (f.shift[chan[i] as number] as number),
    );
    const scale = Float64Array.from(
      x,
      (v, i) => Math.abs(s(i) * v) + Math.abs(f.shift[chan[i] as number] as number),
    );
    assertClose("eval forward vs scale·x + shift", y, affine, scale, TOL);
    bn.dispose();
  });

  it("foldIntoLinear and foldIntoConv take the module itself", () => {
    const { bn } = loaded(5, { backend });
    // foldedAffine() = foldedAffineOf(bn) is shown above; here, that the folds call it.
    const plain = { numFeatures: C, foldedAffine: () => foldedAffineOf(bn) };
    const rng = new Rng(6);
    const w = rng.normals(C * 4);
    const b = rng.normals(C);
    for (const [got, want] of [
      [foldIntoLinear(bn, w, b), foldIntoLinear(plain, w, b)],
      [
        foldIntoLinear(bn, w, null, { layout: "inOut" }),
        foldIntoLinear(plain, w, null, { layout: "inOut" }),
      ],
      [
        foldIntoConv(bn, w, b, { shape: [C, 1, 2, 2] }),
        foldIntoConv(plain, w, b, { shape: [C, 1, 2, 2] }),
      ],
    ] as const) {
      expectSameBits("weight", got.weight, want.weight);
      expectSameBits("bias", got.bias, want.bias);
    }
    // Negative control: another module's statistics give other weights.
    const other = loaded(7, { backend }).bn;
    expect(foldIntoLinear(other, w, b).weight).not.toEqual(foldIntoLinear(bn, w, b).weight);
    other.dispose();
    bn.dispose();
  });

  it("is refused without running statistics, and after dispose()", () => {
    const bn = new BatchNorm(C, { backend, trackRunningStats: false });
    const refusal =
      /BatchNorm.foldedAffine: the module has no running statistics \(trackRunningStats: false\)/;
    expect(() => bn.foldedAffine()).toThrow(RangeError);
    expect(() => bn.foldedAffine()).toThrow(refusal);
    expect(() => foldIntoLinear(bn, new Float32Array(C), null)).toThrow(refusal);
    bn.dispose();
    const gone = new BatchNorm(C, { backend });
    gone.dispose();
    expect(() => gone.foldedAffine()).toThrow("BatchNorm.foldedAffine: the module was disposed");
  });
});
