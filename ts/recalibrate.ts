/**
 * Population statistics (Ioffe & Szegedy 2015, Algorithm 2, steps 8–11): after training, the
 * running statistics are recomputed from the trained network's own activations, `E[x]` as the
 * average of the batch means and `Var[x]` as the average of the unbiased batch variances,
 * instead of the moving averages that mixed in activations of earlier weights.
 *
 * @module
 */
import {
  type Backend,
  type BackendKind,
  dimsLength,
  type F32Buffer,
  perChannel,
} from "./backend.js";
import { batchMoments } from "./core.js";
import { checkOptions, isTyped, show, typeName } from "./errors.js";
import { resolveBackend } from "./init.js";
import { BufferSet } from "./lifetime.js";
import { checkBackend, checkChannelCount, checkLayout } from "./options.js";
import { allocScratch, type ChannelScratch } from "./scratch.js";
import { dimsOf, type Layout } from "./shape.js";
import { checkTensor, Tensor } from "./tensor.js";

/** One batch for {@link BatchNorm.recalibrate}: a Tensor, or values with their shape. */
export type CalibrationBatch =
  | Tensor
  | { readonly x: Float32Array | Tensor; readonly shape?: readonly number[] };

/** What recalibration needs of a module, or of {@link populationStatistics}. */
export interface CalibrationTarget {
  readonly backend: Backend;
  readonly channels: number;
  readonly layout: Layout;
  /** Writes the result; called once, only after every batch was accepted. */
  commit(mean: Float64Array, variance: Float64Array, batches: number): void;
  /** Ends the refusal of another back end's tensor (`checkTensor`'s `runsOn`). */
  readonly runsOn?: string;
}

/**
 * Sums of batch means and unbiased batch variances in float64. Every batch counts once, as in
 * Algorithm 2 and in PyTorch's cumulative average (`momentum: null`): batches of different
 * sizes are averaged with equal weights, each variance unbiased with its own size.
 */
class Accumulator {
  readonly #target: CalibrationTarget;
  readonly #where: string;
  readonly #buffers: BufferSet;
  readonly #mean: Float64Array;
  readonly #variance: Float64Array;
  /** The copy of a Float32Array batch in back-end memory, reused while the size holds. */
  #copy: F32Buffer | undefined;
  #scratchSet: ChannelScratch | undefined;
  #count = 0;

  constructor(target: CalibrationTarget, where: string) {
    this.#target = target;
    this.#where = where;
    this.#buffers = new BufferSet(target.backend);
    this.#mean = new Float64Array(target.channels);
    this.#variance = new Float64Array(target.channels);
  }

  add(batch: unknown): void {
    const t = this.#target;
    const name = `batches[${this.#count}]`;
    const { x, shape } = unpack(batch, this.#where, name);
    const where = this.#where;
    let dims: ReturnType<typeof dimsOf>;
    let xb: F32Buffer;
    if (x instanceof Tensor) {
      checkTensor(x, t.backend, where, name, t.runsOn);
      if (shape !== undefined && shape.join() !== x.shape.join()) {
        throw new RangeError(
          `${where}: ${name}.shape [${shape.join(", ")}] is not the tensor's [${x.shape.join(", ")}]`,
        );
      }
      dims = dimsOf(x.shape, t.layout, where, `${name}.shape`, t.channels);
      xb = x.buffer;
    } else {
      if (!Array.isArray(shape)) {
        throw new TypeError(
          `${where}: ${name}.shape must be an array of dimensions, got ${show(shape)}`,
        );
      }
      dims = dimsOf(shape, t.layout, where, `${name}.shape`, t.channels);
      if (x.length !== dimsLength(dims)) {
        throw new RangeError(
          `${where}: ${name}.x has ${x.length} values but shape [${shape.join(", ")}] needs ${dimsLength(dims)}`,
        );
      }
      const values = t.backend.pin(x);
      if (this.#copy?.length !== x.length) {
        this.#buffers.release(this.#copy);
        this.#copy = this.#buffers.alloc(x.length);
      }
      xb = this.#copy;
      xb.view().set(values());
    }
    const m = perChannel(dims);
    if (m <= 1) {
      throw new RangeError(
        `${where}: expected more than 1 value per channel in ${name} (its variance is unbiased with m/(m − 1)), got m = ${m}`,
      );
    }
    const s = this.#scratch();
    batchMoments(t.backend, xb, dims, s);
    const mean = s.mean.view();
    const variance = s.variance.view();
    const unbias = m / (m - 1);
    for (let c = 0; c < t.channels; c++) {
      this.#mean[c] = (this.#mean[c] as number) + (mean[c] as number);
      this.#variance[c] = (this.#variance[c] as number) + (variance[c] as number) * unbias;
    }
    this.#count++;
  }

  commit(): void {
    if (this.#count === 0) {
      throw new RangeError(`${this.#where}: batches held no batch: at least one is needed`);
    }
    const n = this.#count;
    this.#target.commit(
      this.#mean.map((v) => v / n),
      this.#variance.map((v) => v / n),
      n,
    );
  }

