/**
 * What TF.js layers' `batchNormalization` (tfjs-layers 4.22, CPU back end, float32) does, against
 * the float64 formulas of test/reference.ts and test/peers/formulas.ts, with a negative control
 * for each convention. See test/peers/scales.ts for the tolerances.
 */
import { afterAll, describe, expect, it } from "vitest";
import { assertClose } from "./compare.js";
import { checkTrainingY } from "./peers/checks.js";
import { bnParams, channelData } from "./peers/data.js";
import { newWeighted, oldWeighted, unbiased } from "./peers/formulas.js";
import { missRatio, statScales, statTolerance, Y_TOL, yScale } from "./peers/scales.js";
import { tfjsBatchNorm } from "./peers/tfjs-layers.js";
import { Rng } from "./random.js";
import { batchStats, channelOf, normalize } from "./reference.js";

const measured: Record<string, number> = {};
afterAll(() => {
  if (process.env.PEERS_REPORT) console.log("tfjs-layers", measured);
});

/**
 * Channels last, with the layer's axis left to its default: the comparisons with the NHWC
 * formulas show that the default axis is the last one. 3·2·4 = 24 values per channel.
 */
const SHAPE = [3, 2, 4, 5] as const;
const C = 5;
const n = 24;
const chan = channelOf(SHAPE, "NHWC");

/** The layer's weights as the formulas' parameters. */
const asParams = (w: {
  gamma: Float32Array;
  beta: Float32Array;
  movingMean: Float32Array;
  movingVariance: Float32Array;
}) => ({
  weight: w.gamma,
  bias: w.beta,
  mean: w.movingMean,
  variance: w.movingVariance,
});

describe("TF.js layers batchNormalization", () => {
  it("has momentum 0.99, epsilon 1e-3 and axis −1 by default, and weights gamma, beta, moving_mean, moving_variance in that order", async () => {
    const bn = await tfjsBatchNorm(SHAPE);
    const config = bn.layer.getConfig();
    expect(config.momentum).toBe(0.99);
    expect(config.epsilon).toBe(1e-3);
    expect(config.axis).toBe(-1);
    expect(bn.names().map((name) => name.split("/").pop())).toEqual([
      "gamma",
      "beta",
      "moving_mean",
      "moving_variance",
    ]);
    // The initial values: γ = 1, β = 0, moving mean 0, moving variance 1 (PyTorch's too).
    const w = bn.read();
    expect([w.gamma, w.beta, w.movingMean, w.movingVariance].map((a) => [...a])).toEqual(
      [1, 0, 0, 1].map((v) => new Array(C).fill(v)),
    );
    bn.dispose();
  });

  it("inference: y = γ·(x − moving_mean)/√(moving_variance + 1e-3) + β", async () => {
    const rng = new Rng(21);
    const p = bnParams(rng, C);
    const bn = await tfjsBatchNorm(SHAPE, {
      weights: { gamma: p.weight, beta: p.bias, movingMean: p.mean, movingVariance: p.variance },
    });
    const x = channelData(rng, SHAPE, "NHWC", C);
    const y = bn.call(x, false);
    const want = normalize(x, chan, p.mean, p.variance, 1e-3, p.weight, p.bias);
    const scale = yScale(x, SHAPE, "NHWC", p, p.variance, 1e-3);
    measured["inference y"] = assertClose("y", y, want, scale, Y_TOL);
    // Negative control: PyTorch's default eps 1e-5 misses.
    const wrong = normalize(x, chan, p.mean, p.variance, 1e-5, p.weight, p.bias);
    expect(missRatio(y, wrong, scale)).toBeGreaterThan(100 * Y_TOL);
    // Inference leaves the moving statistics alone.
    expect(bn.read().movingMean).toEqual(p.mean);
    bn.dispose();
  });

  // Both routes that train: an explicit training-mode call, and fit (which makes that call).
  for (const route of ["call(x, { training: true })", "fit"] as const) {
    it(`${route}: moving = 0.99·old + 0.01·batch with the biased batch variance`, async () => {
      const rng = new Rng(22);
      const p = bnParams(rng, C);
      p.mean.fill(5); // far from the batch's, so that the momentum's direction shows
      p.variance.fill(0.01);
      const w0 = { gamma: p.weight, beta: p.bias, movingMean: p.mean, movingVariance: p.variance };
      const bn = await tfjsBatchNorm(SHAPE, { weights: w0 });
      const x = channelData(rng, SHAPE, "NHWC", C);
      const batch = batchStats(x, chan, C);
      let y: Float32Array | null = null;
      if (route === "fit") await bn.fitOnce(x);
      else y = bn.call(x, true);
      const after = asParams(bn.read());
      // Learning rate 0 in fit; no optimizer at all in a call: γ and β stay.
      expect(after.weight).toEqual(p.weight);
      expect(after.bias).toEqual(p.bias);

      const m = 0.99;
      const scales = statScales(x, SHAPE, "NHWC", batch.mean, p, m);
      const tol = statTolerance(n);
      const wantMean = oldWeighted(p.mean, batch.mean, m);
      const wantVar = oldWeighted(p.variance, batch.variance, m);
      measured[`${route} moving_mean`] = assertClose(
        "moving_mean",
        after.mean,
        wantMean,
        scales.mean,
        tol,
      );
      measured[`${route} moving_variance`] = assertClose(
        "moving_variance",
        after.variance,
        wantVar,
        scales.variance,
        tol,
      );
      // Negative controls: momentum read PyTorch's way (weight of the batch)...
      expect(
        missRatio(after.mean, newWeighted(p.mean, batch.mean, m), scales.mean),
      ).toBeGreaterThan(100 * tol);
      // ...and PyTorch's unbiased variance (its effect is scaled by 1 − m = 0.01, still far out).
      const unbiasedVar = oldWeighted(p.variance, unbiased(batch.variance, n), m);
      expect(missRatio(after.variance, unbiasedVar, scales.variance)).toBeGreaterThan(10 * tol);

      if (y) {
        // The training-mode output is normalized with the batch's mean and biased variance.
        measured["training y"] = checkTrainingY(y, x, SHAPE, "NHWC", p, batch, 1e-3, tol);
      }
      bn.dispose();
    });
  }
});
