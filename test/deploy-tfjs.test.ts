/**
 * bn.toKeras() and BatchNorm.fromKeras against TF.js layers' `batchNormalization` (tfjs-layers
 * 4.22, CPU back end, float32), on every back end of the module: a layer built from a module's
 * `toKeras()` (weights and config), and a module built by `fromKeras` from that layer's own
 * weights and config, must agree in inference, after a training-mode call and after one `fit`
 * step (the moving statistics), with `center: false` / `scale: false` too.
 *
 * Tolerances as in test/deploy-onnx.test.ts: the sum of both sides' bounds from the float64
 * formulas (test/peers/scales.ts): 2·Y_TOL for inference, 2·(n + 8)u for a moving statistic,
 * 2·((n + 8)u + Y_TOL) for a training forward. Negative controls: eps not carried over, Keras's
 * momentum unflipped, PyTorch's unbiased estimator (what toKeras's documented rule leaves to an
 * "unbiased" module: Keras goes on with the biased one), and a parameter Keras does not have;
 * each must miss by more than 100 times its tolerance.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm, type KerasExport } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { type BnParams, bnParams, channelData } from "./peers/data.js";
import { moduleWith } from "./peers/module.js";
import { peerReport } from "./peers/report.js";
import { missRatio, statScales, statTolerance, Y_TOL, yScale } from "./peers/scales.js";
import { type TfjsBn, tfjsBatchNorm } from "./peers/tfjs-layers.js";
import { Rng } from "./random.js";
import { batchStats, channelOf } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameState } from "./state.js";

const { measured, misses } = peerReport("module vs tfjs-layers");

beforeAll(async () => {
  await initFromDist();
});

const SHAPE = [3, 2, 4, 5]; // channels last, Keras's default: 24 values per channel
const C = 5;
const n = 24;
const chan = channelOf(SHAPE, "NHWC");
/** A module trained here the Keras way: Keras's eps, its momentum flipped, the biased estimator. */
const KERAS_LIKE = {
  layout: "NHWC",
  eps: 1e-3,
  momentum: 0.01,
  runningVarEstimator: "biased",
} as const;

/** The layer a module exports to: its weights and its whole config (axis included). */
const layerOf = (k: KerasExport) => tfjsBatchNorm(SHAPE, { weights: k.weights, ...k.config });

/** The module `fromKeras` makes of the layer's own weights and config. */
function moduleOf(layer: TfjsBn, backend: (typeof BACKENDS)[number]): BatchNorm {
  const { momentum, epsilon, center, scale } = layer.layer.getConfig() as KerasExport["config"];
  const list = layer.readList();
  const movingVariance = list.pop() as Float32Array;
  const movingMean = list.pop() as Float32Array;
  const beta = center ? list.pop() : undefined;
  const gamma = scale ? list.pop() : undefined;
  const weights = { gamma, beta, movingMean, movingVariance };
  return BatchNorm.fromKeras(weights, { momentum, epsilon, center, scale, backend });
}

/** p with γ = 1 and β = 0 where the layer has none, for the error scales. */
const effective = (p: BnParams, center: boolean, scale: boolean) => ({
  ...p,
  weight: scale ? p.weight : new Float32Array(C).fill(1),
  bias: center ? p.bias : new Float32Array(C),
});

