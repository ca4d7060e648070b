/**
 * Gradient checks for the scalar loss L = Σᵢ yᵢ·rᵢ (r random, so ∂L/∂y = r), in two honest links:
 *
 * 1. The float64 reference's analytic gradients (test/reference.ts, the paper's chain rule)
 *    against central finite differences of L computed in float64 by the reference's forward:
 *    perturbing every x, every weight and every bias. Finite differences on the float32 module
 *    itself would be noise (a float32 loss changes by ~u·|L| ≈ 1e-7·|L| under a perturbation,
 *    which is as large as the signal for any usable step), so they are done in float64.
 * 2. Each back end's dx, dWeight, dBias against the reference's analytic gradients, with the
 *    conformance suite's float32 tolerance.
 *
 * ## Tolerances
 * - FD_TOL = 1e-7, relative to the error scales of test/compare.ts `errorScales` (the size of
 *   the terms a gradient is made of). The step is h = 1e-4 in the natural unit of the perturbed
 *   quantity (σ̂ of the channel for x, 1 for weight and bias): the central difference's
 *   truncation error is (h²/6)·L‴ ≈ 2e-9 of the gradient scale per unit of L‴ (in those
 *   units), and float64 rounding adds ≈ 2⁻⁵³·Σ|yᵢ·rᵢ|/h ≈ 1e-12 of it. The observed worst is
 *   2e-11; FD_TOL leaves room for an L‴ of ~50 units, and a wrong formula (a missing mean or
 *   variance term is off by O(1/n) ≥ 1e-2 here) fails it by five orders of magnitude.
 * - MODULE_TOL = 1e-5: float32 rounding, justified in test/conformance.test.ts (observed worst
 *   here 1.0e-7 on every back end).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { assertClose, errorScales } from "./compare.js";
import { Rng } from "./random.js";
import {
  backwardBatch,
  backwardConst,
  batchStats,
  channelOf,
  normalize,
  type RefGradients,
  type RefLayout,
} from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";

const FD_TOL = 1e-7;
const MODULE_TOL = 1e-5;
const H = 1e-4;
const EPS = 1e-5;

interface GradCase {
  layout: RefLayout;
  shape: number[];
  /** "train": batch statistics; "eval": running statistics (constants). */
  mode: "train" | "eval";
  affine: boolean;
  trackRunningStats: boolean;
}

const SHAPES: { layout: RefLayout; shape: number[] }[] = [
  { layout: "NCHW", shape: [3, 3, 5] },
  { layout: "NCHW", shape: [2, 5, 2, 3] },
  { layout: "NCHW", shape: [2, 1, 7] },
  { layout: "NCHW", shape: [3, 2] },
  { layout: "NCHW", shape: [2, 17, 3] },
  { layout: "NHWC", shape: [4, 3, 3] },
  { layout: "NHWC", shape: [3, 2, 2, 5] },
  { layout: "NHWC", shape: [6, 4] },
  { layout: "NHWC", shape: [2, 3, 17] },
];

const CASES: GradCase[] = [];
for (const { layout, shape } of SHAPES) {
  CASES.push({ layout, shape, mode: "train", affine: true, trackRunningStats: true });
  CASES.push({ layout, shape, mode: "train", affine: false, trackRunningStats: true });
  CASES.push({ layout, shape, mode: "eval", affine: true, trackRunningStats: true });
  // Inference without running statistics uses batch statistics: gradients flow through them.
  CASES.push({ layout, shape, mode: "eval", affine: true, trackRunningStats: false });
}

const caseName = (k: GradCase) =>
  `${k.layout} [${k.shape.join(", ")}] ${k.mode}, affine ${k.affine}, trackRunningStats ${k.trackRunningStats}`;

interface Problem {
  C: number;
  chan: Int32Array;
  x: Float32Array;
  r: Float32Array;
  weight: Float32Array | null;
  bias: Float32Array | null;
  runningMean: Float32Array;
  runningVar: Float32Array;
  /** Whether the forward uses the batch's own statistics. */
  batch: boolean;
}

function makeProblem(k: GradCase, seed: number): Problem {
  const rng = new Rng(seed);
  const C = (k.layout === "NCHW" ? k.shape[1] : k.shape[k.shape.length - 1]) as number;
  const chan = channelOf(k.shape, k.layout);
  const offset = Array.from({ length: C }, () => rng.range(-2, 2));
  const spread = Array.from({ length: C }, () => rng.range(0.5, 2));
  const x = Float32Array.from(
    chan,
    (c) => (offset[c] as number) + (spread[c] as number) * rng.normal(),
  );
  const r = rng.normals(x.length);
  const weight = k.affine ? Float32Array.from({ length: C }, () => rng.range(-2, 2)) : null;
  const bias = k.affine ? Float32Array.from({ length: C }, () => rng.range(-1, 1)) : null;
  const runningMean = Float32Array.from(offset, (o) => o + 0.3 * rng.normal());
  const runningVar = Float32Array.from(spread, (s) => s * s * rng.range(0.7, 1.4));
  const batch = k.mode === "train" || !k.trackRunningStats;
  return { C, chan, x, r, weight, bias, runningMean, runningVar, batch };
}

/** L = Σ y·r in float64, by the reference's forward. */
function loss(
  p: Problem,
  x: ArrayLike<number>,
  weight: ArrayLike<number> | null,
  bias: ArrayLike<number> | null,
): number {
  let mean: ArrayLike<number> = p.runningMean;
  let variance: ArrayLike<number> = p.runningVar;
  if (p.batch) {
    const s = batchStats(x, p.chan, p.C);
    mean = s.mean;
    variance = s.variance;
  }
  const y = normalize(x, p.chan, mean, variance, EPS, weight, bias);
  let sum = 0;
  for (let i = 0; i < y.length; i++) sum += (y[i] as number) * (p.r[i] as number);
  return sum;
}

