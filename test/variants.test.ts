/**
 * Batch Renormalization (`renorm`) and Ghost Batch Norm (`virtualBatchSize`) on every back end,
 * both layouts and both APIs, against the float64 reference of test/variants-reference.ts, and
 * the reference's gradients against finite differences (tolerances: test/variants-fixtures.ts).
 * Each tolerance has a negative control: a plausible wrong formula misses it a hundredfold.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchNorm } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { backwardBatch, batchStats, channelOf } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";
import {
  CASES,
  type Case,
  caseName,
  EPS,
  FD_TOL,
  H,
  MODULE_TOL,
  makeProblem,
  moduleFor,
  reference,
  scalesOf,
} from "./variants-fixtures.js";
import {
  type Limits,
  updateRunning,
  variantBackward,
  variantForward,
} from "./variants-reference.js";

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

/** A wrong formula's worst error / scale must exceed the tolerance a hundredfold. */
function missBy(what: string, worstRatio: number, tol = MODULE_TOL) {
  note(`negative control, ${what}`, worstRatio);
  expect(worstRatio, what).toBeGreaterThan(100 * tol);
}

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
    missBy("renorm after the update: y", assertClose("y", wrong.y, f.y, sc.y, Infinity));
  });
  it("dx with the weight alone (r forgotten) misses", () => {
    const noR = { ...f, parts: f.parts.map((q) => ({ ...q, r: q.r.map(() => 1) })) };
    const right = variantBackward(f, p.dy, p.weight, EPS);
    const wrong = variantBackward(noR, p.dy, p.weight, EPS);
    missBy("r forgotten: dx", assertClose("dx", wrong.dx, right.dx, sc.dx, Infinity));
  });
  it("ghost batches differentiated as one batch miss", () => {
    const kg = CASES[0] as Case;
    const pg = makeProblem(kg, 100);
    const fg = reference(kg, pg);
    const chan = channelOf(kg.shape, kg.layout);
    const whole = backwardBatch(pg.x, pg.dy, chan, batchStats(pg.x, chan, pg.C), EPS, pg.weight);
    const right = variantBackward(fg, pg.dy, pg.weight, EPS);
    const miss = assertClose("dx", whole.dx, right.dx, scalesOf(fg, pg).dx, Infinity);
    missBy("ghost batches as one: dx", miss);
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
    if (k.k !== null) {
      // Negative control: the whole batch's backward is not the ghost batches' gradient.
      const whole = backwardBatch(p.x, p.dy, chan, batchStats(p.x, chan, p.C), EPS, p.weight);
      if (k.limits === null)
        missBy(
          "fd, ghost batches as one: dx",
          assertClose("dx", whole.dx, fdx, sc.dx, Infinity),
          FD_TOL,
        );
    }
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
