/**
 * What ONNX's BatchNormalization (opset 15) does, as executed by onnxruntime-web 1.30 (wasm, CPU,
 * float32), against the float64 formulas of test/reference.ts and test/peers/formulas.ts. Each
 * convention is shown with a negative control: the other library's convention, predicted the
 * same way, misses by far more than the tolerance. See test/peers/scales.ts for the tolerances.
 */
import { afterAll, describe, expect, it } from "vitest";
import { assertClose } from "./compare.js";
import { checkTrainingY } from "./peers/checks.js";
import { bnParams, channelData } from "./peers/data.js";
import { newWeighted, oldWeighted, unbiased } from "./peers/formulas.js";
import { batchNormalization, onnxModel } from "./peers/onnx-ops.js";
import { runOnnx } from "./peers/onnx-run.js";
import { missRatio, statScales, statTolerance, Y_TOL, yScale } from "./peers/scales.js";
import { Rng } from "./random.js";
import { batchStats, channelOf, normalize } from "./reference.js";

/** Worst error/scale ratios seen, printed with PEERS_REPORT=1 (for choosing tolerances). */
const measured: Record<string, number> = {};
afterAll(() => {
  if (process.env.PEERS_REPORT) console.log("onnxruntime-web", measured);
});

const SHAPES = [
  [4, 3, 2, 3], // NCHW: 24 values per channel
  [16, 5], // [N, C]: 16 values per channel
] as const;

for (const shape of SHAPES)
  describe(`ONNX BatchNormalization on onnxruntime-web, X [${shape}]`, () => {
    const C = shape[1];
    const n = shape.reduce((p, d) => p * d, 1) / C;
    const chan = channelOf(shape, "NCHW");

    it("inference: Y = scale·(X − input_mean)/√(input_var + epsilon) + B, epsilon by default 1e-5", async () => {
      const rng = new Rng(11);
      const p = bnParams(rng, C);
      const x = channelData(rng, shape, "NCHW", C);
      for (const epsilon of [undefined, 1e-3]) {
        const model = onnxModel([batchNormalization("X", "Y", p, { epsilon })], shape, ["Y"]);
        const { Y } = await runOnnx(model, { X: { data: x, dims: shape } });
        const eps = epsilon ?? 1e-5;
        const want = normalize(x, chan, p.mean, p.variance, eps, p.weight, p.bias);
        const scale = yScale(x, shape, "NCHW", p, p.variance, eps);
        measured[`[${shape}] inference y, eps ${eps}`] = assertClose(
          "Y",
          Y?.data ?? [],
          want,
          scale,
          Y_TOL,
        );
        // Negative control: the other default eps (Keras's 1e-3 / PyTorch's 1e-5) misses.
        const otherEps = eps === 1e-5 ? 1e-3 : 1e-5;
        const wrong = normalize(x, chan, p.mean, p.variance, otherEps, p.weight, p.bias);
        expect(missRatio(Y?.data ?? [], wrong, scale)).toBeGreaterThan(100 * Y_TOL);
        // ...and so does swapping scale and B, which shows the input order.
        const swapped = normalize(x, chan, p.mean, p.variance, eps, p.bias, p.weight);
        expect(missRatio(Y?.data ?? [], swapped, scale)).toBeGreaterThan(100 * Y_TOL);
      }
    });

    it("training_mode=1: running = momentum·old + (1 − momentum)·batch, biased variance, momentum by default 0.9", async () => {
      const rng = new Rng(12);
      const p = bnParams(rng, C);
      // Old statistics far from the batch's, so that the momentum's direction shows.
      p.mean.fill(5);
      p.variance.fill(0.01);
      const x = channelData(rng, shape, "NCHW", C);
      const batch = batchStats(x, chan, C);
      for (const momentum of [undefined, 0.7]) {
        const model = onnxModel(
          [batchNormalization("X", "Y", p, { epsilon: 1e-5, momentum, training: true })],
          shape,
          ["Y", "running_mean", "running_var"],
        );
        const out = await runOnnx(model, { X: { data: x, dims: shape } });
        const m = momentum ?? 0.9;
        const scales = statScales(x, shape, "NCHW", batch.mean, p, m);
        const tol = statTolerance(n);
        const rm = out.running_mean?.data ?? [];
        const rv = out.running_var?.data ?? [];
        const wantMean = oldWeighted(p.mean, batch.mean, m);
        const wantVar = oldWeighted(p.variance, batch.variance, m);
        measured[`[${shape}] running_mean, m ${m}`] = assertClose(
          "running_mean",
          rm,
          wantMean,
          scales.mean,
          tol,
        );
        measured[`[${shape}] running_var, m ${m}`] = assertClose(
          "running_var",
          rv,
          wantVar,
          scales.variance,
          tol,
        );
        // Negative controls: PyTorch's direction (momentum = weight of the batch) misses...
        expect(missRatio(rm, newWeighted(p.mean, batch.mean, m), scales.mean)).toBeGreaterThan(
          100 * tol,
        );
        expect(
          missRatio(rv, newWeighted(p.variance, batch.variance, m), scales.variance),
        ).toBeGreaterThan(100 * tol);
        // ...and so does PyTorch's unbiased variance in the running average.
        const unbiasedVar = oldWeighted(p.variance, unbiased(batch.variance, n), m);
        expect(missRatio(rv, unbiasedVar, scales.variance)).toBeGreaterThan(10 * tol);

        // Y is normalized with the batch's own mean and biased variance, like PyTorch's training.
        const y = out.Y?.data ?? [];
        const label = `[${shape}] training y, m ${m}`;
        measured[label] = checkTrainingY(y, x, shape, "NCHW", p, batch, 1e-5, tol);
      }
    });
  });
