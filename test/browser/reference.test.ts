/**
 * The browser tests' float64 reference (reference.ts): it agrees with the project's independent
 * one, and its tolerance is tight enough to tell PyTorch's conventions from the usual mistakes.
 */
import { describe, expect, it } from "vitest";
import { RefBatchNorm } from "../reference.js";
import { MAX_ULPS, type Reference, reference, ulpsOff } from "./reference.js";

describe("the browser tests' reference", () => {
  it("agrees with the project's independent reference (test/reference.ts)", () => {
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
    const theirs = new RefBatchNorm(5);
    theirs.weight?.set(input.weight);
    theirs.bias?.set(input.bias);
    const y = theirs.forward(input.x, shape);
    const g = theirs.backward(input.dy);
    const close = (a: ArrayLike<number>, b: readonly number[]) => {
      expect(a.length).toBe(b.length);
      for (let i = 0; i < b.length; i++) {
        expect(Math.abs((a[i] ?? 0) - (b[i] ?? 0))).toBeLessThanOrEqual(
          1e-9 * (1 + Math.abs(b[i] ?? 0)),
        );
      }
    };
    close(y, mine.y);
    close(g.dx, mine.dx);
    close(g.dWeight, mine.dWeight);
    close(g.dBias, mine.dBias);
    close(theirs.runningMean ?? [], mine.runningMean);
    close(theirs.runningVar ?? [], mine.runningVar);
    theirs.eval();
    close(theirs.forward(input.x2, shape), mine.yEval);
    close(theirs.backward(input.dy).dx, mine.dxEval);
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
