/**
 * Property-based tests (fast-check): random module options, shapes, layouts and call
 * sequences — mode switches, forward/backward interleavings through both APIs, several modules
 * sharing one back end (and its wasm instance), tensors made by one module and used by
 * another, loadStateDict and in-place weight updates in between, memory growth between calls,
 * disposed inputs of pending forwards, bad calls mixed in — run
 * against a float64 model built on test/reference.ts. Every step's outputs are compared with
 * the model's, and after every step the state (weights, running statistics,
 * numBatchesTracked, mode, whether a forward is pending) equals the model's. At the end every
 * byte the run allocated is back in the heap.
 *
 * Runs use a fixed seed, so a failure reproduces; fast-check prints the shrunk sequence.
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import type { BackendKind } from "../ts/backend.js";
import { BatchNorm, type Layout, type StateDict, type Tensor } from "../ts/index.node.js";
import {
  checkGradients,
  checkForward as checkRefForward,
  checkRunning,
  type Gradients,
  gradientScales,
} from "./compare.js";
import { Rng } from "./random.js";
import { channelOf, RefBatchNorm } from "./reference.js";
import { BACKENDS, initFromDist } from "./setup-backends.js";
import { heapOf, live } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

/**
 * Tolerance in units of each quantity's error scale (test/compare.ts: `errorScales`, and the
 * forward and running-statistics checks there). float32's unit roundoff is 2^-24 ≈ 6e-8; the data
 * are generated with |mean| ≤ 3·spread and a spread of at least half their range per channel (see
 * `batch`), so rounding x − mean is magnified at most ~16 times, and sums run over ≤ 100 values.
 * 2^-16 ≈ 1.5e-5 (256 roundoffs) stays far below what a wrong convention changes (a running
 * variance that is biased instead of unbiased is off by a factor n/(n − 1) ≥ 1/99, times the
 * momentum; the library's own error is a few roundoffs). The worst ratio measured over these runs
 * is about 8e-7.
 */
const TOL = 2 ** -16;

// ---------------------------------------------------------------------------------------------
// What a run is made of.

interface ModuleConfig {
  C: number;
  layout: Layout;
  eps: number;
  momentum: number | null;
  affine: boolean;
  trackRunningStats: boolean;
}

type Action =
  | {
      t: "forward";
      m: number;
      api: "copy" | "tensor";
      /** The module whose tensor() makes the input (any module of the back end). */
      maker: number;
      n: number;
      spatial: number[];
      seed: number;
      out: boolean;
    }
  | {
      t: "backward";
      m: number;
      api: "copy" | "tensor";
      maker: number;
      seed: number;
      out: "none" | "dy" | "other";
      wrongShape: boolean;
    }
  | { t: "mode"; m: number; training: boolean }
  | { t: "load"; m: number; seed: number; kind: "f32" | "f64" | "array"; tracked: number | bigint }
  | { t: "update"; m: number; seed: number }
  | { t: "badForward"; m: number; seed: number }
  /** memory.grow between any two calls: every view is detached, nothing else may change. */
  | { t: "grow"; m: number; pages: number }
  /** The caller disposes the input tensor of a pending forward: its backward must refuse. */
  | { t: "disposeInput"; m: number };

const configArb: fc.Arbitrary<ModuleConfig> = fc.record({
  // Channel counts around the SIMD width: 1–9, and 16/17.
  C: fc.oneof(fc.integer({ min: 1, max: 9 }), fc.constantFrom(16, 17)),
  layout: fc.constantFrom<Layout>("NCHW", "NHWC"),
  eps: fc.constantFrom(1e-5, 1e-3, 0.1, 1e-8),
  momentum: fc.oneof(fc.constantFrom(0.1, null, 0, 1), fc.double({ min: 0, max: 1, noNaN: true })),
  affine: fc.boolean(),
  trackRunningStats: fc.boolean(),
});

