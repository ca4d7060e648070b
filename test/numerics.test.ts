/**
 * Numerics: the large-mean case that breaks E[x²] − E[x]² in float32, and non-finite input.
 *
 * ## Large mean: x = 10000 + N(0, 1), 100 037 values per channel, every back end, both layouts
 * The expected statistics are computed in float64 (two passes) from the float32 data the module
 * sees. With momentum 1 the running statistics after one step are the batch's, so the module's
 * mean and (unbiased) variance can be read from `runningMean` and `runningVar`.
 *
 * - MEAN_TOL = ulp(10000)/2 + 1e-5 ≈ 4.98e-4 (absolute). ulp(10000) = 2⁻¹⁰ ≈ 9.8e-4 is the
 *   float32 spacing at 10000, so a Float32Array can only hold the mean to within half of it;
 *   the computation itself adds ≈ √k·u·σ ≈ 1e-7 (k ≤ 1024 float32 additions of deviations of
 *   size σ = 1 per accumulator, u = 2⁻²⁴), which the 1e-5 covers a hundredfold.
 * - VAR_TOL = 1e-5 (relative), as for the whole conformance suite. A stable algorithm subtracts
 *   a shift that lies within the data from every x: by Sterbenz's lemma x − s is then exact in
 *   float32 (both are within a factor 2 of each other), so only float32 sums of O(1) deviations
 *   and their squares remain, with relative error ≈ √k·u ≈ 2e-6, plus u for storage.
 *   Observed: ≤ 1.5e-6 on the scalar build, ≤ 1.4e-7 on SIMD and JS. (The observed mean error,
 *   up to 4.8e-4, is the half-ulp storage rounding, as expected.)
 * - The output with weight 1, bias 0: mean(y) = (μ − μ₃₂)/σ̂ where μ₃₂ is the float32 mean the
 *   module centred with, so |mean(y)| ≤ MEAN_TOL/σ̂; var(y) = σ²·scale², within 2·VAR_TOL
 *   (relative) of σ²/(σ² + ε) — scale = 1/√(σ̂² + ε) carries half the variance's relative
 *   error, twice over, plus float32 rounding of each y (u, relative).
 * The tolerances have teeth: the test computes the naive float32 E[x²] − E[x]² on the same data
 * with Math.fround (sequentially, and even in blocks of 4096 merged in float64) and asserts that
 * it misses VAR_TOL — by orders of magnitude, since ulp(10000²) = 8 ≫ σ² = 1.
 *
 * ## Non-finite input (PyTorch's behaviour)
 * In training, a NaN or ±Infinity anywhere in a channel makes that channel's batch mean or
 * variance NaN, so every y of that channel is NaN, and so are its running statistics; other
 * channels are untouched. In inference (running statistics) y = a·x + b is elementwise, so only
 * the element itself is non-finite: NaN stays NaN, ±Infinity becomes ±Infinity·sign(a).
 * PyTorch's `nn.BatchNorm2d` behaves the same way; nothing is masked or cleaned.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { assertClose, forwardScales, trainingReference } from "./compare.js";
import { Rng } from "./random.js";
import { batchStats, channelOf, normalize, nth, type RefLayout } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";

const ULP_10000 = 2 ** -10;
const MEAN_TOL = ULP_10000 / 2 + 1e-5;
const VAR_TOL = 1e-5;
/** For the finite channels in the non-finite tests: the conformance suite's tolerance. */
const TOL = 1e-5;

const C = 3;
const PER_CHANNEL = 7 * 14291; // 100 037 values per channel, not a multiple of 4
const LARGE: Record<RefLayout, number[]> = {
  NCHW: [7, C, 14291],
  NHWC: [7, 14291, C],
};

interface Large {
  x: Float32Array;
  chan: Int32Array;
  mean: Float64Array;
  variance: Float64Array;
}

const large = new Map<RefLayout, Large>();
function largeData(layout: RefLayout): Large {
  let d = large.get(layout);
  if (d === undefined) {
    const shape = LARGE[layout];
    const chan = channelOf(shape, layout);
    const rng = new Rng(layout === "NCHW" ? 17 : 71);
    // Means of 10000 ± 0.6, all in [8192, 16384) where ulp = 2⁻¹⁰.
    const x = Float32Array.from(chan, (c) => 10000 + 0.6 * (c - 1) + rng.normal());
    const s = batchStats(x, chan, C);
    d = { x, chan, mean: s.mean, variance: s.variance };
    large.set(layout, d);
  }
  return d;
}

beforeAll(async () => {
  await initFromDist();
});

