/**
 * The experiment of the batch normalization paper's §4.1 (Figure 1): the same network, from the
 * same initial weights, on the same mini-batches, trained once without and once with batch
 * normalization; test accuracy and the distribution of one sigmoid's input recorded as training
 * goes on.
 *
 * @module
 */

import type { BatchNormSync } from "../../ts/index.node.js";
import { dataParallel, replicaRows } from "./data-parallel.js";
import type { ImageSet } from "./idx.js";
import { type DataParallel, Network, softmaxCrossEntropy } from "./mlp.js";
import { gaussianInit, Rng } from "./random.js";

/** Settings of {@link runExperiment}; every one but the data has a default. */
export interface ExperimentOptions {
  train: ImageSet;
  test: ImageSet;
  /** Training steps (mini-batches) for each network. */
  steps?: number;
  /** Mini-batch size: 60 in the paper. */
  batchSize?: number;
  /** SGD learning rate, the same for both networks. */
  learningRate?: number;
  /** Standard deviation of the Gaussian initial weights. */
  initStd?: number;
  /** Seeds the initial weights and the order of the mini-batches. */
  seed?: number;
  /** Evaluate on the test set every this many steps (and at step 0 and at the end). */
  evalEvery?: number;
  /** Evaluate on the first this many test images (all by default). */
  evalSize?: number;
  /** Which unit of the last hidden layer to watch for Figures 1b and 1c. */
  probeUnit?: number;
  /** Hidden layer widths: three of 100 in the paper. */
  hidden?: readonly number[];
  /** Called after every training step. */
  onProgress?: (progress: Progress) => void;
  /** Called after every evaluation. */
  onEval?: (step: number, plain: EvalPoint, bn: EvalPoint) => void;
}

/** What {@link ExperimentOptions.onProgress} receives. */
export interface Progress {
  step: number;
  steps: number;
  /** Training loss and accuracy averaged over recent mini-batches (exponential, ~100 steps). */
  plain: { loss: number; accuracy: number };
  bn: { loss: number; accuracy: number };
  /** Test accuracy of each network at the last evaluation. */
  testAccuracy: { plain: number; bn: number };
  elapsedSeconds: number;
}

/** One evaluation of one network on the test images, in inference mode. */
export interface EvalPoint {
  step: number;
  /** Fraction of test images classified correctly. */
  accuracy: number;
  /** Mean cross-entropy on the test images. */
  loss: number;
  /** 15th, 50th and 85th percentiles of the watched sigmoid's input over the test images. */
  p15: number;
  p50: number;
  p85: number;
}

/** Mean training loss and accuracy over a window of steps. */
export interface TrainPoint {
  /** The window's last step. */
  step: number;
  loss: number;
  accuracy: number;
}

/** Everything recorded about one network. */
export interface NetworkResult {
  name: string;
  batchNorm: boolean;
  evals: EvalPoint[];
  train: TrainPoint[];
  /** Time spent in this network's training steps (forward, backward, update), in seconds. */
  trainSeconds: number;
}

/** What {@link runExperiment} returns: its resolved settings and both networks' records. */
export interface ExperimentResult {
  settings: {
    steps: number;
    batchSize: number;
    learningRate: number;
    initStd: number;
    seed: number;
    evalEvery: number;
    evalSize: number;
    probeUnit: number;
    sizes: number[];
    trainImages: number;
  };
  plain: NetworkResult;
  bn: NetworkResult;
  /** Wall-clock time of the whole run, evaluations included, in seconds. */
  wallSeconds: number;
}

export const DEFAULTS = {
  steps: 15000,
  batchSize: 60,
  learningRate: 0.1,
  initStd: 0.1,
  seed: 1,
  evalEvery: 500,
  probeUnit: 0,
  hidden: [100, 100, 100],
} as const;

/** Copies rows `indices[from..from+n)` of `set` into `x` (scaled to [0, 1]) and `labels`. */
export function gatherBatch(
  set: ImageSet,
  indices: ArrayLike<number>,
  from: number,
  n: number,
  x: Float32Array,
  labels: Uint8Array,
): void {
  const P = set.pixels;
  for (let r = 0; r < n; r++) {
    const i = indices[from + r] as number;
    const src = i * P;
    const dst = r * P;
    for (let k = 0; k < P; k++) x[dst + k] = (set.images[src + k] as number) / 255;
    labels[r] = set.labels[i] as number;
  }
}

