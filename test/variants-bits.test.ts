/**
 * The neutral settings of the training variants are plain batch norm, bit for bit
 * (`renorm: { rMax: 1, dMax: 0 }`, `virtualBatchSize` = N), and the functional ops give the
 * module's bits with renorm and ghost batches; with no running statistics, inference uses ghost
 * batches as training does.
 */
import { beforeAll, describe, it } from "vitest";
import { batchNorm, batchNormBackward } from "../ts/index.node.js";
import { assertClose } from "./compare.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";
import * as fx from "./variants-fixtures.js";

beforeAll(async () => {
  await initFromDist();
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
    const k: fx.Case = { layout, shape: [8, 3, 5], k: null, limits: null };
    const p = fx.makeProblem(k, 7);
    const a = fx.moduleFor(k, p, backend, options);
    const b = fx.moduleFor(k, p, backend);
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
    const k = fx.CASES[4] as fx.Case;
    const p = fx.makeProblem(k, 104);
    const bn = fx.moduleFor(k, p, backend, { trackRunningStats: false });
    const train = bn.forward(p.x, k.shape);
    expectSameBits("eval y", bn.eval().forward(p.x, k.shape), train);
    const f = fx.reference(k, p);
    assertClose("y", train, f.y, fx.scalesOf(f, p).y, fx.MODULE_TOL);
    bn.dispose();
  });

  it("the functional ops run the module's passes: same bits with renorm and ghost batches", () => {
    const k = fx.CASES[5] as fx.Case;
    const p = fx.makeProblem(k, 105);
    const bn = fx.moduleFor(k, p, backend);
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