describe("the naive float32 formula fails the large-mean tolerance (the test has teeth)", () => {
  it.each(["NCHW", "NHWC"] as const)("%s", (layout) => {
    const { x, chan, variance } = largeData(layout);
    const f = Math.fround;
    for (let c = 0; c < C; c++) {
      // Sequential float32 sums of x and x².
      let s1 = 0;
      let s2 = 0;
      // Blocked: float32 sums within blocks of 4096, merged in float64.
      let b1 = 0;
      let b2 = 0;
      let k1 = 0;
      let k2 = 0;
      let inBlock = 0;
      for (let i = 0; i < x.length; i++) {
        if (chan[i] !== c) continue;
        const v = x[i] as number;
        s1 = f(s1 + v);
        s2 = f(s2 + f(v * v));
        k1 = f(k1 + v);
        k2 = f(k2 + f(v * v));
        if (++inBlock === 4096) {
          b1 += k1;
          b2 += k2;
          k1 = k2 = inBlock = 0;
        }
      }
      b1 += k1;
      b2 += k2;
      const n = PER_CHANNEL;
      const m = f(s1 / n);
      const naive = f(f(s2 / n) - f(m * m));
      const blocked = b2 / n - (b1 / n) ** 2;
      const truth = variance[c] as number;
      expect(Math.abs(naive - truth) / truth, `naive, channel ${c}`).toBeGreaterThan(100 * VAR_TOL);
      expect(Math.abs(blocked - truth) / truth, `blocked naive, channel ${c}`).toBeGreaterThan(
        100 * VAR_TOL,
      );
    }
  });
});

describe.each(BACKENDS)("large mean, x = 10000 + N(0, 1): %s back end", (backend) => {
  it.each(["NCHW", "NHWC"] as const)("%s: mean, variance and normalized output", (layout) => {
    const { x, chan, mean, variance } = largeData(layout);
    const bn = new BatchNorm(C, { momentum: 1, layout, backend });
    try {
      const y = bn.forward(x, LARGE[layout]);
      const n = PER_CHANNEL;
      const rm = bn.runningMean as Float32Array;
      const rv = bn.runningVar as Float32Array;
      for (let c = 0; c < C; c++) {
        const mu = mean[c] as number;
        const v = variance[c] as number;
        expect(
          Math.abs((rm[c] as number) - mu),
          `${backend} ${layout} mean, channel ${c}`,
        ).toBeLessThanOrEqual(MEAN_TOL);
        // runningVar holds the unbiased variance; take the biased one back out of it.
        const biased = ((rv[c] as number) * (n - 1)) / n;
        expect(
          Math.abs(biased - v) / v,
          `${backend} ${layout} variance, channel ${c}`,
        ).toBeLessThanOrEqual(VAR_TOL);
      }
      // y's own statistics, per channel, in float64.
      const ys = batchStats(y, chan, C);
      for (let c = 0; c < C; c++) {
        const v = variance[c] as number;
        const sigma = Math.sqrt(v + 1e-5);
        expect(
          Math.abs(ys.mean[c] as number),
          `${backend} ${layout} mean(y), channel ${c}`,
        ).toBeLessThanOrEqual(MEAN_TOL / sigma);
        const want = v / (v + 1e-5);
        expect(
          Math.abs((ys.variance[c] as number) - want) / want,
          `${backend} ${layout} var(y), channel ${c}`,
        ).toBeLessThanOrEqual(2 * VAR_TOL);
      }
    } finally {
      bn.dispose();
    }
  });
});

/** Small tensors with a non-finite value put in one channel. */
/**
 * After a channel's first block, the kernels centre each block on the channel's mean so far
 * (see the essay in crates/batchnorm/src/kernels.rs). Data sorted by value, or with a first
 * block far from the rest, is where that shift is farthest from a block's own mean: the same
 * tolerances must hold there too.
 */
const DRIFTING: Record<string, (k: number, n: number, rng: Rng) => number> = {
  "sorted ramp 10000 ± 3": (k, n, rng) => 10000 + (6 * k) / n - 3 + 0.01 * rng.normal(),
  "first 5000 values 1000 higher": (k, _n, rng) => 10000 + (k < 5000 ? 1000 : 0) + rng.normal(),
};

describe.each(BACKENDS)("drifting data, x ≈ 10000: %s back end", (backend) => {
  for (const [name, value] of Object.entries(DRIFTING)) {
    it.each(["NCHW", "NHWC"] as const)(`${name}, %s: mean and variance`, (layout) => {
      const shape = LARGE[layout];
      const chan = channelOf(shape, layout);
      const rng = new Rng(5);
      const seen = new Int32Array(C);
      const x = Float32Array.from(chan, (c) => value((seen[c] as number)++, PER_CHANNEL, rng));
      const { mean, variance } = batchStats(x, chan, C);
      const bn = new BatchNorm(C, { momentum: 1, layout, backend });
      try {
        bn.forward(x, shape);
        const n = PER_CHANNEL;
        for (let c = 0; c < C; c++) {
          const rm = (bn.runningMean as Float32Array)[c] as number;
          const biased = (((bn.runningVar as Float32Array)[c] as number) * (n - 1)) / n;
          // Means lie in [8192, 16384), where ulp = 2⁻¹⁰: MEAN_TOL as above.
          expect(Math.abs(rm - (mean[c] as number)), `mean, channel ${c}`).toBeLessThanOrEqual(
            MEAN_TOL,
          );
          const v = variance[c] as number;
          expect(Math.abs(biased - v) / v, `variance, channel ${c}`).toBeLessThanOrEqual(VAR_TOL);
        }
      } finally {
        bn.dispose();
      }
    });
  }
});