describe.each(BACKENDS)("toKeras / fromKeras vs TF.js layers, %s back end", (backend) => {
  it("inference: layer(toKeras()) = fromKeras(layer) in eval(), and the round trip keeps the state", async () => {
    const rng = new Rng(61);
    const p = bnParams(rng, C);
    const src = moduleWith(p, { ...KERAS_LIKE, backend });
    const layer = await layerOf(src.toKeras());
    const bn = moduleOf(layer, backend);
    expectSameState(bn, src);
    const x = channelData(rng, SHAPE, "NHWC", C);
    const want = layer.call(x, false);
    const scale = yScale(x, SHAPE, "NHWC", p, p.variance, 1e-3);
    const tol = 2 * Y_TOL;
    measured[`${backend} inference`] = assertClose(
      "y",
      bn.eval().forward(x, SHAPE),
      want,
      scale,
      tol,
    );
    // Negative control: PyTorch's default eps instead of Keras's.
    const wrong = moduleWith(p, { ...KERAS_LIKE, eps: 1e-5, backend }).eval();
    misses(
      `${backend} inference, eps 1e-5`,
      missRatio(wrong.forward(x, SHAPE), want, scale),
      tol,
      100,
    );
    for (const b of [src, bn, wrong]) b.dispose();
    layer.dispose();
  });

  for (const route of ["call(x, { training: true })", "fit"]) {
    it(`${route}: the moving statistics (and the call's y) of fromKeras's training forward`, async () => {
      const rng = new Rng(62);
      const p = bnParams(rng, C);
      p.mean.fill(5); // far from the batch's, so that the momentum's direction shows
      p.variance.fill(0.01);
      const layer = await layerOf(moduleWith(p, { ...KERAS_LIKE, backend }).toKeras());
      const bn = moduleOf(layer, backend);
      const x = channelData(rng, SHAPE, "NHWC", C);
      const batch = batchStats(x, chan, C);
      const yTf = route === "fit" ? null : layer.call(x, true);
      if (route === "fit") await layer.fitOnce(x);
      const y = bn.forward(x, SHAPE);
      const after = layer.read();
      const stat = 2 * statTolerance(n);
      const scales = statScales(x, SHAPE, "NHWC", batch.mean, p, 0.99);
      const key = `${backend} ${route}`;
      const rm = bn.runningMean as Float32Array;
      const rv = bn.runningVar as Float32Array;
      measured[`${key}: moving_mean`] = assertClose(
        "moving_mean",
        rm,
        after.movingMean,
        scales.mean,
        stat,
      );
      measured[`${key}: moving_variance`] = assertClose(
        "moving_variance",
        rv,
        after.movingVariance,
        scales.variance,
        stat,
      );
      if (yTf) {
        const yScales = yScale(x, SHAPE, "NHWC", { ...p, mean: batch.mean }, batch.variance, 1e-3);
        const yTol = 2 * (stat / 2 + Y_TOL);
        measured[`${key}: y`] = assertClose("y", y, yTf, yScales, yTol);
      }
      // Negative controls: Keras's momentum 0.99 taken as PyTorch's...
      const unflipped = moduleWith(p, { ...KERAS_LIKE, momentum: 0.99, backend });
      unflipped.forward(x, SHAPE);
      misses(
        `${key}: unflipped momentum`,
        missRatio(unflipped.runningMean ?? [], after.movingMean, scales.mean),
        stat,
        100,
      );
      // ...and PyTorch's estimator, as a module exported with "unbiased" goes on in Keras.
      const unbiased = moduleWith(p, {
        ...KERAS_LIKE,
        runningVarEstimator: "unbiased",
        backend,
      });
      unbiased.forward(x, SHAPE);
      misses(
        `${key}: unbiased estimator`,
        missRatio(unbiased.runningVar ?? [], after.movingVariance, scales.variance),
        stat,
        100,
      );
      for (const b of [bn, unflipped, unbiased]) b.dispose();
      layer.dispose();
    });
  }

  for (const [center, scale] of [
    [false, true],
    [true, false],
    [false, false],
  ] as const) {
    it(`center: ${center}, scale: ${scale}: the layer has the module's weights, and both agree in inference and training`, async () => {
      const rng = new Rng(63);
      const p = bnParams(rng, C);
      const weights = {
        gamma: scale ? p.weight : undefined,
        beta: center ? p.bias : undefined,
        movingMean: p.mean,
        movingVariance: p.variance,
      };
      const src = BatchNorm.fromKeras(weights, { center, scale, backend });
      const layer = await layerOf(src.toKeras());
      const names = layer.names().map((name) => name.split("/").pop());
      const expected = [scale && "gamma", center && "beta", "moving_mean", "moving_variance"];
      expect(names).toEqual(expected.filter(Boolean));
      const bn = moduleOf(layer, backend);
      expectSameState(bn, src);
      const x = channelData(rng, SHAPE, "NHWC", C);
      const q = effective(p, center, scale);
      const key = `${backend} center ${center} scale ${scale}`;

      const want = layer.call(x, false);
      const scaleY = yScale(x, SHAPE, "NHWC", q, p.variance, 1e-3);
      const y = bn.eval().forward(x, SHAPE);
      measured[`${key}: inference`] = assertClose("y", y, want, scaleY, 2 * Y_TOL);
      // Negative control: a module with the γ and β that the layer does not have.
      const full = BatchNorm.fromKeras({ ...weights, gamma: p.weight, beta: p.bias }, { backend });
      misses(
        `${key}: with γ and β`,
        missRatio(full.eval().forward(x, SHAPE), want, scaleY),
        2 * Y_TOL,
        100,
      );

      // TF.js 4.22 cannot train such a layer (tensorflow/tfjs#2868, open: its training path reads
      // γ and β unconditionally). When it can, compare with it directly; until then compare with
      // the layer holding γ = 1 and β = 0 instead, which trains the same moving statistics.
      expect(() => layer.call(x, true)).toThrow(/reading 'read'/);
      const k = bn.toKeras();
      const ones = [new Float32Array(C).fill(1), new Float32Array(C)];
      const stand = await layerOf({
        weights: [scale ? p.weight : ones[0], center ? p.bias : ones[1], p.mean, p.variance].map(
          (a) => Float32Array.from(a as Float32Array),
        ),
        config: { ...k.config, center: true, scale: true },
      });
      const batch = batchStats(x, chan, C);
      const yTf = stand.call(x, true);
      const yTrain = bn.train().forward(x, SHAPE);
      const stat = 2 * statTolerance(n);
      const scales = statScales(x, SHAPE, "NHWC", batch.mean, p, 0.99);
      const after = stand.read();
      assertClose("moving_mean", bn.runningMean ?? [], after.movingMean, scales.mean, stat);
      assertClose("moving_var", bn.runningVar ?? [], after.movingVariance, scales.variance, stat);
      const yScales = yScale(x, SHAPE, "NHWC", { ...q, mean: batch.mean }, batch.variance, 1e-3);
      measured[`${key}: training y`] = assertClose("y", yTrain, yTf, yScales, stat + 2 * Y_TOL);
      stand.dispose();
      for (const b of [src, bn, full]) b.dispose();
      layer.dispose();
    });
  }
});
