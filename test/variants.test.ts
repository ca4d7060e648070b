/**
 * Batch Renormalization (`renorm`) and Ghost Batch Norm (`virtualBatchSize`) on every back end,
 * both layouts and both APIs, against the float64 reference of test/variants-reference.ts; the
 * reference's gradients against finite differences; the bit-identity of the neutral settings
 * with plain batch norm.
 *
 * ## Tolerances
 * - MODULE_TOL = 1e-5 of test/compare.ts's error scales (float32 rounding, as in
 *   test/conformance.test.ts), with r folded into the weight and d into the bias of those scales.
 * - FD_TOL = 1e-7, as in test/gradcheck.test.ts (same step, same argument).
 * Each has a negative control below: a plausible wrong formula misses by orders of magnitude.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchNorm, batchNorm, batchNormBackward } from "../ts/index.node.js";
import { assertClose, errorScales } from "./compare.js";
import { Rng } from "./random.js";
import { backwardBatch, batchStats, channelOf, type RefLayout } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";
import {
  type Limits,
  type RefVariantForward,
  updateRunning,
  variantBackward,
  variantForward,
} from "./variants-reference.js";

const MODULE_TOL = 1e-5;
const FD_TOL = 1e-7;
const EPS = 1e-5;
const H = 1e-4;

interface Case {
  layout: RefLayout;
  shape: number[];
  k: number | null;
  limits: Limits | null;
}

const CASES: Case[] = [
  { layout: "NCHW", shape: [8, 3, 5], k: 2, limits: null },
  { layout: "NCHW", shape: [8, 3, 5], k: null, limits: { rMax: 1.5, dMax: 0.5 } },
  { layout: "NCHW", shape: [6, 4, 2, 3], k: 3, limits: { rMax: 1.2, dMax: 0.3 } },
  { layout: "NCHW", shape: [12, 7], k: null, limits: { rMax: 1.1, dMax: 0.2 } },
  { layout: "NHWC", shape: [8, 3, 4], k: 4, limits: null },
  { layout: "NHWC", shape: [6, 2, 2, 5], k: 2, limits: { rMax: 1.5, dMax: 0.5 } },
  { layout: "NHWC", shape: [12, 7], k: 3, limits: { rMax: 2, dMax: 1 } },
];
const caseName = (k: Case) =>
  `${k.layout} [${k.shape.join(", ")}] k ${k.k ?? "-"}, renorm ${k.limits ? `${k.limits.rMax}/${k.limits.dMax}` : "-"}`;

/**
 * Data whose batch statistics differ from the running ones by enough for r and d to clip: per
 * channel a centre and a spread, running statistics drawn around them (σ_B/σ from ~0.45 to ~2.2,
 * |μ_B − runningMean| up to 1.5 spreads).
 */
