/**
 * The folds refuse bad arguments with a TypeError or RangeError that names the argument, what was
 * expected and what came, and leave their inputs untouched.
 */
import { describe, expect, it } from "vitest";
import { BatchNorm, foldedAffineOf, foldIntoConv, foldIntoLinear } from "../ts/index.node.js";

/** A stand-in with two channels: scale 2, shift 1. */
const bn2 = {
  numFeatures: 2,
  foldedAffine: () => ({ scale: Float32Array.of(2, 2), shift: Float32Array.of(1, 1) }),
};

describe("fold errors", () => {
  it("refuses a BatchNorm without running statistics", () => {
    const bn = new BatchNorm(3, { backend: "js", trackRunningStats: false });
    expect(() => foldedAffineOf(bn)).toThrow(TypeError);
    expect(() => foldedAffineOf(bn)).toThrow(
      /foldedAffineOf: the BatchNorm has no running statistics \(trackRunningStats: false\).*expected runningMean and runningVar arrays, got null and null/,
    );
    const foldable = { numFeatures: 3, foldedAffine: () => foldedAffineOf(bn) };
    expect(() => foldIntoLinear(foldable, new Float32Array(6))).toThrow(/no running statistics/);
  });

  it("refuses a bn that is not foldable", () => {
    // (A BatchNorm module is foldable since it has foldedAffine(): test/deploy-module.test.ts.)
    expect(() => foldIntoLinear({ numFeatures: 2 } as never, [1, 2])).toThrow(
      /foldIntoLinear: bn must have a positive integer numFeatures and a foldedAffine\(\) method, got Object/,
    );
    expect(() => foldIntoConv(null as never, [1, 2])).toThrow(TypeError);
    // bn and weight are checked before options.shape is compared with them.
    expect(() => foldIntoConv(null as never, [1, 2], null, { shape: [2, 1, 1] })).toThrow(
      /bn must have/,
    );
    expect(() => foldIntoConv(bn2, "ab" as never, null, { shape: [2, 1, 1] })).toThrow(
      /weight must be a Float32Array, Float64Array or array of numbers, got "ab"/,
    );
    const zero = { numFeatures: 0, foldedAffine: bn2.foldedAffine };
    expect(() => foldIntoConv(zero, [1, 2])).toThrow(/numFeatures/);
  });

  it("refuses a weight whose size does not match numFeatures", () => {
    expect(() => foldIntoLinear(bn2, new Float32Array(5))).toThrow(RangeError);
    expect(() => foldIntoLinear(bn2, new Float32Array(5))).toThrow(
      "foldIntoLinear: weight must have a positive multiple of bn.numFeatures = 2 elements (one block per output channel), got 5",
    );
    expect(() => foldIntoConv(bn2, [])).toThrow(/weight must have a positive multiple.*got 0/);
  });

  it("refuses a weight that is not an array of numbers", () => {
    expect(() => foldIntoLinear(bn2, new Int32Array(4))).toThrow(
      "foldIntoLinear: weight must be a Float32Array, Float64Array or array of numbers, got Int32Array(4)",
    );
    expect(() => foldIntoConv(bn2, ["1", "2"] as never)).toThrow(
      /weight must be .* got an array of 2/,
    );
  });

  it("refuses a bias of the wrong length", () => {
    expect(() => foldIntoConv(bn2, new Float32Array(8), [1, 2, 3])).toThrow(
      "foldIntoConv: bias must have 2 elements (one per channel), got 3",
    );
  });

  it("refuses an unknown layout, and options that are not an object", () => {
    expect(() => foldIntoLinear(bn2, [1, 2], null, { layout: "NCHW" as never })).toThrow(
      'foldIntoLinear: options.layout must be "outIn", "inOut", got "NCHW"',
    );
    expect(() => foldIntoConv(bn2, [1, 2], null, { layout: "outIn" as never })).toThrow(
      'foldIntoConv: options.layout must be "OIHW", "OHWI", "HWIO", "HWIM", got "outIn"',
    );
    expect(() => foldIntoConv(bn2, [1, 2], null, 3 as never)).toThrow(TypeError);
  });

  it("checks options.shape against the layout, numFeatures and the weight", () => {
    const w = new Float32Array(2 * 3 * 2 * 2);
    expect(foldIntoConv(bn2, w, null, { layout: "OIHW", shape: [2, 3, 2, 2] }).weight.length).toBe(
      24,
    );
    expect(() => foldIntoConv(bn2, w, null, { layout: "HWIO", shape: [2, 2, 2, 3] })).toThrow(
      'foldIntoConv: options.shape [2, 2, 2, 3] in layout "HWIO" has 3 output channels, expected bn.numFeatures = 2',
    );
    expect(() => foldIntoConv(bn2, w, null, { layout: "OHWI", shape: [3, 2, 2, 2] })).toThrow(
      /has 3 output channels, expected bn.numFeatures = 2/,
    );
    expect(() => foldIntoConv(bn2, w, null, { layout: "HWIM", shape: [2, 2, 2, 2] })).toThrow(
      /has 4 output channels/,
    );
    expect(() => foldIntoConv(bn2, w, null, { shape: [2, 3, 2, 3] })).toThrow(
      "foldIntoConv: weight must have 36 elements for options.shape [2, 3, 2, 3], got 24",
    );
    expect(() => foldIntoConv(bn2, w, null, { shape: [2, 12] })).toThrow(
      /options.shape must list ≥ 3/,
    );
  });

  it("refuses foldedAffine() arrays of the wrong length", () => {
    const bad = { numFeatures: 2, foldedAffine: () => ({ scale: [1], shift: [0, 0] }) };
    expect(() => foldIntoLinear(bad, [1, 2])).toThrow(
      "foldIntoLinear: bn.foldedAffine().scale must have 2 elements (one per channel), got 1",
    );
  });

  it("refuses parameters whose lengths differ, a bad eps, or runningVar + eps ≤ 0", () => {
    const p = { weight: [1, 1], bias: [0, 0], runningMean: [0, 0], runningVar: [1, 1], eps: 1e-5 };
    expect(() => foldedAffineOf({ ...p, weight: [1] })).toThrow(
      "foldedAffineOf: weight must have 2 elements (one per channel), got 1",
    );
    expect(() => foldedAffineOf({ ...p, eps: -1 })).toThrow(
      "foldedAffineOf: eps must be a finite number ≥ 0, got -1",
    );
    expect(() => foldedAffineOf({ ...p, runningVar: [1, 0], eps: 0 })).toThrow(
      "foldedAffineOf: runningVar[1] + eps must be positive and finite, got 0 + 0",
    );
  });

  it("leaves every input untouched and returns new arrays", () => {
    const w = Float32Array.of(1, 2, 3, 4);
    const b = Float64Array.of(5, 6);
    const folded = foldIntoLinear(bn2, w, b, { layout: "inOut" });
    expect([...w, ...b]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(folded.weight).toEqual(Float32Array.of(2, 4, 6, 8));
    expect(folded.bias).toEqual(Float32Array.of(11, 13));
    expect(folded.weight.buffer).not.toBe(w.buffer);
    // undefined bias = a layer without bias: b' = shift.
    expect(foldIntoConv(bn2, w).bias).toEqual(Float32Array.of(1, 1));
  });
});
