/**
 * foldIntoLinear / foldIntoConv / foldedAffineOf against a float64 reference of the layer
 * followed by BatchNorm in inference mode: `BN(layer(x))` computed in float64 from the float32
 * parameters must equal `layer'(x)` with the folded float32 weights, in every layout.
 *
 * Tolerance: the folded weights are rounded to float32 twice at most (scale = γ/√(var + eps),
 * then W·scale) and the bias three times (shift = β − mean·scale, b·scale, their sum), so
 * |folded − reference| ≤ 4u·S per output with u = 2⁻²⁴ and
 * S = |scale|·(Σ|x·W| + |b| + |mean|) + |β|, the magnitude of the terms added up.
 */
import { describe, expect, it } from "vitest";
import { BatchNorm, foldedAffineOf, foldIntoConv, foldIntoLinear } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { type BnParams, bnParams } from "./peers/data.js";
import {
  type ConvShape,
  conv64,
  convOutShape,
  FROM_OIHW,
  linear64,
  permute,
  TO_OIHW,
} from "./peers/layers64.js";
import { moduleWith } from "./peers/module.js";
import { U, Y_TOL } from "./peers/scales.js";
import { Rng } from "./random.js";
import { channelOf, normalize } from "./reference.js";

const TOL = 4 * U;

/** A real BatchNorm in eval mode with random parameters: the module is what the folds take. */
function evalBatchNorm(rng: Rng, C: number, eps = 1e-5) {
  const p = bnParams(rng, C);
  const bn = moduleWith(p, { backend: "js", eps }).eval();
  return { bn, p, foldable: bn, eps };
}

/** BN(z) in float64 with the parameters `p`, and the error scale S for each output. */
function bnReference(
  z: Float64Array,
  absTerms: Float64Array,
  shape: number[],
  p: BnParams,
  eps: number,
) {
  const chan = channelOf(shape, "NCHW");
  const want = normalize(z, chan, p.mean, p.variance, eps, p.weight, p.bias);
  const scale = Float64Array.from(absTerms, (t, i) => {
    const c = chan[i] as number;
    const s = Math.abs(p.weight[c] as number) / Math.sqrt((p.variance[c] as number) + eps);
    return s * (t + Math.abs(p.mean[c] as number)) + Math.abs(p.bias[c] as number);
  });
  return { want, scale };
}

const abs = (a: ArrayLike<number>) => Float64Array.from(a, Math.abs);

describe("foldIntoLinear", () => {
  const N = 5;
  const IN = 7;
  const OUT = 4;

  for (const layout of ["outIn", "inOut"] as const) {
    for (const withBias of [true, false]) {
      it(`${layout}, ${withBias ? "with" : "null"} bias: BN(x·Wᵀ + b) = x·W'ᵀ + b'`, () => {
        const rng = new Rng(31);
        const { p, foldable, eps } = evalBatchNorm(rng, OUT);
        const w = rng.normals(OUT * IN); // [out, in]
        const b = withBias ? rng.normals(OUT) : null;
        const x = rng.normals(N * IN);
        const given = layout === "outIn" ? w : permute(w, [OUT, IN], [1, 0]);
        const copy = Float32Array.from(given);
        const folded = foldIntoLinear(foldable, given, b, { layout });
        expect(given).toEqual(copy); // input untouched
        const wOutIn =
          layout === "outIn" ? folded.weight : permute(folded.weight, [IN, OUT], [1, 0]);
        const got = linear64(x, N, wOutIn, folded.bias, OUT);
        const terms = linear64(abs(x), N, abs(w), b && abs(b), OUT);
        const ref = bnReference(linear64(x, N, w, b, OUT), terms, [N, OUT], p, eps);
        assertClose("folded linear", got, ref.want, ref.scale, TOL);
      });
    }
  }

  it("defaults to PyTorch's [out, in] and accepts a plain number array", () => {
    const rng = new Rng(32);
    const { foldable } = evalBatchNorm(rng, 2);
    const w = [1, 2, 3, 4, 5, 6];
    expect(foldIntoLinear(foldable, w)).toEqual(
      foldIntoLinear(foldable, w, null, { layout: "outIn" }),
    );
    // [out=2, in=3] and [in=3, out=2] scale different elements: the layout matters.
    expect(foldIntoLinear(foldable, w, null, { layout: "inOut" }).weight).not.toEqual(
      foldIntoLinear(foldable, w).weight,
    );
  });
});