function actionArb(modules: number): fc.Arbitrary<Action> {
  const m = fc.nat({ max: modules - 1 });
  const api = fc.constantFrom<"copy" | "tensor">("copy", "tensor");
  const seed = fc.nat();
  return fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        t: fc.constant("forward" as const),
        m,
        api,
        maker: m,
        // N = 1 with no spatial axes is one value per channel: an error in training.
        n: fc.integer({ min: 1, max: 4 }),
        spatial: fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 2 }),
        seed,
        out: fc.boolean(),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        t: fc.constant("backward" as const),
        m,
        api,
        maker: m,
        seed,
        out: fc.constantFrom<"none" | "dy" | "other">("none", "dy", "other"),
        // Now and then a dy of the wrong length: refused, and the forward stays pending.
        wrongShape: fc.oneof(
          { weight: 5, arbitrary: fc.constant(false) },
          { weight: 1, arbitrary: fc.constant(true) },
        ),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ t: fc.constant("mode" as const), m, training: fc.boolean() }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant("load" as const),
        m,
        seed,
        kind: fc.constantFrom<"f32" | "f64" | "array">("f32", "f64", "array"),
        tracked: fc.oneof(fc.nat({ max: 50 }), fc.bigInt({ min: 0n, max: 50n })),
      }),
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("update" as const), m, seed }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("badForward" as const), m, seed }) },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant("grow" as const),
        m,
        pages: fc.integer({ min: 1, max: 2 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("disposeInput" as const), m }) },
  );
}

const runArb = fc.array(configArb, { minLength: 1, maxLength: 3 }).chain((configs) =>
  fc.record({
    configs: fc.constant(configs),
    actions: fc.array(actionArb(configs.length), { minLength: 1, maxLength: 24 }),
  }),
);

// ---------------------------------------------------------------------------------------------
// Data.

function shapeOf(config: ModuleConfig, n: number, spatial: number[]): number[] {
  return config.layout === "NCHW" ? [n, config.C, ...spatial] : [n, ...spatial, config.C];
}

/**
 * A batch whose every channel is well conditioned: the k-th of a channel's n values is
 * offset + spread·z with z stratified over [−1, 1] (one value per sub-interval of width 2/n,
 * jittered, then shuffled), so the channel's spread is at least half its range whatever n is;
 * |offset| ≤ 3·spread, and spreads run from 1/8 to 8.
 */
function batch(shape: readonly number[], layout: Layout, C: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const chan = channelOf(shape, layout);
  const n = chan.length / C;
  const slots: number[][] = Array.from({ length: C }, () => []);
  for (let i = 0; i < chan.length; i++) slots[chan[i] as number]?.push(i);
  const x = new Float32Array(chan.length);
  for (let c = 0; c < C; c++) {
    const spread = 2 ** rng.range(-3, 3);
    const offset = spread * rng.range(-3, 3);
    const idx = slots[c] as number[];
    for (let k = idx.length - 1; k > 0; k--) {
      const j = Math.floor(rng.uniform() * (k + 1));
      [idx[k], idx[j]] = [idx[j] as number, idx[k] as number];
    }
    idx.forEach((i, k) => {
      const z = -1 + (2 * (k + rng.range(0.25, 0.75))) / n;
      x[i] = offset + spread * z;
    });
  }
  return x;
}

function upstream(length: number, seed: number): Float32Array {
  const rng = new Rng(seed ^ 0x5bd1e995);
  const scale = 2 ** rng.range(-2, 2);
  return new Float32Array(length).map(() => scale * rng.range(-1, 1));
}

// ---------------------------------------------------------------------------------------------
// The model: RefBatchNorm plus what the wrapper promises around it.

class Model {
  readonly ref: RefBatchNorm;
  /** The weight the pending forward used: backward differentiates that forward. */
  savedWeight: Float64Array | null = null;
  pending:
    | {
        shape: number[];
        x: Float32Array;
        mean: Float64Array;
        variance: Float64Array;
        /** Whether the forward normalized with batch statistics (not running ones). */
        batch: boolean;
      }
    | undefined;
  /** The pending forward's input tensor was disposed: backward must throw until a new forward. */
  poisoned = false;
  /** Largest |x| per channel seen: the scale of float32 rounding in the batch means. */
  readonly xmax: Float64Array;

