/**
 * BatchNorm.fromKeras / fromOnnx and bn.toKeras() / toOnnx() on every back end: defaults,
 * momentum flipped both ways, the biased estimator, copies in and out, modules without a bias or
 * a weight (Keras's `center: false` / `scale: false`), and the named errors. The peers
 * themselves run in test/deploy-onnx.test.ts and test/deploy-tfjs.test.ts.
 *
 * A module without a bias or weight is compared bit for bit with an affine twin whose bias is 0
 * or weight 1: the passes treat a missing parameter as that value, so every output must agree.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { bnParams } from "./peers/data.js";
import { kerasWeights, onnxInputs } from "./peers/module.js";
import { Rng } from "./random.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";

const C = 3;
const SHAPE = [4, 2, 3]; // NHWC, Keras's default layout: n = 8 values per channel

beforeAll(async () => {
  await initFromDist();
});

/** Keras weights of `bnParams(seed)`. */
const keras = (seed: number) => kerasWeights(bnParams(new Rng(seed), C));

/** The same arrays under ONNX's names. */
const onnx = (w: ReturnType<typeof keras>) =>
  onnxInputs({ weight: w.gamma, bias: w.beta, mean: w.movingMean, variance: w.movingVariance });

describe.each(BACKENDS)("conversions on the %s back end", (backend) => {
  it("fromKeras: Keras's defaults, momentum flipped, biased estimator, copies of the weights", () => {
    const w = keras(1);
    const bn = BatchNorm.fromKeras(w, { backend });
    expect([bn.momentum, bn.eps, bn.layout, bn.runningVarEstimator]).toEqual([
      0.01,
      1e-3,
      "NHWC",
      "biased",
    ]);
    expect([bn.affine, bn.trackRunningStats, bn.training, bn.numBatchesTracked]).toEqual([
      true,
      true,
      true,
      0,
    ]);
    expect(bn.backend).toBe(backend);
    expectSameBits("weight", bn.weight, w.gamma);
    expectSameBits("bias", bn.bias, w.beta);
    expectSameBits("runningMean", bn.runningMean, w.movingMean);
    expectSameBits("runningVar", bn.runningVar, w.movingVariance);
    w.gamma[0] = 99; // the module holds copies
    expect(bn.weight?.[0]).not.toBe(99);
    bn.dispose();
  });

  it("fromOnnx: the operator's defaults, momentum flipped, biased estimator", () => {
    const w = keras(2);
    const bn = BatchNorm.fromOnnx(onnx(w), { backend });
    expect([bn.momentum, bn.eps, bn.layout, bn.runningVarEstimator]).toEqual([
      0.1,
      1e-5,
      "NCHW",
      "biased",
    ]);
    expectSameBits("weight", bn.weight, w.gamma);
    expectSameBits("bias", bn.bias, w.beta);
    expectSameBits("runningMean", bn.runningMean, w.movingMean);
    expectSameBits("runningVar", bn.runningVar, w.movingVariance);
    bn.dispose();
  });

  it("toKeras / toOnnx give back what came in (copies), momentum exactly", () => {
    const w = keras(3);
    for (const momentum of [0.99, 0.9, 0.95, 0.999, 0.5, 0.123456789, 0, 1]) {
      const bn = BatchNorm.fromKeras(w, { backend, momentum, epsilon: 1e-4, layout: "NCHW" });
      const k = bn.toKeras();
      expect(k.config).toEqual({ momentum, epsilon: 1e-4, center: true, scale: true, axis: 1 });
      const o = BatchNorm.fromOnnx(onnx(w), { backend, momentum, epsilon: 1e-4 }).toOnnx();
      expect(o.attributes).toEqual({ momentum, epsilon: 1e-4 });
      const names = ["gamma", "beta", "movingMean", "movingVariance"] as const;
      const inputs = ["scale", "B", "input_mean", "input_var"] as const;
      names.forEach((name, i) => {
        expectSameBits(name, k.weights[i] ?? null, w[name]);
        expectSameBits(inputs[i] as string, o.initializers[inputs[i] as "B"], w[name]);
      });
      k.weights[0]?.fill(7);
      expect(bn.weight?.[0]).not.toBe(7);
      bn.dispose();
    }
  });

  it("a PyTorch-style module exports with momentum flipped: Keras axis 1 for NCHW, −1 for NHWC", () => {
    const bn = new BatchNorm(C, { backend });
    expect(bn.toKeras().config).toEqual({
      momentum: 0.9,
      epsilon: 1e-5,
      center: true,
      scale: true,
      axis: 1,
    });
    expect(bn.toOnnx().attributes).toEqual({ momentum: 0.9, epsilon: 1e-5 });
    const plain = new BatchNorm(C, { backend, affine: false, momentum: 0.25, layout: "NHWC" });
    const k = plain.toKeras();
    expect(k.config).toEqual({
      momentum: 0.75,
      epsilon: 1e-5,
      center: false,
      scale: false,
      axis: -1,
    });
    expect(k.weights.map((a) => [...a])).toEqual([
      [0, 0, 0],
      [1, 1, 1],
    ]);
    // ONNX's scale and B are required inputs: γ = 1 and β = 0 written out.
    const o = plain.toOnnx().initializers;
    expect([[...o.scale], [...o.B]]).toEqual([
      [1, 1, 1],
      [0, 0, 0],
    ]);
    bn.dispose();
    plain.dispose();
  });

  it("exports are refused without running statistics or with momentum null", () => {
    const untracked = new BatchNorm(C, { backend, trackRunningStats: false });
    const cumulative = new BatchNorm(C, { backend, momentum: null });
    for (const [method, target] of [
      ["toKeras", "Keras"],
      ["toOnnx", "ONNX"],
    ] as const) {
      expect(() => untracked[method]()).toThrow(
        new RangeError(
          `BatchNorm.${method}: the module has no running statistics (trackRunningStats: false), and ${target}'s BatchNormalization needs them`,
        ),
      );
      expect(() => cumulative[method]()).toThrow(
        new RangeError(
          `BatchNorm.${method}: momentum is null (a cumulative average), which ${target} has no equivalent of; expected a number in [0, 1], got null`,
        ),
      );
    }
    untracked.dispose();
    cumulative.dispose();
  });

  for (const [center, scale] of [
    [false, true],
    [true, false],
    [false, false],
  ] as const) {
    it(`center: ${center}, scale: ${scale}: no ${[!center && "bias", !scale && "weight"].filter(Boolean).join(" and no ")}, everywhere`, () => {
      const w = keras(4);
      const weights = {
        ...(scale ? { gamma: w.gamma } : {}),
        ...(center ? { beta: w.beta } : {}),
        movingMean: w.movingMean,
        movingVariance: w.movingVariance,
      };
      const bn = BatchNorm.fromKeras(weights, { backend, center, scale });
      expect(bn.affine).toBe(false);
      expect(bn.weight === null).toBe(!scale);
      expect(bn.bias === null).toBe(!center);
      const keys = [scale && "weight", center && "bias"].filter(Boolean);
      expect(Object.keys(bn.stateDict())).toEqual([
        ...keys,
        "running_mean",
        "running_var",
        "num_batches_tracked",
      ]);
      const k = bn.toKeras();
      expect([k.config.center, k.config.scale, k.weights.length]).toEqual([
        center,
        scale,
        2 + keys.length,
      ]);

      // The affine twin with β = 0 / γ = 1 where the module has none: the same bits everywhere.
      const twin = BatchNorm.fromKeras(
        { ...w, gamma: scale ? w.gamma : [1, 1, 1], beta: center ? w.beta : [0, 0, 0] },
        { backend },
      );
      const rng = new Rng(5);
      const x = rng.normals(24);
      const dy = rng.normals(24);
      expectSameBits("training y", bn.forward(x, SHAPE), twin.forward(x, SHAPE));
      const g = bn.backward(dy);
      const gt = twin.backward(dy);
      expectSameBits("dx", g.dx, gt.dx);
      expectSameBits("dWeight", g.dWeight, scale ? gt.dWeight : null);
      expectSameBits("dBias", g.dBias, center ? gt.dBias : null);
      expectSameBits("runningVar", bn.runningVar, twin.runningVar);
      bn.eval();
      twin.eval();
      expectSameBits("inference y", bn.forward(x, SHAPE), twin.forward(x, SHAPE));
      expectSameBits("foldedAffine", bn.foldedAffine().shift, twin.foldedAffine().shift);

      // loadStateDict wants exactly the module's keys; a refused load changes nothing.
      const before = bn.stateDict();
      const extra = center ? "weight" : "bias";
      expect(() =>
        bn.loadStateDict({ ...before, [extra]: [1, 2, 3], running_mean: [9, 9, 9] }),
      ).toThrow(new RegExp(`unexpected: ${extra}`));
      expectSameBits("runningMean after refusal", bn.runningMean, before.running_mean ?? null);
      bn.resetParameters();
      expect([bn.weight && [...bn.weight], bn.bias && [...bn.bias]]).toEqual([
        scale ? [1, 1, 1] : null,
        center ? [0, 0, 0] : null,
      ]);
      bn.dispose();
      twin.dispose();
    });
  }
});