const SMALL: { layout: RefLayout; shape: number[] }[] = [
  { layout: "NCHW", shape: [3, C, 7] },
  { layout: "NCHW", shape: [5, C] },
  { layout: "NHWC", shape: [3, 7, C] },
  { layout: "NHWC", shape: [2, 3, 3, C] },
];

function smallData(shape: number[], layout: RefLayout, seed: number) {
  const chan = channelOf(shape, layout);
  const rng = new Rng(seed);
  const x = Float32Array.from(chan, (c) => c - 1 + (1 + c) * rng.normal());
  return { chan, x };
}

describe.each(BACKENDS)("non-finite input propagates like PyTorch: %s back end", (backend) => {
  for (const { layout, shape } of SMALL) {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      it(`training, ${bad} in channel 1: ${layout} [${shape.join(", ")}]`, () => {
        const { chan, x } = smallData(shape, layout, 5);
        const poisoned = 1;
        const at = nth(chan, poisoned, 2);
        x[at] = bad;
        const bn = new BatchNorm(C, { layout, backend });
        try {
          const y = bn.forward(x, shape);
          // Expected for the clean channels: the reference on the same data.
          const { y: yRef, scale } = trainingReference(x, chan, C);
          for (let i = 0; i < y.length; i++) {
            if (chan[i] === poisoned) {
              expect(y[i], `y[${i}] (channel ${poisoned})`).toBeNaN();
            } else {
              expect(Number.isFinite(y[i]), `y[${i}] (channel ${chan[i]}) is finite`).toBe(true);
            }
          }
          const clean = (a: ArrayLike<number>) =>
            Array.from(a).filter((_, i) => chan[i] !== poisoned);
          assertClose("clean channels of y", clean(y), clean(yRef), clean(scale), TOL);
          const rm = bn.runningMean as Float32Array;
          const rv = bn.runningVar as Float32Array;
          for (let c = 0; c < C; c++) {
            if (c === poisoned) {
              expect(rv[c], "runningVar of the poisoned channel").toBeNaN();
              // The mean is NaN for a NaN, and ±Infinity or NaN for an infinity.
              expect(Number.isFinite(rm[c]), "runningMean of the poisoned channel").toBe(false);
            } else {
              expect(Number.isFinite(rm[c]) && Number.isFinite(rv[c]), `channel ${c} stats`).toBe(
                true,
              );
            }
          }
        } finally {
          bn.dispose();
        }
      });

      it(`inference, ${bad} at one element: ${layout} [${shape.join(", ")}]`, () => {
        const { chan, x } = smallData(shape, layout, 6);
        const at = nth(chan, 1, 2);
        x[at] = bad;
        const bn = new BatchNorm(C, { layout, backend });
        try {
          const runningMean = Float32Array.of(0.5, -1, 2);
          const runningVar = Float32Array.of(2, 0.5, 3);
          const weight = Float32Array.of(1.5, -0.75, 2);
          const bias = Float32Array.of(0.25, 1, -0.5);
          bn.loadStateDict({
            weight,
            bias,
            running_mean: runningMean,
            running_var: runningVar,
            num_batches_tracked: 10,
          });
          bn.eval();
          const y = bn.forward(x, shape);
          // weight[1] < 0: +Infinity maps to −Infinity. NaN stays NaN.
          const want = Number.isNaN(bad) ? Number.NaN : -bad;
          if (Number.isNaN(want)) expect(y[at]).toBeNaN();
          else expect(y[at]).toBe(want);
          const yRef = normalize(x, chan, runningMean, runningVar, 1e-5, weight, bias);
          // Error scales from the finite data (the bad element would make its channel's infinite).
          const finite = x.map((v, i) => (i === at ? 0 : v));
          const scale = forwardScales(finite, {
            chan,
            mean: runningMean,
            variance: runningVar,
            eps: 1e-5,
            weight,
            bias,
          });
          const others = (a: ArrayLike<number>) => Array.from(a).filter((_, i) => i !== at);
          for (const v of others(y)) expect(Number.isFinite(v)).toBe(true);
          assertClose("the other elements of y", others(y), others(yRef), others(scale), TOL);
        } finally {
          bn.dispose();
        }
      });
    }
  }
});