  constructor(readonly config: ModuleConfig) {
    this.ref = new RefBatchNorm(config.C, {
      eps: config.eps,
      momentum: config.momentum,
      affine: config.affine,
      trackRunningStats: config.trackRunningStats,
      layout: config.layout,
    });
    this.xmax = new Float64Array(config.C);
  }
}

/** Checks a forward against the model, which then holds it pending (see compare.ts). */
function checkForward(
  what: string,
  y: Float32Array,
  x: Float32Array,
  model: Model,
  shape: number[],
): number {
  const ref = model.ref;
  const worst = checkRefForward(what, y, x, shape, ref, TOL);
  const batch = ref.training || !ref.trackRunningStats;
  model.pending = {
    shape,
    x,
    mean: ref.lastMean as Float64Array,
    variance: ref.lastVar as Float64Array,
    batch,
  };
  model.savedWeight = ref.weight === null ? null : Float64Array.from(ref.weight);
  const chan = channelOf(shape, ref.layout);
  for (let i = 0; i < x.length; i++) {
    const c = chan[i] as number;
    model.xmax[c] = Math.max(model.xmax[c] as number, Math.abs(x[i] as number));
  }
  return worst;
}

/** Checks a backward against the model's, of the forward that ran (with the weight it used). */
function checkBackward(what: string, grads: Gradients, dy: Float32Array, model: Model): number {
  const ref = model.ref;
  const p = model.pending;
  if (p === undefined) throw new Error("model: no pending forward");
  const current = ref.weight === null ? null : Float64Array.from(ref.weight);
  if (model.savedWeight !== null) ref.weight?.set(model.savedWeight);
  const g = ref.backward(dy);
  if (current !== null) ref.weight?.set(current);
  const { x, mean, variance, shape, batch } = p;
  const weight = model.savedWeight;
  model.pending = undefined;
  const chan = channelOf(shape, ref.layout);
  const norm = { chan, mean, variance, eps: ref.eps, weight, bias: null };
  const scales = gradientScales(x, dy, norm, batch);
  return checkGradients(what, grads, g, scales, ref.affine, TOL);
}

/** The module's state equals the model's (running statistics to rounding, the rest exactly). */
function checkState(what: string, bn: BatchNorm, model: Model): number {
  const ref = model.ref;
  expect(bn.training, `${what}: training`).toBe(ref.training);
  expect(bn.numBatchesTracked, `${what}: numBatchesTracked`).toBe(ref.numBatchesTracked);
  // weight and bias only ever change by loadStateDict and in-place updates, which set the
  // model to the very float32 values: they must be equal exactly.
  for (const [name, got, want] of [
    ["weight", bn.weight, ref.weight],
    ["bias", bn.bias, ref.bias],
  ] as const) {
    if (want === null) expect(got, name).toBeNull();
    else expect(Array.from(got as Float32Array), `${what}: ${name}`).toEqual(Array.from(want));
  }
  // The batch means are rounded relative to the largest |x| seen: a bound on the spread.
  return checkRunning(what, bn, ref, TOL, model.xmax);
}

/** The model's state after loading `sd`: what a float32 module holds of those values. */
function loadModel(model: Model, sd: StateDict): void {
  const ref = model.ref;
  const put = (target: Float64Array | null, values: ArrayLike<number> | undefined) => {
    if (target !== null && values !== undefined) {
      for (let c = 0; c < target.length; c++) target[c] = Math.fround(values[c] as number);
    }
  };
  put(ref.weight, sd.weight);
  put(ref.bias, sd.bias);
  put(ref.runningMean, sd.running_mean);
  put(ref.runningVar, sd.running_var);
  if (sd.num_batches_tracked !== undefined) ref.numBatchesTracked = Number(sd.num_batches_tracked);
}

// ---------------------------------------------------------------------------------------------
// One run.

interface Stats {
  worst: number;
  steps: number;
}

