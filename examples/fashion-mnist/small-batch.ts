/**
 * The small-batch experiment (`npm run demo -- --experiment small-batch`): what small and
 * non-i.i.d. mini-batches do to batch norm at inference, and what Batch Renormalization
 * (Ioffe 2017) and population statistics (`recalibrate`, Algorithm 2 of Ioffe & Szegedy 2015)
 * recover. The paper's sigmoid MLP is trained five ways from the same initial weights:
 *
 * - `reference`: batch norm on i.i.d. mini-batches of 60 (the Figure 1 network);
 * - `small-bn`, `small-brn`: the same batches and steps, but batch norm's statistics taken
 *   over mini-batches of 4 (`virtualBatchSize: 4`: 15 ghost batches per SGD step of 60, as the
 *   Batch Renorm paper's 4 examples per worker with gradients averaged over workers), with
 *   plain batch norm and with Batch Renorm;
 * - `noniid-bn`, `noniid-brn`: mini-batches of 60 each drawn from only two classes.
 *
 * Each is evaluated in inference mode on the test images, with its moving averages and again
 * after `recalibrate` over i.i.d. training batches (then its moving averages are put back and
 * training goes on).
 *
 * @module
 */
import type { BatchNormOptions, RenormLimits } from "../../ts/index.node.js";
import { denseForward } from "./dense.js";
import type { ImageSet } from "./idx.js";
import { Network, sigmoid } from "./mlp.js";
import { gaussianInit, Rng } from "./random.js";
import { evaluate, gatherBatch, type Settings } from "./train.js";

/** How a network's mini-batches are drawn. */
export type Sampling = "iid" | "two-class";

export interface NetworkSpec {
  id: string;
  label: string;
  sampling: Sampling;
  /** Batch norm's statistics over this many examples (ghost batches), or the whole batch. */
  virtualBatchSize: number | null;
  renorm: boolean;
}

export const NETWORKS: readonly NetworkSpec[] = [
  {
    id: "reference",
    label: "BN, batches of 60",
    sampling: "iid",
    virtualBatchSize: null,
    renorm: false,
  },
  {
    id: "small-bn",
    label: "BN, mini-batches of 4",
    sampling: "iid",
    virtualBatchSize: 4,
    renorm: false,
  },
  {
    id: "small-brn",
    label: "Batch Renorm, mini-batches of 4",
    sampling: "iid",
    virtualBatchSize: 4,
    renorm: true,
  },
  {
    id: "noniid-bn",
    label: "BN, two classes per batch",
    sampling: "two-class",
    virtualBatchSize: null,
    renorm: false,
  },
  {
    id: "noniid-brn",
    label: "Batch Renorm, two classes per batch",
    sampling: "two-class",
    virtualBatchSize: null,
    renorm: true,
  },
];

export const SMALL_BATCH_DEFAULTS = {
  steps: 4000,
  batchSize: 60,
  learningRate: 0.1,
  initStd: 0.1,
  seed: 1,
  evalEvery: 250,
  /** i.i.d. training batches of 60 that `recalibrate` averages over at each evaluation. */
  recalibrateBatches: 20,
  hidden: [100, 100, 100],
} as const;

/** The Figure 1 experiment's settings, less its probe, plus the recalibration batches. */
export type SmallBatchSettings = Omit<Settings, "probeUnit" | "trainImages"> & {
  recalibrateBatches: number;
};

/** Fills in the defaults (`evalSize`: every test image). */
export function resolveSmallBatchSettings(
  data: { train: ImageSet; test: ImageSet },
  given: Partial<Omit<SmallBatchSettings, "sizes">> = {},
): SmallBatchSettings {
  const d = SMALL_BATCH_DEFAULTS;
  const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  const settings = {
    steps: d.steps,
    batchSize: d.batchSize,
    learningRate: d.learningRate,
    initStd: d.initStd,
    seed: d.seed,
    evalEvery: d.evalEvery,
    evalSize: data.test.count,
    recalibrateBatches: d.recalibrateBatches,
    ...defined,
    sizes: [data.train.pixels, ...d.hidden, 10],
  };
  settings.evalSize = Math.min(settings.evalSize, data.test.count);
  return settings;
}

/** One evaluation: test accuracy with the moving averages and with population statistics. */
export interface SmallBatchEval {
  step: number;
  moving: number;
  recalibrated: number;
}

export interface SmallBatchNetworkResult {
  spec: NetworkSpec;
  evals: SmallBatchEval[];
  trainSeconds: number;
}

/**
 * The Batch Renorm paper's schedule, scaled to the run: plain batch norm (rMax 1, dMax 0) for
 * the first 1/16 of the steps, then rMax relaxed linearly to 3 by half the run and dMax to 5 by
 * 5/16 of it (the paper: 5k, 40k and 25k steps).
 */
export function renormSchedule(step: number, steps: number): RenormLimits {
  const warmup = steps / 16;
  const ramp = (end: number) => Math.min(1, Math.max(0, (step - warmup) / (end - warmup)));
  return { rMax: 1 + 2 * ramp(steps / 2), dMax: 5 * ramp((5 * steps) / 16) };
}

