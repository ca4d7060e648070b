/**
 * The functional ops' argument checks and per-call memory: each checks everything before
 * anything is changed or allocated, and names the bad argument.
 *
 * @module
 */
import type { Backend, Dims, F32Buffer } from "./backend.js";
import { dimsLength, perChannel } from "./backend.js";
import type { Affine } from "./core.js";
import { checkChannelValues, checkOptions, isTyped, typeName } from "./errors.js";
import type { BatchNormBackwardOptions, BatchNormFunctionOptions } from "./functional.js";
import { resolveBackend } from "./init.js";
import { BufferSet } from "./lifetime.js";
import { checkBackend, checkLayout } from "./options.js";
import { allocScratch, type ChannelScratch } from "./scratch.js";
import { dimsOf, type Layout, sameShape } from "./shape.js";
import { checkOut, checkTensor, Tensor } from "./tensor.js";

/** A checked call's input: where it lives and how it is seen. */
export interface Input {
  backend: Backend;
  dims: Dims;
  shape: readonly number[];
  /** A Float32Array input's values, re-read after allocations (see `Backend.pin`). */
  values?: () => Float32Array;
}

/** Checks `x` and its shape, and finds the back end it runs on. */
function checkInput(
  x: unknown,
  shape: readonly number[] | undefined,
  layout: Layout,
  requested: unknown,
  where: string,
  name: string,
): Input {
  const kind = checkBackend(requested ?? "auto", where);
  if (x instanceof Tensor) {
    if (shape !== undefined) sameShape(shape, x.shape, where, "shape");
    const backend = x.backend;
    if (kind !== "auto" && resolveBackend(kind) !== backend) {
      throw new TypeError(
        `${where}: ${name} is a tensor of the ${backend.kind} back end, but options.backend is "${kind}"`,
      );
    }
    checkTensor(x, backend, where, name);
    return { backend, dims: dimsOf(x.shape, layout, where, `${name}.shape`), shape: x.shape };
  }
  if (!isTyped(x, "Float32Array")) {
    throw new TypeError(
      `${where}: ${name} must be a Float32Array or a Tensor, got ${typeName(x)} (convert with Float32Array.from)`,
    );
  }
  if (!Array.isArray(shape)) {
    throw new TypeError(`${where}: shape must be an array of dimensions, got ${typeName(shape)}`);
  }
  const dims = dimsOf(shape, layout, where, "shape");
  if (x.length !== dimsLength(dims)) {
    throw new RangeError(
      `${where}: ${name} has ${x.length} values but shape [${shape.join(", ")}] needs ${dimsLength(dims)}`,
    );
  }
  const backend = resolveBackend(kind);
  return { backend, dims, shape, values: backend.pin(x) };
}

/** What every functional op checks first: its options (an object), their layout, and `x`. */
export function checkCall<O extends { layout?: Layout; backend?: unknown }>(
  x: unknown,
  shape: readonly number[] | undefined,
  options: O | undefined,
  where: string,
): { o: O; input: Input } {
  const o = checkOptions(options, where) as O;
  const layout = checkLayout(o.layout ?? "NCHW", where);
  return { o, input: checkInput(x, shape, layout, o.backend, where, "x") };
}

/** PyTorch's rule: batch statistics of one value per channel are meaningless. */
export function checkBatch(input: Input, where: string): void {
  if (perChannel(input.dims) <= 1) {
    throw new RangeError(
      `${where}: expected more than 1 value per channel when training, got input shape [${input.shape.join(", ")}]`,
    );
  }
}

export function checkAffine(
  o: { weight?: unknown; bias?: unknown },
  C: number,
  where: string,
): Affine {
  const values = (v: unknown, name: string) =>
    v == null ? null : checkChannelValues(v, C, where, `options.${name}`, "C");
  return { weight: values(o.weight, "weight"), bias: values(o.bias, "bias") };
}

/** The running statistics: both or neither, Float32Arrays of C values, required in inference. */
export function checkRunning(
  o: BatchNormFunctionOptions,
  C: number,
  training: boolean,
  where: string,
): { mean: Float32Array; variance: Float32Array } | undefined {
  const { runningMean: mean, runningVar: variance } = o;
  if (mean == null && variance == null) {
    if (!training) {
      throw new TypeError(
        `${where}: options.runningMean and options.runningVar are required when training is false`,
      );
    }
    return undefined;
  }
  for (const [name, v] of [
    ["runningMean", mean],
    ["runningVar", variance],
  ] as const) {
    if (!isTyped(v, "Float32Array")) {
      throw new TypeError(
        `${where}: options.${name} must be a Float32Array (updated in place), got ${typeName(v)}`,
      );
    }
    checkChannelValues(v, C, where, `options.${name}`, "C");
  }
  return { mean: mean as Float32Array, variance: variance as Float32Array };
}

/** A backward's given statistics (both or neither; required unless training). */
export function checkStatistics(
  o: BatchNormBackwardOptions,
  C: number,
  training: boolean,
  where: string,
): { mean: ArrayLike<number>; variance: ArrayLike<number> } | undefined {
  if (o.mean === undefined && o.variance === undefined && training) return undefined;
  if (o.mean === undefined || o.variance === undefined) {
    throw new TypeError(
      `${where}: options.mean and options.variance are required ${training ? "together" : "when training is false (the running statistics the forward used)"}`,
    );
  }
  return {
    mean: checkChannelValues(o.mean, C, where, "options.mean", "C"),
    variance: checkChannelValues(o.variance, C, where, "options.variance", "C"),
  };
}

export function checkOutput(
  out: unknown,
  x: Tensor,
  backend: Backend,
  where: string,
): Tensor | undefined {
  const t = checkOut({ out }, where);
  if (t === undefined) return undefined;
  checkTensor(t, backend, where, "options.out");
  sameShape(t.shape, x.shape, where, "options.out");
  if (t === x) throw new RangeError(`${where}: options.out must not be x`);
  return t;
}

/** Runs `body` with per-channel buffers for the call, freed afterwards whatever happens. */
export function withScratch<T>(
  backend: Backend,
  channels: number,
  where: string,
  body: (s: ChannelScratch, buffers: BufferSet) => T,
): T {
  const buffers = new BufferSet(backend);
  try {
    return body(allocScratch(buffers, channels, where, "the channel count"), buffers);
  } finally {
    buffers.free();
  }
}

/**
 * A copy of a Float32Array input in the call's back-end memory. Its values are read through
 * the getter `pin` made before any allocation, which re-views a wasm-memory view that the
 * allocations detached.
 */
export function copyIn(buffers: BufferSet, input: { values?: () => Float32Array }): F32Buffer {
  const values = (input.values as () => Float32Array)();
  const b = buffers.alloc(values.length);
  b.view().set((input.values as () => Float32Array)());
  return b;
}
