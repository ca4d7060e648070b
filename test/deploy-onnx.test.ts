/**
 * Modules made by `BatchNorm.fromOnnx`, and the folds taking a module, against ONNX Runtime
 * (onnxruntime-web 1.30, wasm, one thread, float32) on every back end:
 * - a `BatchNormalization` node (opset 15) in inference and in training mode (Y and the
 *   `running_mean`/`running_var` outputs) against the module's forward and running statistics;
 * - `Gemm → BatchNormalization` against `foldIntoLinear(bn, …)`, and `Conv → BatchNormalization
 *   → Relu` against `foldIntoConv(bn, …)` followed by ReLU (ORT's Relu node after the folded
 *   Conv), and against the module's own inference forward with the fused `activation: "relu"`
 *   on the Conv's output.
 *
 * Tolerances. Each side is within a bound of the float64 formula (test/peers/scales.ts: 16u for
 * a normalization, (n + 8)u for a statistic over n values, u = 2⁻²⁴; the module's own error is
 * below the same bounds, its kernels summing in float32 blocks merged in float64), so the two
 * sides are compared directly with the sum of both bounds: 2·Y_TOL for inference, 2·(n + 8)u
 * for a running statistic, 2·((n + 8)u + Y_TOL) for a training forward (the batch statistics
 * carry their error into Y). The folds use test/fold-onnx.test.ts's (2K + 24)u, K products per
 * output. Every comparison has a negative control: the same module made with the wrong
 * convention (eps not carried over, momentum not flipped, PyTorch's unbiased estimator) misses.
 */
import { beforeAll, describe, it } from "vitest";
import { BatchNorm, foldIntoConv, foldIntoLinear } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { bnParams, channelData } from "./peers/data.js";
import { type ConvShape, conv64, convOutShape, linear64 } from "./peers/layers64.js";
import { moduleWith, onnxInputs } from "./peers/module.js";
import { batchNormalization, conv, gemm, onnxModel, relu } from "./peers/onnx-ops.js";
import { runOnnx } from "./peers/onnx-run.js";
import { peerReport } from "./peers/report.js";
import { missRatio, statScales, statTolerance, U, Y_TOL, yScale } from "./peers/scales.js";
import { Rng } from "./random.js";
import { batchStats, channelOf } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";

const { measured, misses } = peerReport("module vs onnxruntime-web");

beforeAll(async () => {
  await initFromDist();
});

const SHAPE = [4, 3, 2, 3]; // NCHW, 24 values per channel
const C = 3;
const n = 24;
const chan = channelOf(SHAPE, "NCHW");
const X = (data: Float32Array, dims: readonly number[]) => ({ X: { data, dims } });
const abs = (a: ArrayLike<number>) => Float64Array.from(a, Math.abs);

/** Runs `model` on `x` and returns the named output's data. */
async function output(model: Uint8Array, x: Float32Array, dims: readonly number[], name = "Y") {
  return (await runOnnx(model, X(x, dims)))[name]?.data ?? new Float32Array();
}