/** The `q`-th quantile (0–1) of sorted values, interpolating linearly between neighbours. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const pos = q * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  const a = sorted[lo] as number;
  return a + (pos - lo) * ((sorted[hi] as number) - a);
}

const EVAL_CHUNK = 1000;

/**
 * Evaluates `net` in inference mode on the first `size` test images: accuracy, mean loss and the
 * percentiles of the input to unit `probeUnit` of the last hidden layer's sigmoid.
 */
export function evaluate(
  net: Network,
  test: ImageSet,
  size: number,
  probeUnit: number,
  step: number,
): EvalPoint {
  net.eval();
  const hidden = net.sizes.length - 3; // index of the last hidden layer
  const units = net.sizes[hidden + 1] as number;
  const probe = new Float32Array(size);
  const order = Uint32Array.from({ length: size }, (_, i) => i);
  const x = new Float32Array(EVAL_CHUNK * test.pixels);
  const labels = new Uint8Array(EVAL_CHUNK);
  let lossSum = 0;
  let correct = 0;
  for (let from = 0; from < size; from += EVAL_CHUNK) {
    const n = Math.min(EVAL_CHUNK, size - from);
    gatherBatch(test, order, from, n, x, labels);
    const logits = net.forward(x.subarray(0, n * test.pixels), n);
    const r = softmaxCrossEntropy(logits, labels, n, net.classes, null);
    lossSum += r.lossSum;
    correct += r.correct;
    const u = net.sigmoidInputs[hidden] as Float32Array;
    for (let i = 0; i < n; i++) probe[from + i] = u[i * units + probeUnit] as number;
  }
  net.train();
  probe.sort();
  return {
    step,
    accuracy: correct / size,
    loss: lossSum / size,
    p15: quantile(probe, 0.15),
    p50: quantile(probe, 0.5),
    p85: quantile(probe, 0.85),
  };
}

/** The settings of a run, resolved (every default filled in). */
export type Settings = ExperimentResult["settings"];

/** Fills in the defaults of everything but the data and the callbacks. */
export function resolveSettings(
  options: Omit<ExperimentOptions, "onProgress" | "onEval">,
): Settings {
  const { train, test } = options;
  const settings = {
    steps: options.steps ?? DEFAULTS.steps,
    batchSize: options.batchSize ?? DEFAULTS.batchSize,
    learningRate: options.learningRate ?? DEFAULTS.learningRate,
    initStd: options.initStd ?? DEFAULTS.initStd,
    seed: options.seed ?? DEFAULTS.seed,
    evalEvery: options.evalEvery ?? DEFAULTS.evalEvery,
    evalSize: Math.min(options.evalSize ?? test.count, test.count),
    probeUnit: options.probeUnit ?? DEFAULTS.probeUnit,
    sizes: [train.pixels, ...(options.hidden ?? DEFAULTS.hidden), 10],
    trainImages: train.count,
  };
  const lastHidden = settings.sizes[settings.sizes.length - 2] as number;
  if (!(settings.probeUnit >= 0 && settings.probeUnit < lastHidden)) {
    throw new RangeError(
      `probeUnit must be a unit of the last hidden layer (0 to ${lastHidden - 1}), got ${settings.probeUnit}`,
    );
  }
  if (train.count < settings.batchSize) {
    throw new RangeError(
      `${train.count} training images are fewer than a batch (${settings.batchSize})`,
    );
  }
  return settings;
}

/**
 * Trains one of the two networks, step by step. Both trainers of a run draw the same initial
 * weights and the same mini-batches in the same order from the seed, so they can run side by
 * side in one thread or each in its own worker with the same result.
 */
export class Trainer {
  readonly net: Network;
  readonly result: NetworkResult;
  readonly settings: Settings;
  /** Training loss and accuracy, averaged exponentially over about the last 100 steps. */
  readonly recent = { loss: Number.NaN, accuracy: Number.NaN };
  step = 0;
  #data: { train: ImageSet; test: ImageSet };
  #rng: Rng;
  #order: Uint32Array;
  #cursor: number;
  #x: Float32Array;
  #labels: Uint8Array;
  #window = { loss: 0, accuracy: 0, steps: 0 };
  /** This replica's rows of each batch (all of them when training alone). */
  #rows: { from: number; count: number };
  #parallel: DataParallel | undefined;