describe("foldIntoConv", () => {
  const plain: ConvShape = { N: 2, I: 3, H: 5, W: 6, O: 4, kH: 3, kW: 2, groups: 1 };
  // PyTorch/ONNX depthwise with channel multiplier 2: groups = in, O = in·2, weight [6, 1, kH, kW].
  const depthwise: ConvShape = { N: 2, I: 3, H: 4, W: 5, O: 6, kH: 2, kW: 3, groups: 3 };

  for (const [name, s] of [
    ["plain", plain],
    ["depthwise ×2", depthwise],
  ] as const) {
    for (const layout of ["OIHW", "OHWI", "HWIO"] as const) {
      for (const withBias of [true, false]) {
        it(`${name}, ${layout}, ${withBias ? "with" : "null"} bias: BN(conv(x, W) + b) = conv(x, W') + b'`, () => {
          const rng = new Rng(33);
          const { p, foldable, eps } = evalBatchNorm(rng, s.O);
          const wShape = [s.O, s.I / s.groups, s.kH, s.kW];
          const w = rng.normals(wShape.reduce((a, d) => a * d, 1));
          const b = withBias ? rng.normals(s.O) : null;
          const x = rng.normals(s.N * s.I * s.H * s.W);
          const given = permute(w, wShape, FROM_OIHW[layout]);
          const givenShape = FROM_OIHW[layout].map((k) => wShape[k] as number);
          const copies = [Float32Array.from(given), b && Float32Array.from(b)];
          const folded = foldIntoConv(foldable, given, b, { layout, shape: givenShape });
          expect([given, b]).toEqual(copies); // inputs untouched
          expect(folded.weight).not.toBe(given);
          const back = permute(folded.weight, givenShape, TO_OIHW[layout]);
          const got = conv64(x, back, folded.bias, s);
          const terms = conv64(abs(x), abs(w), b && abs(b), s);
          const ref = bnReference(conv64(x, w, b, s), terms, convOutShape(s), p, eps);
          assertClose("folded conv", got, ref.want, ref.scale, TOL);
        });
      }
    }
  }

  it("HWIM, TF's depthwise kernel [kH, kW, in, M]: output channel i·M + m", () => {
    const rng = new Rng(34);
    const s = depthwise;
    const M = s.O / s.I;
    const { p, foldable, eps } = evalBatchNorm(rng, s.O);
    const kShape = [s.kH, s.kW, s.I, M];
    const k = rng.normals(s.kH * s.kW * s.I * M);
    const b = rng.normals(s.O);
    const x = rng.normals(s.N * s.I * s.H * s.W);
    const folded = foldIntoConv(foldable, k, b, { layout: "HWIM", shape: kShape });
    // [kH, kW, in, M] → [in, M, kH, kW] = PyTorch's [in·M, 1, kH, kW]: channel i·M + m.
    const toTorch = (a: ArrayLike<number>) => permute(a, kShape, [2, 3, 0, 1]);
    const got = conv64(x, toTorch(folded.weight), folded.bias, s);
    const terms = conv64(abs(x), abs(toTorch(k)), abs(b), s);
    const ref = bnReference(conv64(x, toTorch(k), b, s), terms, convOutShape(s), p, eps);
    assertClose("folded depthwise", got, ref.want, ref.scale, TOL);
  });

  it("negative control: a HWIO kernel folded as if it were OIHW misses", () => {
    const rng = new Rng(36);
    const s = plain;
    const { p, foldable, eps } = evalBatchNorm(rng, s.O);
    const wShape = [s.O, s.I, s.kH, s.kW];
    const w = rng.normals(s.O * s.I * s.kH * s.kW);
    const x = rng.normals(s.N * s.I * s.H * s.W);
    const hwio = permute(w, wShape, FROM_OIHW.HWIO);
    const wrong = foldIntoConv(foldable, hwio, null, { layout: "OIHW" });
    const got = conv64(
      x,
      permute(wrong.weight, [s.kH, s.kW, s.I, s.O], TO_OIHW.HWIO),
      wrong.bias,
      s,
    );
    const terms = conv64(abs(x), abs(w), null, s);
    const ref = bnReference(conv64(x, w, null, s), terms, convOutShape(s), p, eps);
    expect(() => assertClose("wrong layout", got, ref.want, ref.scale, TOL)).toThrow(
      /wrong layout/,
    );
  });

  it("matches the module: BatchNorm.forward in eval mode on conv(x) = conv'(x)", () => {
    const rng = new Rng(35);
    const s = plain;
    const { bn, foldable } = evalBatchNorm(rng, s.O, 1e-3);
    const w = rng.normals(s.O * s.I * s.kH * s.kW);
    const b = rng.normals(s.O);
    const x = rng.normals(s.N * s.I * s.H * s.W);
    const z = conv64(x, w, b, s);
    const y = bn.forward(Float32Array.from(z), convOutShape(s));
    const folded = foldIntoConv(foldable, w, b);
    const got = conv64(x, folded.weight, folded.bias, s);
    const p = {
      weight: bn.weight,
      bias: bn.bias,
      mean: bn.runningMean,
      variance: bn.runningVar,
    } as BnParams;
    const terms = conv64(abs(x), abs(w), abs(b), s);
    const { scale } = bnReference(z, terms, convOutShape(s), p, 1e-3);
    // The module normalizes in float32 (Y_TOL) after z was rounded to float32 (u).
    assertClose("module vs fold", y, got, scale, Y_TOL + TOL + U);
  });
});

describe("foldedAffineOf", () => {
  it("is γ/√(var + eps) and β − mean·γ/√(var + eps), with γ = 1 and β = 0 when affine is false", () => {
    // var + eps = [4, 9]: scale = [2/2, 3/3], shift = [1 − 4·1, −1 − 0.5·1], all exact.
    const r = foldedAffineOf({
      weight: [2, 3],
      bias: [1, -1],
      runningMean: [4, 0.5],
      runningVar: [3, 8],
      eps: 1,
    });
    expect(r.scale).toEqual(Float32Array.from([1, 1]));
    expect(r.shift).toEqual(Float32Array.from([-3, -1.5]));
    const plain = foldedAffineOf(new BatchNorm(2, { backend: "js", affine: false }).eval());
    expect([...plain.scale]).toEqual([1, 1].map(() => Math.fround(1 / Math.sqrt(1 + 1e-5))));
    expect([...plain.shift]).toEqual([0, 0]);
  });
});