function makeProblem(k: Case, seed: number) {
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

type Problem = ReturnType<typeof makeProblem>;

/** A module with the case's options and the problem's parameters and running statistics. */
function moduleFor(k: Case, p: Problem, backend: (typeof BACKENDS)[number], options = {}) {
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

type Running = { mean: ArrayLike<number>; variance: ArrayLike<number> };

function reference(
  k: Case,
  p: Problem,
  running: Running = { mean: p.runningMean, variance: p.runningVar },
) {
  const o = { eps: EPS, virtualBatchSize: k.k, limits: k.limits, running };
  return variantForward(p.x, k.shape, k.layout, p.weight, p.bias, o);
}

/** Error scales of each ghost batch, with r in the weight and d in the bias. */
function scalesOf(f: RefVariantForward, p: Problem) {
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
      part.chan,
      part.stats.mean,
      part.stats.variance,
      EPS,
      w,
      b,
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

const worst: Record<string, number> = {};
const note = (what: string, v: number) => {
  worst[what] = Math.max(worst[what] ?? 0, v);
};

beforeAll(async () => {
  await initFromDist();
});

afterAll(() => {
  // The measured worst error / scale of each quantity, for the record (see the tolerances).
  console.log("variants: worst |error|/scale", worst);
});

describe("the reference covers both sides of the clipping", () => {
  it("r and d are clipped in some channels and free in others", () => {
    const r: number[] = [];
    const d: number[] = [];
    CASES.forEach((k, i) => {
      if (k.limits === null) return;
      const f = reference(k, makeProblem(k, 100 + i));
      for (const part of f.parts) {
        r.push(
          ...[...part.r].map((v) => Math.abs(Math.log(v) / Math.log((k.limits as Limits).rMax))),
        );
        d.push(...[...part.d].map((v) => Math.abs(v) / (k.limits as Limits).dMax));
      }
    });
    expect(r.some((v) => v > 1 - 1e-12)).toBe(true);
    expect(r.some((v) => v < 0.999 && v > 0.01)).toBe(true);
    expect(d.some((v) => v > 1 - 1e-12)).toBe(true);
    expect(d.some((v) => v < 0.999 && v > 0.01)).toBe(true);
  });
});

describe.each(BACKENDS)("renorm and ghost batches match the float64 reference: %s", (backend) => {
  it.each(
    CASES.flatMap((k, i) =>
      (["copy", "tensor"] as const).map((api) => [`${caseName(k)}, ${api}`, k, i, api] as const),
    ),
  )("%s", (_name, k, i, api) => {
    const p = makeProblem(k, 100 + i);
    const bn = moduleFor(k, p, backend);
    let y: Float32Array;
    let g: { dx: Float32Array; dWeight: Float32Array | null; dBias: Float32Array | null };
    if (api === "copy") {
      y = bn.forward(p.x, k.shape);
      g = bn.backward(p.dy);
    } else {
      using xt = bn.tensor(k.shape);
      using dyt = bn.tensor(k.shape);
      xt.data.set(p.x);
      dyt.data.set(p.dy);
      using yt = bn.forward(xt);
      y = yt.data.slice();
      const gt = bn.backward(dyt, { out: dyt });
      g = { dx: gt.dx.data.slice(), dWeight: gt.dWeight, dBias: gt.dBias };
    }
    const f = reference(k, p);
    const dRef = variantBackward(f, p.dy, p.weight, EPS);
    const sc = scalesOf(f, p);
    note("y", assertClose("y", y, f.y, sc.y, MODULE_TOL));
    note("dx", assertClose("dx", g.dx, dRef.dx, sc.dx, MODULE_TOL));
    note(
      "dWeight",
      assertClose("dWeight", g.dWeight as Float32Array, dRef.dWeight, sc.dWeight, MODULE_TOL),
    );
    note("dBias", assertClose("dBias", g.dBias as Float32Array, dRef.dBias, sc.dBias, MODULE_TOL));
    const running = {
      mean: Float64Array.from(p.runningMean),
      variance: Float64Array.from(p.runningVar),
    };
    updateRunning(running, f, 0.1);
    const rScale = running.variance.map(
      (v, c) => Math.sqrt(v) + Math.abs(running.mean[c] as number),
    );
    note(
      "runningMean",
      assertClose("runningMean", bn.runningMean as Float32Array, running.mean, rScale, MODULE_TOL),
    );
    note(
      "runningVar",
      assertClose(
        "runningVar",
        bn.runningVar as Float32Array,
        running.variance,
        running.variance,
        MODULE_TOL,
      ),
    );
    expect(bn.numBatchesTracked).toBe(1);
    expect(Object.keys(bn.stateDict())).toEqual([
      "weight",
      "bias",
      "running_mean",
      "running_var",
      "num_batches_tracked",
    ]);
    // Inference is unchanged by both: the running statistics, whole batch, no correction.
    const plain = new BatchNorm(p.C, { layout: k.layout, backend });
    plain.loadStateDict(bn.stateDict());
    expectSameBits(
      "inference y",
      bn.eval().forward(p.x, k.shape),
      plain.eval().forward(p.x, k.shape),
    );
    plain.dispose();
    bn.dispose();
  });
});

describe("negative controls: the tolerance tells the wrong formulas", () => {
  const k = CASES[5] as Case;
  const p = makeProblem(k, 105);
  const f = reference(k, p);
  const sc = scalesOf(f, p);
  it("renorm against the running statistics after this step's update misses", () => {
    const after = {
      mean: Float64Array.from(p.runningMean),
      variance: Float64Array.from(p.runningVar),
    };
    updateRunning(after, f, 0.1);
    const wrong = reference(k, p, after);
    expect(() => assertClose("y", wrong.y, f.y, sc.y, MODULE_TOL)).toThrow();
  });
  it("dx with the weight alone (r forgotten) misses", () => {
    const noR = { ...f, parts: f.parts.map((q) => ({ ...q, r: q.r.map(() => 1) })) };
    const right = variantBackward(f, p.dy, p.weight, EPS);
    const wrong = variantBackward(noR, p.dy, p.weight, EPS);
    expect(() => assertClose("dx", wrong.dx, right.dx, sc.dx, MODULE_TOL)).toThrow();
  });
  it("ghost batches differentiated as one batch miss", () => {
    const kg = CASES[0] as Case;
    const pg = makeProblem(kg, 100);
    const fg = reference(kg, pg);
    const chan = channelOf(kg.shape, kg.layout);
    const whole = backwardBatch(pg.x, pg.dy, chan, batchStats(pg.x, chan, pg.C), EPS, pg.weight);
    const right = variantBackward(fg, pg.dy, pg.weight, EPS);
    expect(() => assertClose("dx", whole.dx, right.dx, scalesOf(fg, pg).dx, MODULE_TOL)).toThrow();
  });
});

describe("the reference's gradients match central finite differences (r, d held constant)", () => {
  it.each(CASES.map((k, i) => [caseName(k), k, i] as const))("%s", (_name, k, i) => {
    const p = makeProblem(k, 100 + i);
    const f = reference(k, p);
    const fixed = f.parts.map(({ r, d }) => ({ r, d }));
    const x = Float64Array.from(p.x);
    const w = Float64Array.from(p.weight);
    const b = Float64Array.from(p.bias);
    const loss = () => {
      const o = { eps: EPS, virtualBatchSize: k.k, limits: k.limits, fixed };
      const y = variantForward(x, k.shape, k.layout, w, b, o).y;
      return y.reduce((s, v, j) => s + v * (p.dy[j] as number), 0);
    };
    const central = (v: Float64Array, j: number, h: number) => {
      const keep = v[j] as number;
      v[j] = keep + h;
      const plus = loss();
      v[j] = keep - h;
      const minus = loss();
      v[j] = keep;
      return (plus - minus) / (2 * h);
    };
    const chan = channelOf(k.shape, k.layout);
    const sigma = batchStats(p.x, chan, p.C).variance.map((v) => Math.sqrt(v + EPS));
    const an = variantBackward(f, p.dy, p.weight, EPS);
    const sc = scalesOf(f, p);
    const fdx = x.map((_, j) => central(x, j, H * (sigma[chan[j] as number] as number)));
    note("fd dx", assertClose("dx", an.dx, fdx, sc.dx, FD_TOL));
    note(
      "fd dWeight",
      assertClose(
        "dWeight",
        an.dWeight,
        w.map((_, c) => central(w, c, H)),
        sc.dWeight,
        FD_TOL,
      ),
    );
    note(
      "fd dBias",
      assertClose(
        "dBias",
        an.dBias,
        b.map((_, c) => central(b, c, H)),
        sc.dBias,
        FD_TOL,
      ),
    );
  });
});

describe.each(BACKENDS)("neutral settings are plain batch norm, bit for bit: %s", (backend) => {
  const settings = [
    { name: "renorm { rMax: 1, dMax: 0 }", options: { renorm: { rMax: 1, dMax: 0 } } },
    { name: "virtualBatchSize = N", options: { virtualBatchSize: 8 } },
  ];
  it.each(
    settings.flatMap((s) =>
      (["NCHW", "NHWC"] as const).map(
        (layout) => [`${s.name}, ${layout}`, s.options, layout] as const,
      ),
    ),
  )("%s", (_name, options, layout) => {
    const k: Case = { layout, shape: [8, 3, 5], k: null, limits: null };
    const p = makeProblem(k, 7);
    const a = moduleFor(k, p, backend, options);
    const b = moduleFor(k, p, backend);
    for (let step = 0; step < 3; step++) {
      const x = p.x.map((v) => v * (1 + step / 4) + step);
      expectSameBits(`y ${step}`, a.forward(x, k.shape), b.forward(x, k.shape));
      const ga = a.backward(p.dy);
      const gb = b.backward(p.dy);
      expectSameBits(`dx ${step}`, ga.dx, gb.dx);
      expectSameBits(`dWeight ${step}`, ga.dWeight, gb.dWeight);
      expectSameBits(`dBias ${step}`, ga.dBias, gb.dBias);
      expectSameBits(`runningMean ${step}`, a.runningMean, b.runningMean);
      expectSameBits(`runningVar ${step}`, a.runningVar, b.runningVar);
    }
    a.dispose();
    b.dispose();
  });

  it("without running statistics, inference uses ghost batches too (batch statistics)", () => {
    const k = CASES[4] as Case;
    const p = makeProblem(k, 104);
    const bn = moduleFor(k, p, backend, { trackRunningStats: false });
    const train = bn.forward(p.x, k.shape);
    expectSameBits("eval y", bn.eval().forward(p.x, k.shape), train);
    const f = reference(k, p);
    note("y", assertClose("y", train, f.y, scalesOf(f, p).y, MODULE_TOL));
    bn.dispose();
  });

  it("the functional ops run the module's passes: same bits with renorm and ghost batches", () => {
    const k = CASES[5] as Case;
    const p = makeProblem(k, 105);
    const bn = moduleFor(k, p, backend);
    const y = bn.forward(p.x, k.shape);
    const g = bn.backward(p.dy);
    const runningMean = p.runningMean.slice();
    const runningVar = p.runningVar.slice();
    const common = {
      layout: k.layout,
      backend,
      weight: p.weight,
      training: true,
      renorm: k.limits,
      virtualBatchSize: k.k,
    };
    const yf = batchNorm(p.x, k.shape, { ...common, bias: p.bias, runningMean, runningVar });
    expectSameBits("y", yf, y);
    expectSameBits("runningMean", runningMean, bn.runningMean);
    expectSameBits("runningVar", runningVar, bn.runningVar);
    // The backward takes the running statistics the forward corrected toward (before update).
    const gf = batchNormBackward(p.dy, p.x, k.shape, {
      ...common,
      runningMean: p.runningMean,
      runningVar: p.runningVar,
    });
    expectSameBits("dx", gf.dx, g.dx);
    expectSameBits("dWeight", gf.dWeight, g.dWeight);
    expectSameBits("dBias", gf.dBias, g.dBias);
    bn.dispose();
  });
});