  /**
   * @param replica this trainer is one of `sync.size` data-parallel replicas: it trains on its
   *   rows of each batch and gathers the rest through `sync` (data-parallel.ts).
   */
  constructor(
    data: { train: ImageSet; test: ImageSet },
    settings: Settings,
    batchNorm: boolean,
    replica?: BatchNormSync,
  ) {
    this.settings = settings;
    this.#data = data;
    this.net = new Network(
      gaussianInit(settings.sizes, settings.initStd, settings.seed),
      batchNorm && { sync: replica ?? null },
    );
    const { batchSize } = settings;
    this.#rows = replica
      ? replicaRows(batchSize, replica.rank, replica.size)
      : { from: 0, count: batchSize };
    this.#parallel = replica && dataParallel(replica, batchSize);
    this.result = {
      name: batchNorm ? "with BN" : "without BN",
      batchNorm,
      evals: [],
      train: [],
      trainSeconds: 0,
    };
    this.#rng = new Rng(settings.seed ^ 0x9e3779b9);
    this.#order = Uint32Array.from({ length: data.train.count }, (_, i) => i);
    this.#cursor = data.train.count; // shuffle before the first batch
    this.#x = new Float32Array(settings.batchSize * data.train.pixels);
    this.#labels = new Uint8Array(settings.batchSize);
  }

  /** One SGD step on the next mini-batch (a new random order every epoch). */
  trainStep(): void {
    const { batchSize: n, learningRate, steps } = this.settings;
    const train = this.#data.train;
    if (this.#cursor + n > train.count) {
      this.#rng.shuffle(this.#order);
      this.#cursor = 0;
    }
    const rows = this.#rows;
    gatherBatch(train, this.#order, this.#cursor + rows.from, rows.count, this.#x, this.#labels);
    this.#cursor += n;
    const t0 = performance.now();
    const r = this.net.trainStep(this.#x, this.#labels, rows.count, learningRate, this.#parallel);
    this.result.trainSeconds += (performance.now() - t0) / 1000;
    this.step++;
    const loss = r.lossSum / n;
    const accuracy = r.correct / n;
    const w = this.#window;
    w.loss += loss;
    w.accuracy += accuracy;
    w.steps++;
    if (w.steps === TRAIN_LOG_EVERY || this.step === steps) {
      this.result.train.push({
        step: this.step,
        loss: w.loss / w.steps,
        accuracy: w.accuracy / w.steps,
      });
      w.loss = 0;
      w.accuracy = 0;
      w.steps = 0;
    }
    const k = Math.max(0.01, 1 / this.step);
    const s = this.recent;
    s.loss = Number.isNaN(s.loss) ? loss : s.loss + k * (loss - s.loss);
    s.accuracy = Number.isNaN(s.accuracy) ? accuracy : s.accuracy + k * (accuracy - s.accuracy);
  }

  /** Whether the run evaluates after the current step (step 0, every `evalEvery`, the last). */
  get evalDue(): boolean {
    const { evalEvery, steps } = this.settings;
    return this.step === 0 || this.step % evalEvery === 0 || this.step === steps;
  }

  /** Evaluates on the test images in inference mode and records the point. */
  evaluate(): EvalPoint {
    const { evalSize, probeUnit } = this.settings;
    const point = evaluate(this.net, this.#data.test, evalSize, probeUnit, this.step);
    this.result.evals.push(point);
    return point;
  }

  dispose(): void {
    this.net.dispose();
  }
}

/** Training loss and accuracy are recorded as means over windows of this many steps. */
const TRAIN_LOG_EVERY = 100;

/**
 * Trains the two networks side by side in this thread — the same initial weights, the same
 * mini-batches in the same order — and evaluates both periodically. Needs `init()` to have
 * loaded the library.
 */
export function runExperiment(options: ExperimentOptions): ExperimentResult {
  const settings = resolveSettings(options);
  const start = performance.now();
  const trainers = [
    new Trainer(options, settings, false),
    new Trainer(options, settings, true),
  ] as const;
  const [plain, bn] = trainers;
  const testAccuracy = { plain: Number.NaN, bn: Number.NaN };
  try {
    for (;;) {
      if (plain.evalDue) {
        const a = plain.evaluate();
        const b = bn.evaluate();
        testAccuracy.plain = a.accuracy;
        testAccuracy.bn = b.accuracy;
        options.onEval?.(plain.step, a, b);
      }
      if (plain.step === settings.steps) break;
      plain.trainStep();
      bn.trainStep();
      options.onProgress?.({
        step: plain.step,
        steps: settings.steps,
        plain: { ...plain.recent },
        bn: { ...bn.recent },
        testAccuracy: { ...testAccuracy },
        elapsedSeconds: (performance.now() - start) / 1000,
      });
    }
  } finally {
    for (const t of trainers) t.dispose();
  }
  return {
    settings,
    plain: plain.result,
    bn: bn.result,
    wallSeconds: (performance.now() - start) / 1000,
  };
}
