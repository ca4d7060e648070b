/**
 * The conformance suite: one set of cases, run against every back end ("simd", "scalar", "js")
 * and compared with the float64 reference of test/reference.ts.
 *
 * Each case is a shape and layout; each runs every combination of momentum (0.1, null),
 * `affine` and `trackRunningStats`: three training steps (forward + backward on fresh random
 * data, then running statistics checked), one inference forward + backward, and one more
 * training step (the state carries over train → eval → train). Shapes are
 * chosen so that every tail path of the SIMD kernels runs: channel counts 1, 3, 5, 17 (not
 * multiples of 4), 64, and 129 and 131 (from 32 on the SIMD builds' per-channel float64 work
 * runs in wasm, two channels a vector); NCHW spatial sizes 1, 3, 7, 17, 33 and > 4096 (the kernels' 4096-float
 * statistics blocks); NHWC with N·spatial not a multiple of 4, and with more than 4096/C rows so
 * that a channels-last block boundary is crossed with a partial super-row at the end. The same
 * cases run once more through the zero-copy Tensor API (reused output tensor, dx written in
 * place over dy), and once with all three back ends compared with each other.
 *
 * ## Tolerances
 * Every compared value v is checked as |v − ref| ≤ TOL · scale, where `scale` is the size of
 * the terms the float32 computation of v adds up (the usual forward error bound: rounding
 * errors are relative to the terms, not to a result that may cancel). The rule is
 * test/compare.ts's (`errorScales`, `runningScales`), shared by every suite:
 *
 * - y: per channel |a|·(max|x − μ| + |μ|) + |b| with a = γ/√(σ²+ε): the float32 mean carries
 *   an absolute error ∝ |μ|, and (x − μ)·a + b rounds relative to its terms.
 * - dx (training): |γ|/σ̂ · max|dy| · (1 + max|x̂| + |μ|/σ̂), the three terms of
 *   k_dy·dy + k_xc·(x − μ) + k_const, with the float32 μ's error in (x − μ). dx (inference):
 *   |γ|/σ̂ · |dy| per element (dx = a·dy has only relative errors).
 * - dWeight: Σ|dy|·(|x̂| + |μ|/σ̂); dBias: Σ|dy|.
 * - runningMean: |running mean| + √(running var); runningVar: running var.
 *
 * TOL = 1e-5. Justification: float32 has unit roundoff u = 2⁻²⁴ ≈ 6e-8. The kernels sum each
 * channel in float32 within blocks of at most 4096 floats, spread over independent
 * accumulators, and merge blocks in float64: at most ~1024 sequential float32 additions per
 * accumulator (4096 if a build kept a single one), whose rounding errors behave like a random
 * walk, √1024·u ≈ 2e-6 (√4096·u ≈ 4e-6) of the summed magnitudes, plus a few u for the
 * elementwise operations and the float32 storage of results and parameters. The worst ratio
 * observed over this suite is 1.2e-6 (scalar build; SIMD 5.7e-7, JS 1.5e-7), so TOL leaves a
 * margin of ~9× and is still far below what a wrong formula gives: a wrong channel, a missed
 * tail element or a wrong sign is an O(1) error, and eps outside the square root misses by
 * O(1) on the channels whose variance is ≈ eps. (The biased-variance rule is told apart by a
 * dedicated test below, on batches small enough that it misses by > 10·TOL.)
 */
