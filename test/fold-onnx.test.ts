/**
 * The folds against ONNX Runtime (onnxruntime-web 1.30, wasm, float32): a graph with the
 * BatchNormalization left in (`Conv → BatchNormalization → Relu`, `Gemm → BatchNormalization`,
 * graph optimizations off so ORT runs its BatchNormalization kernel) must give what the graph
 * without it gives with the folded weights (`Conv' → Relu`, `Gemm'`). ORT's own Conv+BN fusion
 * (optimizations on) must agree too.
 *
 * Tolerance: each graph sums K products per output in float32 (error ≤ K·u of the magnitudes
 * summed, u = 2⁻²⁴), the folded weights add 4u (test/fold.test.ts) and the BatchNormalization
 * 16u (test/peers/scales.ts), so |unfused − folded| ≤ (2K + 24)·u·S with
 * S = |scale|·(Σ|x·W| + |b| + |mean|) + |β|. Relu is 1-Lipschitz and adds nothing.
 */
import { afterAll, describe, expect, it } from "vitest";
import { foldIntoConv, foldIntoLinear } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { type BnParams, bnParams, foldable } from "./peers/data.js";
import { type ConvShape, conv64, convOutShape, linear64 } from "./peers/layers64.js";
import { batchNormalization, conv, gemm, onnxModel, relu } from "./peers/onnx-ops.js";
import { runOnnx } from "./peers/onnx-run.js";
import { missRatio, U } from "./peers/scales.js";
import { Rng } from "./random.js";
import { channelOf } from "./reference.js";

const measured: Record<string, number> = {};
afterAll(() => {
  if (process.env.PEERS_REPORT) console.log("fold vs onnxruntime-web", measured);
});

/** S per output (see the header), from |x|·|W| summed by the layer in float64. */
function errorScale(absTerms: Float64Array, shape: number[], p: BnParams, eps: number) {
  const chan = channelOf(shape, "NCHW");
  return Float64Array.from(absTerms, (t, i) => {
    const c = chan[i] as number;
    const s = Math.abs(p.weight[c] as number) / Math.sqrt((p.variance[c] as number) + eps);
    return s * (t + Math.abs(p.mean[c] as number)) + Math.abs(p.bias[c] as number);
  });
}

const abs = (a: ArrayLike<number>) => Float64Array.from(a, Math.abs);

describe("folds vs onnxruntime-web", () => {
  const cases: [string, ConvShape, boolean][] = [
    ["Conv", { N: 2, I: 3, H: 6, W: 5, O: 4, kH: 3, kW: 2, groups: 1 }, true],
    [
      "depthwise Conv (group = 3, multiplier 2), no bias",
      { N: 2, I: 3, H: 5, W: 5, O: 6, kH: 2, kW: 2, groups: 3 },
      false,
    ],
  ];
  for (const [name, s, withBias] of cases) {
    it(`${name} → BatchNormalization → Relu = folded ${name} → Relu`, async () => {
      const rng = new Rng(41);
      const eps = 1e-3;
      const p = bnParams(rng, s.O);
      const wDims = [s.O, s.I / s.groups, s.kH, s.kW];
      const w = rng.normals(wDims.reduce((a, d) => a * d, 1));
      const b = withBias ? rng.normals(s.O) : null;
      const x = rng.normals(s.N * s.I * s.H * s.W);
      const X = { X: { data: x, dims: [s.N, s.I, s.H, s.W] } };
      const unfused = onnxModel(
        [
          conv("X", "Z", { data: w, dims: wDims }, b, s.groups),
          batchNormalization("Z", "B", p, { epsilon: eps }),
          relu("B", "Y"),
        ],
        X.X.dims,
        ["Y"],
      );
      const f = foldIntoConv(foldable(p, eps), w, b, { layout: "OIHW", shape: wDims });
      const folded = onnxModel(
        [conv("X", "Z", { data: f.weight, dims: wDims }, f.bias, s.groups), relu("Z", "Y")],
        X.X.dims,
        ["Y"],
      );

      const want = (await runOnnx(unfused, X)).Y?.data ?? [];
      const got = (await runOnnx(folded, X)).Y?.data ?? [];
      const ortFused = (await runOnnx(unfused, X, { optimization: "all" })).Y?.data ?? [];
      const K = (s.I / s.groups) * s.kH * s.kW;
      const tol = (2 * K + 24) * U;
      const scale = errorScale(conv64(abs(x), abs(w), b && abs(b), s), convOutShape(s), p, eps);
      measured[`${name}: folded`] = assertClose("folded", got, want, scale, tol);
      measured[`${name}: ORT's fusion`] = assertClose(
        "ORT's own fusion",
        ortFused,
        want,
        scale,
        tol,
      );
      // Negative control: folding with PyTorch's default eps instead of the graph's 1e-3 misses.
      const wrong = foldIntoConv(foldable(p, 1e-5), w, b);
      const wrongModel = onnxModel(
        [conv("X", "Z", { data: wrong.weight, dims: wDims }, wrong.bias, s.groups), relu("Z", "Y")],
        X.X.dims,
        ["Y"],
      );
      const missed = (await runOnnx(wrongModel, X)).Y?.data ?? [];
      expect(missRatio(missed, want, scale)).toBeGreaterThan(100 * tol);
    });
  }

  it("Gemm (transB=1, PyTorch's [out, in]) → BatchNormalization = folded Gemm", async () => {
    const rng = new Rng(42);
    const [N, IN, OUT] = [6, 9, 5];
    const eps = 1e-5;
    const p = bnParams(rng, OUT);
    const w = rng.normals(OUT * IN);
    const b = rng.normals(OUT);
    const x = rng.normals(N * IN);
    const X = { X: { data: x, dims: [N, IN] } };
    const unfused = onnxModel(
      [gemm("X", "Z", w, b, OUT), batchNormalization("Z", "Y", p)],
      [N, IN],
      ["Y"],
    );
    const f = foldIntoLinear(foldable(p, eps), w, b, { layout: "outIn" });
    const folded = onnxModel([gemm("X", "Y", f.weight, f.bias, OUT)], [N, IN], ["Y"]);

    const want = (await runOnnx(unfused, X)).Y?.data ?? [];
    const got = (await runOnnx(folded, X)).Y?.data ?? [];
    const tol = (2 * IN + 24) * U;
    const scale = errorScale(linear64(abs(x), N, abs(w), abs(b), OUT), [N, OUT], p, eps);
    measured["Gemm: folded"] = assertClose("folded Gemm", got, want, scale, tol);
    // Negative control: the same weight folded as Keras's [in, out] scales the wrong elements.
    const wrong = foldIntoLinear(foldable(p, eps), w, b, { layout: "inOut" });
    const missed =
      (await runOnnx(onnxModel([gemm("X", "Y", wrong.weight, wrong.bias, OUT)], [N, IN], ["Y"]), X))
        .Y?.data ?? [];
    expect(missRatio(missed, want, scale)).toBeGreaterThan(100 * tol);
  });
});