describe("conversion errors name the argument, what was expected and what came", () => {
  const w = keras(6);
  const cases: [string, () => unknown, ErrorConstructor, string | RegExp][] = [
    [
      "movingMean not an array",
      () => BatchNorm.fromKeras({ ...w, movingMean: "0" as never }),
      TypeError,
      "BatchNorm.fromKeras: weights.movingMean must be a Float32Array, Float64Array or number[], got string",
    ],
    [
      "no channels",
      () =>
        BatchNorm.fromKeras(
          { movingMean: [], movingVariance: [] },
          { center: false, scale: false },
        ),
      RangeError,
      "BatchNorm.fromKeras: weights.movingMean must have at least one channel, got 0 values",
    ],
    [
      "lengths differ",
      () => BatchNorm.fromKeras({ ...w, movingVariance: [1, 1] }),
      RangeError,
      "BatchNorm.fromKeras: weights.movingVariance must have weights.movingMean.length = 3 values, got 2",
    ],
    [
      "gamma missing",
      () =>
        BatchNorm.fromKeras({
          beta: w.beta,
          movingMean: w.movingMean,
          movingVariance: w.movingVariance,
        }),
      TypeError,
      "BatchNorm.fromKeras: weights.gamma must be given when options.scale is true, got undefined",
    ],
    [
      "beta with center: false",
      () => BatchNorm.fromKeras(w, { center: false }),
      TypeError,
      "BatchNorm.fromKeras: weights.beta must be absent when options.center is false, got Float32Array",
    ],
    [
      "Keras momentum out of range",
      () => BatchNorm.fromKeras(w, { momentum: 1.5 }),
      RangeError,
      "BatchNorm.fromKeras: options.momentum must be in [0, 1], got 1.5",
    ],
    [
      "negative epsilon",
      () => BatchNorm.fromKeras(w, { epsilon: -1 }),
      RangeError,
      "BatchNorm.fromKeras: options.epsilon must be a finite number ≥ 0, got -1",
    ],
    [
      "center not a boolean",
      () => BatchNorm.fromKeras(w, { center: 0 as never }),
      TypeError,
      "BatchNorm.fromKeras: options.center must be a boolean, got 0",
    ],
    [
      "bad layout",
      () => BatchNorm.fromKeras(w, { layout: "NWC" as never }),
      RangeError,
      'BatchNorm.fromKeras: options.layout must be "NCHW" or "NHWC", got "NWC"',
    ],
    [
      "weights not an object",
      () => BatchNorm.fromKeras([w.gamma] as never),
      TypeError,
      "BatchNorm.fromKeras: weights must be an object, got [Float32Array]",
    ],
    [
      "ONNX B missing",
      () => BatchNorm.fromOnnx({ ...onnx(w), B: undefined as never }),
      TypeError,
      "BatchNorm.fromOnnx: initializers.B must be a Float32Array, Float64Array or number[], got undefined",
    ],
    [
      "ONNX scale of the wrong length",
      () => BatchNorm.fromOnnx({ ...onnx(w), scale: [1, 2, 3, 4] }),
      RangeError,
      "BatchNorm.fromOnnx: initializers.scale must have numFeatures = 3 values, got 4",
    ],
    [
      "ONNX backend",
      () => BatchNorm.fromOnnx(onnx(w), { backend: "gpu" as never }),
      RangeError,
      /^BatchNorm.fromOnnx: options.backend must be "auto", "simd", "scalar" or "js", got "gpu"$/,
    ],
  ];
  it.each(cases)("%s", (_, call, kind, message) => {
    expect(call).toThrow(kind);
    expect(call).toThrow(message);
  });
});