import { beforeAll, describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { assertClose, errorScales, runningScales } from "./compare.js";
import { Rng } from "./random.js";
import { channelOf, RefBatchNorm, type RefLayout } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";

/** See the file header. */
const TOL = 1e-5;
/**
 * SIMD, scalar and JS against each other, with the same error scales: the same bound as against
 * the reference, since each back end's error is a few √k·u of those scales and the differences
 * between two of them are no larger than the sum (observed worst 1.2e-6).
 */
const AGREE_TOL = 1e-5;

interface Case {
  layout: RefLayout;
  shape: number[];
}

const CASES: Case[] = [
  // 2-D [N, C] works with either layout.
  { layout: "NCHW", shape: [7, 1] },
  { layout: "NCHW", shape: [5, 3] },
  { layout: "NHWC", shape: [9, 5] },
  { layout: "NHWC", shape: [11, 17] },
  { layout: "NCHW", shape: [6, 64] },
  { layout: "NHWC", shape: [2, 64] },
  // NCHW, one spatial axis of size 1, 3, 7, 17, 33.
  { layout: "NCHW", shape: [3, 5, 1] },
  { layout: "NCHW", shape: [2, 3, 3] },
  { layout: "NCHW", shape: [3, 17, 7] },
  { layout: "NCHW", shape: [2, 5, 17] },
  { layout: "NCHW", shape: [2, 64, 33] },
  { layout: "NCHW", shape: [3, 1, 33] },
  // NCHW, spatial size a multiple of 4 and 16 (the all-vector path).
  { layout: "NCHW", shape: [3, 3, 16] },
  { layout: "NCHW", shape: [2, 64, 2, 2] },
  // NCHW, 2 and 3 spatial axes.
  { layout: "NCHW", shape: [2, 5, 3, 7] },
  { layout: "NCHW", shape: [3, 3, 5, 5] },
  { layout: "NCHW", shape: [2, 17, 3, 1, 5] },
  { layout: "NCHW", shape: [2, 3, 2, 3, 5] },
  // NCHW with spatial size > 4096: the per-run statistics blocks are crossed.
  { layout: "NCHW", shape: [2, 3, 4099] },
  { layout: "NCHW", shape: [2, 1, 8195] },
  { layout: "NCHW", shape: [2, 5, 3, 1367] },
  // NHWC: N·spatial not a multiple of 4, every C.
  { layout: "NHWC", shape: [3, 7, 1] },
  { layout: "NHWC", shape: [3, 7, 3] },
  { layout: "NHWC", shape: [2, 5, 5] },
  { layout: "NHWC", shape: [3, 11, 17] },
  { layout: "NHWC", shape: [3, 3, 64] },
  { layout: "NHWC", shape: [2, 3, 5, 3] },
  { layout: "NHWC", shape: [3, 2, 3, 5, 17] },
  { layout: "NHWC", shape: [2, 3, 1, 3, 5] },
  // NHWC with multiples of 4 rows and of 4 and 16 channels.
  { layout: "NHWC", shape: [2, 4, 4, 16] },
  { layout: "NHWC", shape: [4, 2, 2, 3] },
  // NHWC with more than 4096/C rows: blocks of whole super-rows, then a partial one.
  { layout: "NHWC", shape: [5, 1639, 1] },
  { layout: "NHWC", shape: [1, 2731, 3] },
  { layout: "NHWC", shape: [1637, 5] },
  { layout: "NHWC", shape: [3, 161, 17] },
  { layout: "NHWC", shape: [1, 131, 64] },
  // From 32 channels the SIMD builds compute the coefficients in wasm (odd counts: a lone
  // last channel there).
  { layout: "NCHW", shape: [3, 131, 5] },
  { layout: "NHWC", shape: [4, 129] },
];

interface Combo {
  momentum: number | null;
  affine: boolean;
  trackRunningStats: boolean;
}

const COMBOS: Combo[] = [];
for (const momentum of [0.1, null]) {
  for (const affine of [true, false]) {
    for (const trackRunningStats of [true, false])
      COMBOS.push({ momentum, affine, trackRunningStats });
  }
}

/** Three training steps, one inference step, then training again (state must carry over). */
const MODES = ["train", "train", "train", "eval", "train"] as const;

/** What one step (a forward and its backward) produced, and the module's state after it. */
interface Step {
  mode: "train" | "eval";
  y: ArrayLike<number>;
  dx: ArrayLike<number>;
  dWeight: ArrayLike<number> | null;
  dBias: ArrayLike<number> | null;
  runningMean: ArrayLike<number> | null;
  runningVar: ArrayLike<number> | null;
  numBatchesTracked: number;
}

/** Error scales of one step's values (see the file header). */
interface Scales {
  y: Float64Array;
  dx: Float64Array;
  dWeight: Float64Array;
  dBias: Float64Array;
  runningMean: Float64Array | null;
  runningVar: Float64Array | null;
}

/** The random inputs of a case: parameters, and x and dy for every step. */
interface Data {
  C: number;
  weight: Float32Array;
  bias: Float32Array;
  xs: Float32Array[];
  dys: Float32Array[];
}

const caseName = (k: Case) => `${k.layout} [${k.shape.join(", ")}]`;
const comboName = (c: Combo) =>
  `momentum ${c.momentum}, affine ${c.affine}, trackRunningStats ${c.trackRunningStats}`;

function seedOf(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

function makeData(k: Case): Data {
  const rng = new Rng(seedOf(caseName(k)));
  const C = (k.layout === "NCHW" ? k.shape[1] : k.shape[k.shape.length - 1]) as number;
  const chan = channelOf(k.shape, k.layout);
  // Per-channel location and spread, kept across steps so that running statistics converge to
  // something; weights of both signs.
  const offset = Array.from({ length: C }, () => rng.range(-3, 3));
  // Channel 2 of every five has a variance of 6e-7 to 1.4e-4, around eps = 1e-5: eps matters.
  const spread = Array.from({ length: C }, (_, c) => (c % 5 === 2 ? 3e-3 : 1) * rng.range(0.25, 4));
  const weight = Float32Array.from(
    { length: C },
    () => rng.range(0.5, 2) * (rng.uniform() < 0.5 ? -1 : 1),
  );
  const bias = Float32Array.from({ length: C }, () => rng.range(-1, 1));
  const xs: Float32Array[] = [];
  const dys: Float32Array[] = [];
  for (let s = 0; s < MODES.length; s++) {
    const x = new Float32Array(chan.length);
    for (let i = 0; i < x.length; i++) {
      const c = chan[i] as number;
      x[i] = (offset[c] as number) + (spread[c] as number) * rng.normal();
    }
    xs.push(x);
    dys.push(rng.normals(chan.length));
  }
  return { C, weight, bias, xs, dys };
}

/**
 * Runs a case on a back end. `api: "copy"` passes Float32Arrays (copied in and out);
 * `api: "tensor"` uses the zero-copy path: tensors in the back end's memory, one output tensor
 * reused by every forward, and backward writing dx in place over dy.
 */
function runModule(
  backend: (typeof BACKENDS)[number],
  k: Case,
  combo: Combo,
  d: Data,
  api: "copy" | "tensor" = "copy",
): Step[] {
  const bn = new BatchNorm(d.C, { ...combo, layout: k.layout, backend });
  const x = api === "tensor" ? bn.tensor(k.shape) : undefined;
  const y = api === "tensor" ? bn.tensor(k.shape) : undefined;
  const dy = api === "tensor" ? bn.tensor(k.shape) : undefined;
  try {
    bn.weight?.set(d.weight);
    bn.bias?.set(d.bias);
    const steps: Step[] = [];
    for (let s = 0; s < MODES.length; s++) {
      const mode = MODES[s] as (typeof MODES)[number];
      bn.train(mode === "train");
      let out: Float32Array;
      let g: { dx: Float32Array; dWeight: Float32Array | null; dBias: Float32Array | null };
      if (x !== undefined && y !== undefined && dy !== undefined) {
        x.data.set(d.xs[s] as Float32Array);
        bn.forward(x, { out: y });
        out = y.data.slice();
        dy.data.set(d.dys[s] as Float32Array);
        const t = bn.backward(dy, { out: dy });
        expect(t.dx).toBe(dy);
        g = { ...t, dx: dy.data.slice() };
      } else {
        out = bn.forward(d.xs[s] as Float32Array, k.shape);
        g = bn.backward(d.dys[s] as Float32Array);
      }
      steps.push({
        mode,
        y: out,
        dx: g.dx,
        dWeight: g.dWeight,
        dBias: g.dBias,
        runningMean: bn.runningMean?.slice() ?? null,
        runningVar: bn.runningVar?.slice() ?? null,
        numBatchesTracked: bn.numBatchesTracked,
      });
    }
    return steps;
  } finally {
    for (const t of [x, y, dy]) t?.dispose();
    bn.dispose();
  }
}

function runReference(k: Case, combo: Combo, d: Data): { steps: Step[]; scales: Scales[] } {
  const ref = new RefBatchNorm(d.C, { ...combo, layout: k.layout });
  ref.weight?.set(d.weight);
  ref.bias?.set(d.bias);
  const chan = channelOf(k.shape, k.layout);
  const steps: Step[] = [];
  const scales: Scales[] = [];
  for (let s = 0; s < MODES.length; s++) {
    const mode = MODES[s] as (typeof MODES)[number];
    ref.train(mode === "train");
    const x = d.xs[s] as Float32Array;
    const dy = d.dys[s] as Float32Array;
    const y = ref.forward(x, k.shape);
    const batch = ref.training || !ref.trackRunningStats;
    const mean = ref.lastMean as Float64Array;
    const variance = ref.lastVar as Float64Array;
    const g = ref.backward(dy);
    steps.push({
      mode,
      y,
      dx: g.dx,
      dWeight: ref.affine ? g.dWeight : null,
      dBias: ref.affine ? g.dBias : null,
      runningMean: ref.runningMean?.slice() ?? null,
      runningVar: ref.runningVar?.slice() ?? null,
      numBatchesTracked: ref.numBatchesTracked,
    });

    const e = errorScales(
      x,
      dy,
      { chan, mean, variance, eps: ref.eps, weight: ref.weight, bias: ref.bias },
      batch,
    );
    const rm = ref.runningMean;
    const rv = ref.runningVar;
    const running = rm === null || rv === null ? null : runningScales(rm, rv);
    scales.push({
      ...e,
      runningMean: running?.runningMean ?? null,
      runningVar: running?.runningVar ?? null,
    });
  }
  return { steps, scales };
}

/** Compares two runs step by step; returns the worst diff/scale ratio seen. */
function compareSteps(
  label: string,
  got: Step[],
  want: Step[],
  scales: Scales[],
  tol: number,
): number {
  let worst = 0;
  expect(got.length).toBe(want.length);
  got.forEach((g, s) => {
    const w = want[s] as Step;
    const sc = scales[s] as Scales;
    const at = `${label}, step ${s} (${w.mode})`;
    const close = (
      what: string,
      a: ArrayLike<number>,
      e: ArrayLike<number>,
      scale: ArrayLike<number>,
    ) => {
      worst = Math.max(worst, assertClose(`${at}: ${what}`, a, e, scale, tol));
    };
    close("y", g.y, w.y, sc.y);
    close("dx", g.dx, w.dx, sc.dx);
    for (const key of ["dWeight", "dBias", "runningMean", "runningVar"] as const) {
      const a = g[key];
      const e = w[key];
      const scale = sc[key];
      if (e === null || a === null || scale === null) {
        expect(a === null, `${at}: ${key} is null`).toBe(e === null);
      } else {
        close(key, a, e, scale);
      }
    }
    expect(g.numBatchesTracked, `${at}: numBatchesTracked`).toBe(w.numBatchesTracked);
  });
  return worst;
}

beforeAll(async () => {
  await initFromDist();
});

describe.each(BACKENDS)("conformance with the float64 reference: %s back end", (backend) => {
  it.each(CASES.map((k) => [caseName(k), k] as const))("%s", (_name, k) => {
    const data = makeData(k);
    for (const combo of COMBOS) {
      const ref = runReference(k, combo, data);
      const got = runModule(backend, k, combo, data);
      compareSteps(
        `${backend}, ${caseName(k)}, ${comboName(combo)}`,
        got,
        ref.steps,
        ref.scales,
        TOL,
      );
    }
  });
});

describe.each(BACKENDS)("conformance through the zero-copy Tensor API: %s back end", (backend) => {
  it.each(CASES.map((k) => [caseName(k), k] as const))("%s", (_name, k) => {
    const data = makeData(k);
    for (const combo of COMBOS) {
      const ref = runReference(k, combo, data);
      const got = runModule(backend, k, combo, data, "tensor");
      compareSteps(
        `${backend} (tensors), ${caseName(k)}, ${comboName(combo)}`,
        got,
        ref.steps,
        ref.scales,
        TOL,
      );
    }
  });
});

describe("the SIMD, scalar and JS back ends agree with each other", () => {
  it.each(CASES.map((k) => [caseName(k), k] as const))("%s", (_name, k) => {
    const data = makeData(k);
    for (const combo of COMBOS) {
      // The reference only supplies error scales here; the values compared are the back ends'.
      const { scales } = runReference(k, combo, data);
      const runs = BACKENDS.map((b) => [b, runModule(b, k, combo, data)] as const);
      for (let i = 0; i < runs.length; i++) {
        for (let j = i + 1; j < runs.length; j++) {
          const [a, ra] = runs[i] as (typeof runs)[number];
          const [b, rb] = runs[j] as (typeof runs)[number];
          compareSteps(
            `${a} vs ${b}, ${caseName(k)}, ${comboName(combo)}`,
            ra,
            rb,
            scales,
            AGREE_TOL,
          );
        }
      }
    }
  });
});

/**
 * Running statistics after several steps follow PyTorch's rule exactly enough to tell it from
 * the usual wrong ones: the unbiased variance var·n/(n−1) stored (not the biased var), and the
 * momentum weighting the NEW value (not the old one, as in Keras/ONNX). Batches of n = 100
 * values per channel make the biased rule miss by ≈ (1 − 0.9⁵)/(n − 1) ≈ 4e-3 of a batch
 * variance after five steps, 400 times TOL; the test asserts that margin (> 10·TOL) for the
 * data it uses, so that it provably could fail.
 */
describe.each(BACKENDS)("running statistics follow PyTorch's rule: %s back end", (backend) => {
  it.each([0.1, null])("momentum %s, five steps", (momentum) => {
    const shape = [4, 3, 5, 5];
    const C = 3;
    const n = 100;
    const chan = channelOf(shape, "NCHW");
    const rng = new Rng(seedOf(`running ${momentum}`));
    const bn = new BatchNorm(C, { momentum, backend });
    const steps = 5;
    // The three candidate rules, in float64.
    const rules = {
      pytorch: { mean: new Float64Array(C), var: new Float64Array(C).fill(1) },
      biased: { mean: new Float64Array(C), var: new Float64Array(C).fill(1) },
      oldWeighted: { mean: new Float64Array(C), var: new Float64Array(C).fill(1) },
    };
    try {
      for (let s = 1; s <= steps; s++) {
        const x = new Float32Array(chan.length);
        for (let i = 0; i < x.length; i++) {
          const c = chan[i] as number;
          x[i] = 2 * c - 1 + (c + 0.5) * rng.normal();
        }
        bn.forward(x, shape);
        // Batch statistics, straight from the definition.
        const m = momentum ?? 1 / s;
        for (let c = 0; c < C; c++) {
          let sum = 0;
          for (let i = 0; i < x.length; i++) if (chan[i] === c) sum += x[i] as number;
          const mean = sum / n;
          let sq = 0;
          for (let i = 0; i < x.length; i++)
            if (chan[i] === c) sq += ((x[i] as number) - mean) ** 2;
          const biased = sq / n;
          const unbiased = sq / (n - 1);
          const upd = (r: { mean: Float64Array; var: Float64Array }, w: number, v: number) => {
            r.mean[c] = (1 - w) * (r.mean[c] as number) + w * mean;
            r.var[c] = (1 - w) * (r.var[c] as number) + w * v;
          };
          upd(rules.pytorch, m, unbiased);
          upd(rules.biased, m, biased);
          upd(rules.oldWeighted, 1 - m, unbiased);
        }
      }
      expect(bn.numBatchesTracked).toBe(steps);
      const rm = bn.runningMean as Float32Array;
      const rv = bn.runningVar as Float32Array;
      const want = rules.pytorch;
      const scales = runningScales(want.mean, want.var);
      assertClose(`${backend}: runningMean`, rm, want.mean, scales.runningMean, TOL);
      assertClose(`${backend}: runningVar`, rv, want.var, scales.runningVar, TOL);
      // The test has teeth: the biased rule lies more than 10·TOL away on every channel.
      for (let c = 0; c < C; c++) {
        const wv = want.var[c] as number;
        const biasedMiss = Math.abs((rules.biased.var[c] as number) - wv) / wv;
        expect(biasedMiss, `biased rule, channel ${c}`).toBeGreaterThan(10 * TOL);
        const oldMiss = Math.abs((rules.oldWeighted.var[c] as number) - wv) / wv;
        expect(oldMiss, `old-weighted rule, channel ${c}`).toBeGreaterThan(10 * TOL);
      }
    } finally {
      bn.dispose();
    }
  });
});

/**
 * docs/design.md, Numerics: reductions combine partial results in a fixed order, so the same
 * input gives the same bits on the same back end, run after run (only different builds may
 * differ).
 */
describe.each(BACKENDS)("results are deterministic: %s back end", (backend) => {
  const picked = CASES.filter((k) => k.shape.reduce((p, d) => p * d, 1) > 4096);
  it.each(picked.map((k) => [caseName(k), k] as const))(
    "%s: two runs (copy API, then tensors at other addresses), same bits",
    (_name, k) => {
      const data = makeData(k);
      const combo = COMBOS[0] as Combo;
      const first = runModule(backend, k, combo, data);
      const second = runModule(backend, k, combo, data, "tensor");
      first.forEach((step, s) => {
        const again = second[s] as Step;
        for (const key of ["y", "dx", "dWeight", "dBias", "runningMean", "runningVar"] as const) {
          const a = step[key];
          const b = again[key];
          expect(a === null ? null : Array.from(a), `step ${s} ${key}`).toEqual(
            b === null ? null : Array.from(b),
          );
        }
      });
    },
  );
});