function run(kind: BackendKind, configs: ModuleConfig[], actions: Action[], stats: Stats): void {
  const baseline = live(kind);
  const modules = configs.map(
    (c) =>
      new BatchNorm(c.C, {
        backend: kind,
        layout: c.layout,
        eps: c.eps,
        momentum: c.momentum,
        affine: c.affine,
        trackRunningStats: c.trackRunningStats,
      }),
  );
  const models = configs.map((c) => new Model(c));
  const tensors: Tensor[] = [];
  /** The tensor input of each module's pending forward, which must not be overwritten. */
  const savedInput: (Tensor | undefined)[] = configs.map(() => undefined);
  const make = (maker: number, shape: readonly number[]) => {
    const t = (modules[maker] as BatchNorm).tensor(shape);
    tensors.push(t);
    return t;
  };
  /** A live tensor of `shape` to write into: reuses one when it is no module's saved input. */
  const scratch = (maker: number, shape: readonly number[], not: (Tensor | undefined)[]) =>
    tensors.find(
      (t) =>
        !t.disposed &&
        t.shape.join() === shape.join() &&
        !not.includes(t) &&
        !savedInput.includes(t),
    ) ?? make(maker, shape);

  try {
    actions.forEach((a, step) => {
      const bn = modules[a.m] as BatchNorm;
      const model = models[a.m] as Model;
      const ref = model.ref;
      const config = configs[a.m] as ModuleConfig;
      const what = `step ${step} (${a.t} on module ${a.m})`;
      switch (a.t) {
        case "forward": {
          const shape = shapeOf(config, a.n, a.spatial);
          const values = batch(shape, config.layout, config.C, a.seed);
          const perChannel = values.length / config.C;
          let call: () => Float32Array;
          let input: Tensor | undefined;
          if (a.api === "copy") {
            call = () => bn.forward(values, shape);
          } else {
            input = make(a.maker, shape);
            input.data.set(values);
            const x = input;
            const out = a.out ? scratch(a.maker, shape, [x]) : undefined;
            call = () => {
              const y = bn.forward(x, out === undefined ? undefined : { out });
              if (out !== undefined) expect(y).toBe(out);
              else tensors.push(y);
              return y.data;
            };
          }
          if ((ref.training || !config.trackRunningStats) && perChannel === 1) {
            // PyTorch's rule where batch statistics are used; the module is left as it was
            // (checked below).
            expect(call).toThrow(
              /expected more than 1 value per channel when (training|using batch statistics)/,
            );
            break;
          }
          const y = call();
          savedInput[a.m] = input;
          model.poisoned = false;
          stats.worst = Math.max(stats.worst, checkForward(what, y, values, model, shape));
          break;
        }
        case "backward": {
          const p = model.pending;
          const length = p === undefined ? 4 : p.x.length;
          const dy = upstream(a.wrongShape ? length + 1 : length, a.seed);
          const shape = p === undefined || a.wrongShape ? [dy.length] : p.shape;
          let call: () => Float32Array;
          let grads: { dWeight: Float32Array | null; dBias: Float32Array | null } | undefined;
          if (a.api === "copy") {
            call = () => {
              const g = bn.backward(dy);
              grads = g;
              return g.dx;
            };
          } else {
            const dyT = make(a.maker, shape);
            dyT.data.set(dy);
            const out =
              a.out === "dy" ? dyT : a.out === "other" ? scratch(a.maker, shape, [dyT]) : undefined;
            call = () => {
              const g = bn.backward(dyT, out === undefined ? undefined : { out });
              if (out !== undefined) expect(g.dx).toBe(out);
              else tensors.push(g.dx);
              grads = g;
              return g.dx.data;
            };
          }
          if (p === undefined) {
            expect(call).toThrow(/BatchNorm\.backward: no forward\(\) to differentiate/);
            break;
          }
          if (model.poisoned) {
            expect(call).toThrow(
              /BatchNorm\.backward: the input tensor of the last forward\(\) was disposed/,
            );
            break;
          }
          if (a.wrongShape) {
            expect(call).toThrow(RangeError);
            break; // the pending forward survives: checked by a later backward
          }
          const dx = call();
          savedInput[a.m] = undefined;
          const g = grads as { dWeight: Float32Array | null; dBias: Float32Array | null };
          stats.worst = Math.max(stats.worst, checkBackward(what, { ...g, dx }, dy, model));
          break;
        }
        case "mode":
          if (a.training) {
            bn.train();
            ref.train();
          } else {
            bn.eval();
            ref.eval();
          }
          break;
        case "load": {
          const rng = new Rng(a.seed);
          const values = (lo: number, hi: number) => {
            const v = Array.from({ length: config.C }, () => rng.range(lo, hi));
            return a.kind === "f32"
              ? Float32Array.from(v)
              : a.kind === "f64"
                ? Float64Array.from(v)
                : v;
          };
          const sd: Record<string, unknown> = {};
          if (config.affine) {
            sd.weight = values(-2, 2);
            sd.bias = values(-2, 2);
          }
          if (config.trackRunningStats) {
            sd.running_mean = values(-3, 3);
            sd.running_var = values(1 / 1024, 4);
            sd.num_batches_tracked = a.tracked;
          }
          bn.loadStateDict(sd as StateDict);
          loadModel(model, sd as StateDict);
          break;
        }
        case "update": {
          // What an optimizer step does: write the parameters in place.
          if (bn.weight === null || bn.bias === null) break;
          const rng = new Rng(a.seed);
          for (let c = 0; c < config.C; c++) {
            bn.weight[c] = (bn.weight[c] as number) - rng.range(-0.5, 0.5);
            bn.bias[c] = (bn.bias[c] as number) + rng.range(-0.5, 0.5);
          }
          (ref.weight as Float64Array).set(bn.weight);
          (ref.bias as Float64Array).set(bn.bias);
          break;
        }
        case "grow": {
          heapOf(kind)?.memory.grow(a.pages);
          break;
        }
        case "disposeInput": {
          const input = savedInput[a.m];
          if (input !== undefined && model.pending !== undefined) {
            input.dispose();
            model.poisoned = true;
          }
          break;
        }
        case "badForward": {
          // A channel count that is not numFeatures: refused, nothing changes.
          const wrong = { ...config, C: config.C + 1 };
          const shape = shapeOf(wrong, 2, []);
          expect(() => bn.forward(new Float32Array(2 * wrong.C), shape)).toThrow(
            /is the channel count .* and must be numFeatures/,
          );
          break;
        }
      }
      stats.steps++;
      // After every step, every module (not only the one called) agrees with its model.
      modules.forEach((b, i) => {
        stats.worst = Math.max(
          stats.worst,
          checkState(`${what}, module ${i}`, b, models[i] as Model),
        );
      });
    });
    // The pending forwards agree too: a final backward on every module with one pending.
    modules.forEach((b, i) => {
      const model = models[i] as Model;
      if (model.pending === undefined) {
        expect(() => b.backward(new Float32Array(1))).toThrow(/no forward\(\) to differentiate/);
        return;
      }
      if (model.poisoned) {
        expect(() => b.backward(new Float32Array(1))).toThrow(/was disposed/);
        return;
      }
      const dy = upstream(model.pending.x.length, i);
      const g = b.backward(dy);
      stats.worst = Math.max(
        stats.worst,
        checkBackward(`final backward of module ${i}`, g, dy, model),
      );
    });
  } finally {
    for (const t of tensors) t.dispose();
    for (const b of modules) b.dispose();
  }
  expect(live(kind), "every byte of the run is back in the heap").toBe(baseline);
}

describe.each(BACKENDS)("random call sequences on the %s back end", (kind) => {
  it("match the float64 model step by step and in the final state", () => {
    const stats: Stats = { worst: 0, steps: 0 };
    fc.assert(
      fc.property(runArb, ({ configs, actions }) => run(kind, configs, actions, stats)),
      { numRuns: 300, seed: 20261125 + kind.length },
    );
    // The tolerance is not vacuous: many steps ran, and the worst error is well inside it.
    expect(stats.steps).toBeGreaterThan(1000);
    expect(stats.worst).toBeLessThan(TOL);
  });
});