  free(): void {
    this.#buffers.free();
  }

  /** The per-channel buffers, allocated with the first batch (after it was checked). */
  #scratch(): ChannelScratch {
    this.#scratchSet ??= allocScratch(
      this.#buffers,
      this.#target.channels,
      this.#where,
      "numFeatures",
    );
    return this.#scratchSet;
  }
}

function unpack(
  batch: unknown,
  where: string,
  name: string,
): { x: Float32Array | Tensor; shape: readonly number[] | undefined } {
  if (batch instanceof Tensor) return { x: batch, shape: undefined };
  if (typeof batch === "object" && batch !== null) {
    const { x, shape } = batch as { x?: unknown; shape?: unknown };
    if (x instanceof Tensor || isTyped(x, "Float32Array")) {
      return { x, shape: shape as readonly number[] | undefined };
    }
    throw new TypeError(
      `${where}: ${name}.x must be a Float32Array or a Tensor, got ${typeName(x)}`,
    );
  }
  throw new TypeError(`${where}: ${name} must be a Tensor or { x, shape }, got ${typeName(batch)}`);
}

/**
 * Recomputes the population statistics from `batches` (an iterable, or an async iterable, in
 * which case the result is a Promise). Nothing is written unless every batch is accepted.
 */
export function recalibrate(
  target: CalibrationTarget,
  batches: unknown,
  where: string,
): void | Promise<void> {
  const acc = new Accumulator(target, where);
  if (typeof batches === "object" && batches !== null && Symbol.asyncIterator in batches) {
    return (async () => {
      try {
        for await (const b of batches as AsyncIterable<unknown>) acc.add(b);
        acc.commit();
      } finally {
        acc.free();
      }
    })();
  }
  if (typeof batches !== "object" || batches === null || !(Symbol.iterator in batches)) {
    throw new TypeError(
      `${where}: batches must be an iterable or async iterable of batches, got ${typeName(batches)}`,
    );
  }
  try {
    for (const b of batches as Iterable<unknown>) acc.add(b);
    acc.commit();
  } finally {
    acc.free();
  }
}

/** The result of {@link populationStatistics}. */
export interface PopulationStatistics {
  /** E[x]: the average of the batches' means, per channel. */
  readonly runningMean: Float32Array;
  /** Var[x]: the average of the batches' unbiased variances, per channel. */
  readonly runningVar: Float32Array;
  /** The number of batches. */
  readonly batches: number;
}

/** Options of {@link populationStatistics}. */
export interface PopulationOptions {
  /** `"NCHW"` (default: channels second) or `"NHWC"` (channels last), for every batch. */
  readonly layout?: Layout;
  /** The back end that computes the statistics (default `"auto"`); Tensor batches must be its. */
  readonly backend?: "auto" | BackendKind;
}

/**
 * Population statistics (Ioffe & Szegedy 2015, Algorithm 2), the functional form of
 * `bn.recalibrate`: the average of the batches' means and of their unbiased variances, each
 * batch counting once, as the module computes them, for `batchNorm(x, shape, { runningMean,
 * runningVar })`.
 *
 * @param batches an iterable (or async iterable: a Promise is returned) of Tensors or
 *   `{ x, shape }` with `x` a Float32Array or Tensor.
 * @param channels the number of channels, C, of every batch.
 * @throws TypeError / RangeError naming the bad argument or batch.
 */
export function populationStatistics(
  batches: Iterable<CalibrationBatch>,
  channels: number,
  options?: PopulationOptions,
): PopulationStatistics;
export function populationStatistics(
  batches: AsyncIterable<CalibrationBatch>,
  channels: number,
  options?: PopulationOptions,
): Promise<PopulationStatistics>;
export function populationStatistics(
  batches: Iterable<CalibrationBatch> | AsyncIterable<CalibrationBatch>,
  channels: number,
  options?: PopulationOptions,
): PopulationStatistics | Promise<PopulationStatistics> {
  const where = "populationStatistics";
  checkChannelCount(channels, where, "channels");
  const o = checkOptions(options, where) as PopulationOptions;
  const layout = checkLayout(o.layout ?? "NCHW", where);
  const kind = checkBackend(o.backend ?? "auto", where);
  const backend = resolveBackend(kind);
  let result: PopulationStatistics | undefined;
  const commit = (mean: Float64Array, variance: Float64Array, count: number) => {
    result = {
      runningMean: Float32Array.from(mean),
      runningVar: Float32Array.from(variance),
      batches: count,
    };
  };
  const runsOn = `options.backend is "${kind}" (${backend.kind})`;
  const target = { backend, channels, layout, commit, runsOn };
  const done = recalibrate(target, batches, where);
  const got = () => result as PopulationStatistics;
  return done instanceof Promise ? done.then(got) : got();
}