/** Draws mini-batches: i.i.d. (a new shuffle every epoch) or from two random classes each. */
export class BatchSampler {
  readonly #set: ImageSet;
  readonly #rng: Rng;
  readonly #sampling: Sampling;
  /** Image indices: all (i.i.d.) or one list per class (two-class), each with its cursor. */
  readonly #pools: { order: Uint32Array; cursor: number }[];

  constructor(set: ImageSet, seed: number, sampling: Sampling) {
    this.#set = set;
    this.#rng = new Rng(seed);
    this.#sampling = sampling;
    const lists: number[][] = sampling === "iid" ? [[]] : Array.from({ length: 10 }, () => []);
    for (let i = 0; i < set.count; i++) {
      (lists[sampling === "iid" ? 0 : (set.labels[i] as number)] as number[]).push(i);
    }
    this.#pools = lists.map((l) => ({ order: Uint32Array.from(l), cursor: l.length }));
  }

  /** The next `n` images into `x` (scaled to [0, 1]) and `labels`. */
  next(n: number, x: Float32Array, labels: Uint8Array): void {
    if (this.#sampling === "iid") {
      this.#take(0, n, 0, x, labels);
      return;
    }
    const a = Math.floor(this.#rng.next() * 10);
    const b = (a + 1 + Math.floor(this.#rng.next() * 9)) % 10;
    const half = Math.floor(n / 2);
    this.#take(a, half, 0, x, labels);
    this.#take(b, n - half, half, x, labels);
  }

  #take(pool: number, n: number, at: number, x: Float32Array, labels: Uint8Array): void {
    const p = this.#pools[pool] as { order: Uint32Array; cursor: number };
    if (p.cursor + n > p.order.length) {
      this.#rng.shuffle(p.order);
      p.cursor = 0;
    }
    const P = this.#set.pixels;
    gatherBatch(this.#set, p.order, p.cursor, n, x.subarray(at * P), labels.subarray(at));
    p.cursor += n;
  }
}

/**
 * Population statistics for every batch norm of `net`, layer by layer: each layer's inputs are
 * computed in inference mode through the layers below it, already recalibrated, so they are
 * what inference will feed it.
 */
export function recalibrateNetwork(net: Network, batches: readonly Float32Array[], n: number) {
  net.eval();
  let inputs = batches;
  net.norms.forEach((bn, l) => {
    const layer = net.layers[l] as (typeof net.layers)[number];
    const z = inputs.map((x) => {
      const out = new Float32Array(n * layer.outputs);
      denseForward(layer, x, n, out);
      return out;
    });
    const shape = [n, layer.outputs];
    bn.recalibrate(z.map((x) => ({ x, shape })));
    // This layer's outputs, through its recalibrated statistics: the next layer's inputs.
    inputs = z.map((x) => {
      const u = bn.forward(x, shape);
      sigmoid(u, u);
      return u;
    });
  });
  net.train();
}

/** Trains and evaluates one of the networks. */
export function trainNetwork(
  data: { train: ImageSet; test: ImageSet },
  settings: SmallBatchSettings,
  spec: NetworkSpec,
  onEval?: (e: SmallBatchEval) => void,
): SmallBatchNetworkResult {
  const { steps, batchSize: n, learningRate, evalEvery, evalSize, seed } = settings;
  const options: BatchNormOptions = { virtualBatchSize: spec.virtualBatchSize };
  const net = new Network(gaussianInit(settings.sizes, settings.initStd, seed), options);
  // The i.i.d. networks share one sequence of batches; the two-class ones another.
  const sampler = new BatchSampler(
    data.train,
    seed ^ (spec.sampling === "iid" ? 0x9e3779b9 : 0x85ebca6b),
    spec.sampling,
  );
  const calibration = new BatchSampler(data.train, seed ^ 0xc2b2ae35, "iid");
  const P = data.train.pixels;
  const labels = new Uint8Array(n);
  const batches = Array.from({ length: settings.recalibrateBatches }, () => {
    const x = new Float32Array(n * P);
    calibration.next(n, x, labels);
    return x;
  });
  const x = new Float32Array(n * P);
  const result: SmallBatchNetworkResult = { spec, evals: [], trainSeconds: 0 };
  const evaluateBoth = (step: number) => {
    const moving = evaluate(net, data.test, evalSize, 0, step).accuracy;
    const saved = net.norms.map((bn) => bn.stateDict());
    recalibrateNetwork(net, batches, n);
    const recalibrated = evaluate(net, data.test, evalSize, 0, step).accuracy;
    net.norms.forEach((bn, l) => {
      bn.loadStateDict(saved[l] as ReturnType<typeof bn.stateDict>);
    });
    const e = { step, moving, recalibrated };
    result.evals.push(e);
    onEval?.(e);
  };
  try {
    evaluateBoth(0);
    for (let step = 1; step <= steps; step++) {
      sampler.next(n, x, labels);
      const t0 = performance.now();
      if (spec.renorm) {
        const limits = renormSchedule(step - 1, steps);
        for (const bn of net.norms) bn.renorm = limits;
      }
      net.trainStep(x, labels, n, learningRate);
      result.trainSeconds += (performance.now() - t0) / 1000;
      if (step % evalEvery === 0 || step === steps) evaluateBoth(step);
    }
  } finally {
    net.dispose();
  }
  return result;
}
