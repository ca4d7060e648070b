/**
 * The browser tests' reference (reference.ts): it runs the page's sequence on the project's
 * float64 reference, and its tolerance is tight enough to tell PyTorch's conventions from the
 * usual mistakes.
 */
import { describe, expect, it } from "vitest";
import { backwardBatch, backwardConst, batchStats, channelOf, normalize } from "../reference.js";
import { MAX_ULPS, type Reference, reference, ulpsOff } from "./reference.js";

describe("the browser tests' reference", () => {
  it("is the page's sequence on the project's reference (test/reference.ts)", () => {
    const r = (seed: number, n: number, offset: number) =>
      Array.from({ length: n }, (_, i) =>
        Math.fround(offset + Math.sin(seed * 1000 + i * 7.3) * 3),
      );
    const shape = [4, 5, 3, 3];
    const input = {
      shape,
      x: r(1, 180, 0).map((v, i) => (Math.floor(i / 9) % 5 === 3 ? v + 1000 : v)),
      dy: r(2, 180, 0),
      x2: r(3, 180, 1),
      weight: [1, 0.5, -1.5, 2, 0.25],
      bias: [0, 0.1, -0.2, 0.3, 1],
      eps: 1e-5,
      momentum: 0.1,
    };
    const mine = reference(input);
    // The same sequence from the reference's free functions: training forward and backward,
    // PyTorch's update of fresh running statistics (0 and 1; unbiased variance, the momentum
    // weighting the batch), then inference with them.
    const { x, dy, x2, weight, bias, eps, momentum } = input;
    const chan = channelOf(shape, "NCHW");
    const stats = batchStats(x, chan, 5);
    const g = backwardBatch(x, dy, chan, stats, eps, weight);
    const n = stats.count;
    const runningMean = stats.mean.map((m) => momentum * m);
    const runningVar = stats.variance.map((v) => 1 - momentum + (momentum * v * n) / (n - 1));
    const close = (a: ArrayLike<number>, b: readonly number[]) => {
      expect(a.length).toBe(b.length);
      for (let i = 0; i < b.length; i++) {
        expect(Math.abs((a[i] ?? 0) - (b[i] ?? 0))).toBeLessThanOrEqual(
          1e-9 * (1 + Math.abs(b[i] ?? 0)),
        );
      }
    };
    close(normalize(x, chan, stats.mean, stats.variance, eps, weight, bias), mine.y);
    close(g.dx, mine.dx);
    close(g.dWeight, mine.dWeight);
    close(g.dBias, mine.dBias);
    close(runningMean, mine.runningMean);
    close(runningVar, mine.runningVar);
    close(normalize(x2, chan, runningMean, runningVar, eps, weight, bias), mine.yEval);
    close(backwardConst(x2, dy, chan, runningMean, runningVar, eps, weight).dx, mine.dxEval);
  });
});

describe("the tolerance", () => {
  it("tells PyTorch's conventions from the usual mistakes", () => {
    const rng = (seed: number) => () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31 - 0.5;
    };
    const r = rng(7);
    const shape = [4, 5, 3, 3];
    const n = 180;
    const input = {
      shape,
      x: Array.from({ length: n }, () => Math.fround(3 * r())),
      dy: Array.from({ length: n }, () => Math.fround(r())),
      x2: Array.from({ length: n }, () => Math.fround(3 * r())),
      weight: [1, 0.5, -1.5, 2, 0.25],
      bias: [0, 0.1, -0.2, 0.3, 1],
      eps: 1e-5,
      momentum: 0.1,
    };
    const ref = reference(input);
    const off = (key: Exclude<keyof Reference, "scale">, other: typeof ref) =>
      ulpsOff(other[key], ref[key], ref.scale[key]);
    // Keras/ONNX momentum (weights the old value), eps 1e-3, and a biased running variance.
    expect(off("runningMean", reference({ ...input, momentum: 0.9 }))).toBeGreaterThan(MAX_ULPS);
    expect(off("y", reference({ ...input, eps: 1e-3 }))).toBeGreaterThan(MAX_ULPS);
    const biased = reference({ ...input, biasedRunningVar: true });
    expect(off("runningVar", biased)).toBeGreaterThan(MAX_ULPS);
    expect(off("yEval", biased)).toBeGreaterThan(MAX_ULPS);
  });
});
