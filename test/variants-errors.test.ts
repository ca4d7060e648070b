/**
 * Bad `renorm` and `virtualBatchSize` values are TypeErrors or RangeErrors that name the option,
 * what was expected and what came, and leave the module (or the caller's arrays) as they were.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm, batchNorm, batchNormBackward } from "../ts/index.node.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameState } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

const RENORM_BAD: [unknown, ErrorConstructor, RegExp][] = [
  [3, TypeError, /options\.renorm must be \{ rMax, dMax \} or null, got 3/],
  [[1, 0], TypeError, /options\.renorm must be/],
  [{ rMax: "2", dMax: 0 }, TypeError, /options\.renorm\.rMax must be a number ≥ 1, got "2"/],
  [{ rMax: 2 }, TypeError, /options\.renorm\.dMax must be a number ≥ 0, got undefined/],
  [{ rMax: 0.5, dMax: 0 }, RangeError, /options\.renorm\.rMax must be ≥ 1, got 0\.5/],
  [{ rMax: Number.NaN, dMax: 0 }, RangeError, /options\.renorm\.rMax must be ≥ 1, got NaN/],
  [{ rMax: 2, dMax: -1 }, RangeError, /options\.renorm\.dMax must be ≥ 0, got -1/],
];

const K_BAD: [unknown, ErrorConstructor, RegExp][] = [
  [0, RangeError, /options\.virtualBatchSize must be a positive integer or null, got 0/],
  [2.5, RangeError, /options\.virtualBatchSize must be a positive integer or null, got 2\.5/],
  ["4", TypeError, /options\.virtualBatchSize must be a positive integer or null, got "4"/],
];

describe.each(BACKENDS)("variant option errors: %s back end", (backend) => {
  it.each(RENORM_BAD)("renorm %j", (renorm, type, message) => {
    expect(() => new BatchNorm(3, { backend, renorm: renorm as never })).toThrow(type);
    expect(() => new BatchNorm(3, { backend, renorm: renorm as never })).toThrow(message);
    // The setter refuses the same values and keeps the limits it had.
    const bn = new BatchNorm(3, { backend, renorm: { rMax: 2, dMax: 1 } });
    expect(() => {
      bn.renorm = renorm as never;
    }).toThrow(type);
    expect(bn.renorm).toEqual({ rMax: 2, dMax: 1 });
    bn.dispose();
  });

  it.each(K_BAD)("virtualBatchSize %j", (k, type, message) => {
    expect(() => new BatchNorm(3, { backend, virtualBatchSize: k as never })).toThrow(type);
    expect(() => new BatchNorm(3, { backend, virtualBatchSize: k as never })).toThrow(message);
  });

  it("renorm needs trackRunningStats, in the options and through the setter", () => {
    expect(
      () => new BatchNorm(3, { backend, trackRunningStats: false, renorm: { rMax: 2, dMax: 1 } }),
    ).toThrow(/options\.renorm needs trackRunningStats: true .*got trackRunningStats: false/);
    const bn = new BatchNorm(3, { backend, trackRunningStats: false });
    expect(() => {
      bn.renorm = { rMax: 2, dMax: 1 };
    }).toThrow(TypeError);
    bn.renorm = null; // none is fine
    expect(bn.renorm).toBeNull();
    bn.dispose();
  });

  it("a batch size that is not a multiple of virtualBatchSize names both; nothing changes", () => {
    const bn = new BatchNorm(3, { backend, virtualBatchSize: 4 });
    const twin = new BatchNorm(3, { backend });
    expect(() => bn.forward(new Float32Array(6 * 3), [6, 3])).toThrow(
      /the batch size 6 \(input shape \[6, 3\]\) is not a multiple of virtualBatchSize 4/,
    );
    expect(() => bn.forward(new Float32Array(6 * 3), [6, 3])).toThrow(RangeError);
    // A ghost batch of one value per channel: its variance would be 0/0.
    const one = new BatchNorm(3, { backend, virtualBatchSize: 1 });
    expect(() => one.forward(new Float32Array(4 * 3), [4, 3])).toThrow(
      /more than 1 value per channel in each ghost batch of virtualBatchSize 1/,
    );
    expectSameState(bn, twin);
    // Inference with running statistics does not split the batch: any size goes.
    bn.eval();
    expect(bn.forward(new Float32Array(6 * 3), [6, 3])).toHaveLength(18);
    for (const m of [bn, twin, one]) m.dispose();
  });

  it("the functional ops name the same options, and refuse renorm without running statistics", () => {
    const x = Float32Array.from({ length: 12 }, (_, i) => Math.sin(i));
    const opts = { backend, training: true } as const;
    expect(() => batchNorm(x, [4, 3], { ...opts, renorm: { rMax: 2, dMax: 1 } })).toThrow(
      /batchNorm: options\.renorm needs options\.runningMean and options\.runningVar/,
    );
    expect(() => batchNorm(x, [4, 3], { ...opts, virtualBatchSize: 3 })).toThrow(
      /batchNorm: the batch size 4 .* not a multiple of virtualBatchSize 3/,
    );
    expect(() => batchNorm(x, [4, 3], { ...opts, renorm: { rMax: 0, dMax: 1 } })).toThrow(
      RangeError,
    );
    expect(() =>
      batchNormBackward(x, x, [4, 3], {
        ...opts,
        virtualBatchSize: 2,
        mean: [0, 0, 0],
        variance: [1, 1, 1],
      }),
    ).toThrow(/options\.mean and options\.variance must be absent with/);
    // The running statistics a refused call was given are untouched.
    const runningMean = new Float32Array(3);
    const runningVar = new Float32Array(3).fill(1);
    const bad = { ...opts, runningMean, runningVar, virtualBatchSize: 3 };
    expect(() => batchNorm(x, [4, 3], bad)).toThrow(RangeError);
    expect([...runningMean, ...runningVar]).toEqual([0, 0, 0, 1, 1, 1]);
  });
});