function analytic(p: Problem): RefGradients {
  return p.batch
    ? backwardBatch(p.x, p.r, p.chan, batchStats(p.x, p.chan, p.C), EPS, p.weight)
    : backwardConst(p.x, p.r, p.chan, p.runningMean, p.runningVar, EPS, p.weight);
}

function scalesOf(p: Problem) {
  const s = batchStats(p.x, p.chan, p.C);
  const mean = p.batch ? s.mean : p.runningMean;
  const variance = p.batch ? s.variance : p.runningVar;
  return errorScales(
    p.x,
    p.r,
    { chan: p.chan, mean, variance, eps: EPS, weight: p.weight, bias: p.bias },
    p.batch,
  );
}

/** Central differences of L in float64 with respect to x, weight and bias. */
function finiteDifferences(p: Problem): RefGradients {
  const sigma = batchStats(p.x, p.chan, p.C).variance.map((v) => Math.sqrt(v + EPS));
  const x = Float64Array.from(p.x);
  const w = p.weight === null ? null : Float64Array.from(p.weight);
  const b = p.bias === null ? null : Float64Array.from(p.bias);
  const central = (v: Float64Array, i: number, h: number) => {
    const keep = v[i] as number;
    v[i] = keep + h;
    const plus = loss(p, x, w, b);
    v[i] = keep - h;
    const minus = loss(p, x, w, b);
    v[i] = keep;
    return (plus - minus) / (2 * h);
  };
  const dx = x.map((_, i) => central(x, i, H * (sigma[p.chan[i] as number] as number)));
  const dWeight = w === null ? new Float64Array(p.C) : w.map((_, c) => central(w, c, H));
  const dBias = b === null ? new Float64Array(p.C) : b.map((_, c) => central(b, c, H));
  return { dx, dWeight, dBias };
}

beforeAll(async () => {
  await initFromDist();
});

describe("the float64 reference's gradients match central finite differences", () => {
  it.each(CASES.map((k, i) => [caseName(k), k, i] as const))("%s", (_name, k, i) => {
    const p = makeProblem(k, 1000 + i);
    const fd = finiteDifferences(p);
    const an = analytic(p);
    const sc = scalesOf(p);
    assertClose("dx", an.dx, fd.dx, sc.dx, FD_TOL);
    if (k.affine) {
      assertClose("dWeight", an.dWeight, fd.dWeight, sc.dWeight, FD_TOL);
      assertClose("dBias", an.dBias, fd.dBias, sc.dBias, FD_TOL);
    }
  });

  it("finite differences can tell a wrong gradient (dx without the Σdy·x̂ term)", () => {
    // The check has teeth: dropping the variance path's term from the reference's dx (what a
    // buggy backward that treated σ² as a constant would give) misses far beyond FD_TOL.
    const k = CASES[0] as GradCase;
    const p = makeProblem(k, 1000);
    const fd = finiteDifferences(p);
    const stats = batchStats(p.x, p.chan, p.C);
    const wrong = backwardConst(p.x, p.r, p.chan, stats.mean, stats.variance, EPS, p.weight);
    expect(() => assertClose("dx", wrong.dx, fd.dx, scalesOf(p).dx, FD_TOL)).toThrow();
  });
});

describe.each(BACKENDS)("module gradients match the float64 reference: %s back end", (backend) => {
  it.each(CASES.map((k, i) => [caseName(k), k, i] as const))("%s", (_name, k, i) => {
    const p = makeProblem(k, 1000 + i);
    const bn = new BatchNorm(p.C, {
      eps: EPS,
      affine: k.affine,
      trackRunningStats: k.trackRunningStats,
      layout: k.layout,
      backend,
    });
    try {
      if (k.affine) {
        bn.weight?.set(p.weight as Float32Array);
        bn.bias?.set(p.bias as Float32Array);
      }
      if (k.trackRunningStats) {
        bn.runningMean?.set(p.runningMean);
        bn.runningVar?.set(p.runningVar);
      }
      bn.train(k.mode === "train");
      const y = bn.forward(p.x, k.shape);
      const g = bn.backward(p.r);
      const an = analytic(p);
      const sc = scalesOf(p);
      // The forward too, as the loss the gradients belong to.
      const s = batchStats(p.x, p.chan, p.C);
      const yRef = p.batch
        ? normalize(p.x, p.chan, s.mean, s.variance, EPS, p.weight, p.bias)
        : normalize(p.x, p.chan, p.runningMean, p.runningVar, EPS, p.weight, p.bias);
      assertClose(`${backend}: y`, y, yRef, sc.y, MODULE_TOL);
      assertClose(`${backend}: dx`, g.dx, an.dx, sc.dx, MODULE_TOL);
      if (k.affine) {
        assertClose(
          `${backend}: dWeight`,
          g.dWeight as Float32Array,
          an.dWeight,
          sc.dWeight,
          MODULE_TOL,
        );
        assertClose(`${backend}: dBias`, g.dBias as Float32Array, an.dBias, sc.dBias, MODULE_TOL);
      } else {
        expect(g.dWeight).toBeNull();
        expect(g.dBias).toBeNull();
      }
    } finally {
      bn.dispose();
    }
  });
});
