/**
 * The cases, data and error scales shared by the renorm and ghost-batch suites
 * (test/variants.test.ts, test/variants-bits.test.ts), and the reference run on them.
 *
 * ## Tolerances
 * - MODULE_TOL = 1e-5 of test/compare.ts's error scales (float32 rounding, as in
 *   test/conformance.test.ts), with r folded into the weight and d into the bias of those scales.
 * - FD_TOL = 1e-7, as in test/gradcheck.test.ts (same step, same argument).
 */
import { BatchNorm } from "../ts/index.node.js";
import { errorScales } from "./compare.js";
import { Rng } from "./random.js";
import { channelOf, type RefLayout } from "./reference.js";
import type { BACKENDS } from "./setup-backends.js";
import { type Limits, type RefVariantForward, variantForward } from "./variants-reference.js";

export const MODULE_TOL = 1e-5;
export const FD_TOL = 1e-7;
export const EPS = 1e-5;
export const H = 1e-4;

export interface Case {
  layout: RefLayout;
  shape: number[];
  k: number | null;
  limits: Limits | null;
}

export const CASES: Case[] = [
  { layout: "NCHW", shape: [8, 3, 5], k: 2, limits: null },
  { layout: "NCHW", shape: [8, 3, 5], k: null, limits: { rMax: 1.5, dMax: 0.5 } },
  { layout: "NCHW", shape: [6, 4, 2, 3], k: 3, limits: { rMax: 1.2, dMax: 0.3 } },
  { layout: "NCHW", shape: [12, 7], k: null, limits: { rMax: 1.1, dMax: 0.2 } },
  { layout: "NHWC", shape: [8, 3, 4], k: 4, limits: null },
  { layout: "NHWC", shape: [6, 2, 2, 5], k: 2, limits: { rMax: 1.5, dMax: 0.5 } },
  { layout: "NHWC", shape: [12, 7], k: 3, limits: { rMax: 2, dMax: 1 } },
  // From 32 channels the SIMD builds do plain batch norm's per-channel math in wasm; these
  // must keep to core.ts's (ghost batches may use it, a renorm correction may not).
  { layout: "NCHW", shape: [8, 33, 3], k: 2, limits: { rMax: 1.5, dMax: 0.5 } },
  { layout: "NHWC", shape: [12, 34], k: null, limits: { rMax: 1.1, dMax: 0.2 } },
];
export const caseName = (k: Case) =>
  `${k.layout} [${k.shape.join(", ")}] k ${k.k ?? "-"}, renorm ${k.limits ? `${k.limits.rMax}/${k.limits.dMax}` : "-"}`;

/**
 * Data whose batch statistics differ from the running ones by enough for r and d to clip: per
 * channel a centre and a spread, running statistics drawn around them (σ_B/σ from ~0.45 to ~2.2,
 * |μ_B − runningMean| up to 1.5 spreads).
 */
export function makeProblem(k: Case, seed: number) {
  const rng = new Rng(seed);
  const C = (k.layout === "NCHW" ? k.shape[1] : k.shape[k.shape.length - 1]) as number;
  const channels = Array.from({ length: C }, () => ({
    centre: rng.range(-2, 2),
    spread: rng.range(0.5, 2),
  }));
  const x = new Float32Array(channelOf(k.shape, k.layout).map((c) => c));
  x.forEach((c, i) => {
    const ch = channels[c] as { centre: number; spread: number };
    x[i] = ch.centre + ch.spread * rng.normal();
  });
  return {
    C,
    x,
    dy: rng.normals(x.length),
    weight: Float32Array.from(channels, () => rng.range(-2, 2)),
    bias: Float32Array.from(channels, () => rng.range(-1, 1)),
    runningMean: Float32Array.from(channels, (ch) => ch.centre + rng.range(-1.5, 1.5) * ch.spread),
    runningVar: Float32Array.from(channels, (ch) => ch.spread ** 2 * rng.range(0.2, 5)),
  };
}

export type Problem = ReturnType<typeof makeProblem>;

/** A module with the case's options and the problem's parameters and running statistics. */
export function moduleFor(k: Case, p: Problem, backend: (typeof BACKENDS)[number], options = {}) {
  const bn = new BatchNorm(p.C, {
    layout: k.layout,
    backend,
    renorm: k.limits,
    virtualBatchSize: k.k,
    ...options,
  });
  bn.weight?.set(p.weight);
  bn.bias?.set(p.bias);
  bn.runningMean?.set(p.runningMean);
  bn.runningVar?.set(p.runningVar);
  return bn;
}

export type Running = { mean: ArrayLike<number>; variance: ArrayLike<number> };

export function reference(
  k: Case,
  p: Problem,
  running: Running = { mean: p.runningMean, variance: p.runningVar },
) {
  const o = { eps: EPS, virtualBatchSize: k.k, limits: k.limits, running };
  return variantForward(p.x, k.shape, k.layout, p.weight, p.bias, o);
}

/** Error scales of each ghost batch, with r in the weight and d in the bias. */
export function scalesOf(f: RefVariantForward, p: Problem) {
  const y = new Float64Array(p.x.length);
  const dx = new Float64Array(p.x.length);
  const dWeight = new Float64Array(p.C);
  const dBias = new Float64Array(p.C);
  let at = 0;
  for (const part of f.parts) {
    const L = part.x.length;
    const w = p.weight.map((v, c) => v * (part.r[c] as number));
    const b = p.bias.map(
      (v, c) => Math.abs(v) + Math.abs((p.weight[c] as number) * (part.d[c] as number)),
    );
    const dy = p.dy.subarray(at, at + L);
    const s = errorScales(
      part.x,
      dy,
      {
        chan: part.chan,
        mean: part.stats.mean,
        variance: part.stats.variance,
        eps: EPS,
        weight: w,
        bias: b,
      },
      true,
    );
    y.set(s.y, at);
    dx.set(s.dx, at);
    for (let i = 0; i < L; i++) {
      const c = part.chan[i] as number;
      dWeight[c] =
        (dWeight[c] as number) + Math.abs(dy[i] as number) * Math.abs(part.d[c] as number);
    }
    s.dWeight.forEach((v, c) => {
      dWeight[c] = (dWeight[c] as number) + v * Math.max(1, part.r[c] as number);
      dBias[c] = (dBias[c] as number) + (s.dBias[c] as number);
    });
    at += L;
  }
  return { y, dx, dWeight, dBias };
}
