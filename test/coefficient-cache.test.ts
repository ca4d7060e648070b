/**
 * A module reuses its inference coefficients while its weight and running variance keep their
 * bits (ts/coefficient-cache.ts). Every way the state or the module's buffers can change between
 * two inference calls must still give the output of a module that computes them afresh: a twin
 * made from the same state dict just before the call, bit for bit. Only the wasm back ends
 * cache; on the JS back end the same comparisons hold by construction. Negative controls show
 * that a cache that misses a change, or is not invalidated, fails these comparisons.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { Backend } from "../ts/backend.js";
import { CoefficientCache } from "../ts/coefficient-cache.js";
import { BatchNorm, type BatchNormOptions } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

// 7 channels: the two arrays compared are 14 words, so the SIMD comparison has a tail of
// single words, and a change in the last one (below) must be seen too.
const C = 7;
const N = 3;
// x − runningMean > 0 everywhere, so that the sign of a zero scale shows in y (below).
const x = Float32Array.from({ length: N * C }, (_, i) => 1 + ((i * 7) % 5) * 0.75);

/** y of `bn` (copy and zero-copy calls) against a module made afresh from its state. */
function expectFresh(bn: BatchNorm, options: BatchNormOptions, what: string): void {
  const twin = new BatchNorm(C, options);
  twin.loadStateDict(bn.stateDict());
  twin.eval();
  const want = twin.forward(x, [N, C]);
  expectSameBits(`${what}: copy`, bn.forward(x, [N, C]), want);
  const t = bn.tensor([N, C]);
  t.data.set(x);
  const y = bn.forward(t);
  expectSameBits(`${what}: zero-copy`, y.data, want);
  t.dispose();
  y.dispose();
  twin.dispose();
}

/** The changes between inference calls, each checked by `check` after it. */
function changes(bn: BatchNorm, check: (what: string) => void): void {
  const weight = bn.weight as Float32Array;
  const bias = bn.bias as Float32Array;
  const mean = bn.runningMean as Float32Array;
  const variance = bn.runningVar as Float32Array;
  check("first call");
  check("second call (cached)");
  weight[3] = 2.5;
  check("weight written in place");
  variance[0] = 7;
  check("runningVar written in place");
  variance[C - 1] = 3;
  check("the last channel's runningVar (the comparison's tail)");
  // y = (x − mean)·(±0) + (−0): +0 with weight +0, −0 with weight −0 (x − mean > 0).
  bias[1] = -0;
  weight[1] = 0;
  check("weight +0");
  weight[1] = -0;
  check("weight −0");
  variance[2] = Number.NaN;
  check("runningVar NaN");
  variance[2] = 0.5;
  check("runningVar back from NaN");
  bias[4] = -3;
  mean[5] = 0.25;
  check("bias and runningMean written in place");
  const state = bn.stateDict();
  bn.loadStateDict({
    ...state,
    weight: state.weight?.fill(1.5),
    running_var: state.running_var?.fill(2),
  });
  check("loadStateDict");
  bn.resetParameters();
  check("resetParameters");
  // A training forward that leaves the running statistics as they were (momentum 0) still
  // overwrites the buffers the coefficients live in.
  bn.train();
  bn.forward(x, [N, C]);
  bn.eval();
  check("after a training forward");
  // A backward after an inference forward writes none of the cached coefficients today; the
  // module invalidates anyway (defensively), and this checks that a backward leaves the cache
  // right either way.
  bn.forward(x, [N, C]);
  bn.backward(x);
  check("after an inference forward's backward");
}

describe.each(BACKENDS)("inference coefficients reused on the %s back end", (kind) => {
  const options = {
    backend: kind,
    layout: "NHWC",
    momentum: 0,
  } as const satisfies BatchNormOptions;

  it("give a fresh module's output after every change of state", () => {
    const bn = new BatchNorm(C, options);
    bn.eval();
    changes(bn, (what) => expectFresh(bn, options, what));
    bn.dispose();
  });

  it("with a fused activation", () => {
    const fused = { ...options, activation: "leakyRelu", negativeSlope: 0.5 } as const;
    const bn = new BatchNorm(C, fused);
    bn.eval();
    changes(bn, (what) => expectFresh(bn, fused, what));
    bn.dispose();
  });
});

describe("negative control", () => {
  it("a cache that never sees a change fails the comparison", () => {
    const backend = resolveBackend("simd") as Backend & { refresh: Backend["refresh"] };
    expect(backend.refresh).toBeTypeOf("function");
    const options = { backend: "simd", layout: "NHWC", momentum: 0 } as const;
    const bn = new BatchNorm(C, options);
    bn.eval();
    backend.refresh = () => true;
    try {
      expect(() => changes(bn, (what) => expectFresh(bn, options, what))).toThrow(
        /weight written in place: copy/,
      );
    } finally {
      // The stub was an own property over the prototype's method.
      delete (backend as Backend).refresh;
      bn.dispose();
    }
    expect(backend.refresh).toBeTypeOf("function");
  });

  it("a cache that a training forward does not invalidate fails the comparison", () => {
    const invalidate = Object.getOwnPropertyDescriptor(CoefficientCache.prototype, "invalidate");
    const options = { backend: "simd", layout: "NHWC", momentum: 0 } as const;
    const bn = new BatchNorm(C, options);
    bn.eval();
    CoefficientCache.prototype.invalidate = () => {};
    try {
      expect(() => changes(bn, (what) => expectFresh(bn, options, what))).toThrow(
        /after a training forward: copy/,
      );
    } finally {
      Object.defineProperty(
        CoefficientCache.prototype,
        "invalidate",
        invalidate as PropertyDescriptor,
      );
      bn.dispose();
    }
  });
});