describe.each(BACKENDS)("fromOnnx modules vs onnxruntime-web, %s back end", (backend) => {
  it("inference: the module in eval() gives the node's Y, epsilon carried over", async () => {
    const rng = new Rng(51);
    const p = bnParams(rng, C);
    const x = channelData(rng, SHAPE, "NCHW", C);
    for (const epsilon of [undefined, 1e-3]) {
      const model = onnxModel([batchNormalization("X", "Y", p, { epsilon })], SHAPE, ["Y"]);
      const want = await output(model, x, SHAPE);
      const eps = epsilon ?? 1e-5;
      const bn = BatchNorm.fromOnnx(onnxInputs(p), { epsilon, backend }).eval();
      const scale = yScale(x, SHAPE, "NCHW", p, p.variance, eps);
      const tol = 2 * Y_TOL;
      measured[`${backend} inference, eps ${eps}`] = assertClose(
        "module vs ORT",
        bn.forward(x, SHAPE),
        want,
        scale,
        tol,
      );
      // Negative control: the other default epsilon (ONNX's 1e-5 / Keras's 1e-3) misses.
      const wrong = BatchNorm.fromOnnx(onnxInputs(p), {
        epsilon: eps === 1e-5 ? 1e-3 : 1e-5,
        backend,
      }).eval();
      misses(
        `${backend} inference, eps ${eps}`,
        missRatio(wrong.forward(x, SHAPE), want, scale),
        tol,
        100,
      );
      bn.dispose();
      wrong.dispose();
    }
  });

  it("training_mode=1: the module's training forward gives Y, running_mean and running_var", async () => {
    const rng = new Rng(52);
    const p = bnParams(rng, C);
    p.mean.fill(5); // old statistics far from the batch's, so that the momentum's direction shows
    p.variance.fill(0.01);
    const x = channelData(rng, SHAPE, "NCHW", C);
    const batch = batchStats(x, chan, C);
    for (const momentum of [undefined, 0.7]) {
      const model = onnxModel(
        [batchNormalization("X", "Y", p, { momentum, training: true })],
        SHAPE,
        ["Y", "running_mean", "running_var"],
      );
      const out = await runOnnx(model, X(x, SHAPE));
      const m = momentum ?? 0.9;
      const bn = BatchNorm.fromOnnx(onnxInputs(p), { momentum, backend });
      const y = bn.forward(x, SHAPE);
      const stat = 2 * statTolerance(n);
      const scales = statScales(x, SHAPE, "NCHW", batch.mean, p, m);
      const rm = bn.runningMean as Float32Array;
      const rv = bn.runningVar as Float32Array;
      const ortMean = out.running_mean?.data ?? [];
      const ortVar = out.running_var?.data ?? [];
      const key = `${backend} training, m ${m}`;
      measured[`${key}: running_mean`] = assertClose(
        "running_mean",
        rm,
        ortMean,
        scales.mean,
        stat,
      );
      measured[`${key}: running_var`] = assertClose(
        "running_var",
        rv,
        ortVar,
        scales.variance,
        stat,
      );
      const yScales = yScale(x, SHAPE, "NCHW", { ...p, mean: batch.mean }, batch.variance, 1e-5);
      const yTol = 2 * (statTolerance(n) + Y_TOL);
      measured[`${key}: Y`] = assertClose("Y", y, out.Y?.data ?? [], yScales, yTol);

      // Negative controls: ONNX's momentum used unflipped as PyTorch's...
      const unflipped = moduleWith(p, { momentum: m, runningVarEstimator: "biased", backend });
      unflipped.forward(x, SHAPE);
      misses(
        `${key}: unflipped momentum`,
        missRatio(unflipped.runningMean ?? [], ortMean, scales.mean),
        stat,
        100,
      );
      // ...and the right momentum with PyTorch's unbiased estimator.
      const unbiased = moduleWith(p, { momentum: 1 - m, backend });
      unbiased.forward(x, SHAPE);
      misses(
        `${key}: unbiased estimator`,
        missRatio(unbiased.runningVar ?? [], ortVar, scales.variance),
        stat,
        100,
      );
      for (const b of [bn, unflipped, unbiased]) b.dispose();
    }
  });

  it("Gemm (transB=1) → BatchNormalization = Gemm folded with foldIntoLinear(module)", async () => {
    const rng = new Rng(53);
    const [N, IN, OUT] = [6, 9, 5];
    const p = bnParams(rng, OUT);
    const w = rng.normals(OUT * IN);
    const b = rng.normals(OUT);
    const x = rng.normals(N * IN);
    const unfused = onnxModel(
      [gemm("X", "Z", w, b, OUT), batchNormalization("Z", "Y", p)],
      [N, IN],
      ["Y"],
    );
    const want = await output(unfused, x, [N, IN]);
    const gemmOf = (bn: BatchNorm) => {
      const f = foldIntoLinear(bn, w, b);
      return onnxModel([gemm("X", "Y", f.weight, f.bias, OUT)], [N, IN], ["Y"]);
    };
    const bn = BatchNorm.fromOnnx(onnxInputs(p), { backend });
    const got = await output(gemmOf(bn), x, [N, IN]);
    const tol = (2 * IN + 24) * U;
    const terms = linear64(abs(x), N, abs(w), abs(b), OUT);
    const scale = yScale(terms, [N, OUT], "NCHW", p, p.variance, 1e-5);
    measured[`${backend} Gemm folded`] = assertClose("folded Gemm", got, want, scale, tol);
    // Negative control: a module that did not carry ONNX's epsilon over (Keras's 1e-3).
    const wrong = BatchNorm.fromOnnx(onnxInputs(p), { epsilon: 1e-3, backend });
    const missed = await output(gemmOf(wrong), x, [N, IN]);
    misses(`${backend} Gemm, eps 1e-3`, missRatio(missed, want, scale), tol, 100);
    bn.dispose();
    wrong.dispose();
  });

  it("Conv → BatchNormalization → Relu = Relu(folded Conv) = module(Conv) with fused relu", async () => {
    const rng = new Rng(54);
    const s: ConvShape = { N: 2, I: 3, H: 6, W: 5, O: 4, kH: 3, kW: 2, groups: 1 };
    const eps = 1e-3;
    const p = bnParams(rng, s.O);
    const wDims = [s.O, s.I, s.kH, s.kW];
    const w = rng.normals(wDims.reduce((a, d) => a * d, 1));
    const b = rng.normals(s.O);
    const x = rng.normals(s.N * s.I * s.H * s.W);
    const xDims = [s.N, s.I, s.H, s.W];
    const convModel = (weight: Float32Array, bias: Float32Array, then: "Relu" | null = null) =>
      onnxModel(
        then === null
          ? [conv("X", "Y", { data: weight, dims: wDims }, bias)]
          : [conv("X", "Z", { data: weight, dims: wDims }, bias), relu("Z", "Y")],
        xDims,
        ["Y"],
      );
    const unfused = onnxModel(
      [
        conv("X", "Z", { data: w, dims: wDims }, b),
        batchNormalization("Z", "B", p, { epsilon: eps }),
        relu("B", "Y"),
      ],
      xDims,
      ["Y"],
    );
    const want = await output(unfused, x, xDims);
    const bn = BatchNorm.fromOnnx(onnxInputs(p), { epsilon: eps, backend }).eval();
    const foldedRelu = async (m: BatchNorm) => {
      const f = foldIntoConv(m, w, b, { layout: "OIHW", shape: wDims });
      return await output(convModel(f.weight, f.bias, "Relu"), x, xDims);
    };
    const K = s.I * s.kH * s.kW;
    const tol = (2 * K + 24) * U;
    const outShape = convOutShape(s);
    const terms = conv64(abs(x), abs(w), abs(b), s);
    const scale = yScale(terms, outShape, "NCHW", p, p.variance, eps);
    const got = await foldedRelu(bn);
    measured[`${backend} Conv folded + ReLU`] = assertClose("folded", got, want, scale, tol);

    // The module itself, with its fused ReLU, on ORT's Conv output.
    const fused = moduleWith(p, { backend, eps, activation: "relu" }).eval();
    const z = await output(convModel(w, b), x, xDims);
    const viaModule = fused.forward(z, outShape);
    measured[`${backend} module(Conv), fused relu`] = assertClose(
      "module",
      viaModule,
      want,
      scale,
      tol,
    );

    // Negative control: PyTorch's default eps instead of the graph's 1e-3, both ways.
    const wrong = moduleWith(p, { backend, activation: "relu" }).eval();
    misses(
      `${backend} Conv folded, eps 1e-5`,
      missRatio(await foldedRelu(wrong), want, scale),
      tol,
      100,
    );
    const wrongModule = wrong.forward(z, outShape);
    misses(`${backend} module(Conv), eps 1e-5`, missRatio(wrongModule, want, scale), tol, 100);
    bn.dispose();
    fused.dispose();
    wrong.dispose();
  });
});
