/**
 * A module reuses its inference coefficients while its weight and running variance keep their
 * bits (ts/coefficient-cache.ts). Every way the state or the module's buffers can change between
 * two inference calls must still give the output of a module that computes them afresh: a twin
 * made from the same state dict just before the call, bit for bit. A negative control shows
 * that a cache that misses a change fails these comparisons.
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { Backend } from "../ts/backend.js";
import { BatchNorm, type BatchNormOptions } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

const C = 6;
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
    const refresh = backend.refresh;
    backend.refresh = () => true;
    try {
      expect(() => changes(bn, (what) => expectFresh(bn, options, what))).toThrow(
        /weight written in place: copy/,
      );
    } finally {
      backend.refresh = refresh;
      bn.dispose();
    }
  });
});
