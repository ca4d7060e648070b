/**
 * Training beyond PyTorch's batch norm: Batch Renormalization (Ioffe 2017) and Ghost Batch
 * Norm (Hoffer et al. 2017; Keras's `virtual_batch_size`). Both change only how a forward with
 * batch statistics is split and which O(C) coefficients it uses: the O(N) passes are the same
 * kernels, run on sub-ranges of the tensor (one per ghost batch) through `Backend.subrange`.
 *
 * @module
 */
import type { Act } from "./activation.js";
import { type Backend, type Dims, type F32Buffer, perChannel } from "./backend.js";
import {
  type Affine,
  applyForward,
  type BackwardBuffers,
  type BatchMoments,
  backwardPasses,
  batchCoefficients,
  batchMoments,
  type Correction,
  type ForwardRecord,
  forwardCoefficients,
  type GradSums,
  type ParamGradients,
} from "./core.js";
import { show } from "./errors.js";
import type { BufferSet } from "./lifetime.js";
import type { ChannelScratch } from "./scratch.js";
import { type BatchNormSync, type GlobalMoments, syncScratch } from "./sync.js";

/** Batch Renormalization's clipping limits: `r ∈ [1/rMax, rMax]`, `d ∈ [−dMax, dMax]`. */
export interface RenormLimits {
  /** ≥ 1; 1 with `dMax = 0` is plain batch norm. */
  readonly rMax: number;
  /** ≥ 0. */
  readonly dMax: number;
}

/** A checked, frozen copy of `renorm` (or `null` for none). */
export function checkRenorm(renorm: unknown, where: string, name: string): RenormLimits | null {
  if (renorm === null || renorm === undefined) return null;
  if (typeof renorm !== "object" || Array.isArray(renorm)) {
    throw new TypeError(`${where}: ${name} must be { rMax, dMax } or null, got ${show(renorm)}`);
  }
  const { rMax, dMax } = renorm as { rMax?: unknown; dMax?: unknown };
  const limit = (v: unknown, key: string, min: number) => {
    if (typeof v !== "number") {
      throw new TypeError(`${where}: ${name}.${key} must be a number ≥ ${min}, got ${show(v)}`);
    }
    // Infinity is allowed: no clipping on that side (NaN fails the comparison).
    if (!(v >= min)) {
      throw new RangeError(`${where}: ${name}.${key} must be ≥ ${min}, got ${show(v)}`);
    }
    return v;
  };
  return Object.freeze({ rMax: limit(rMax, "rMax", 1), dMax: limit(dMax, "dMax", 0) });
}

/** `limits`, refused (TypeError) when there are no running statistics to correct toward. */
export function renormNeedsRunningStats(
  limits: RenormLimits | null,
  trackRunningStats: boolean,
  where: string,
  name: string,
): RenormLimits | null {
  if (limits !== null && !trackRunningStats) {
    throw new TypeError(
      `${where}: ${name} needs trackRunningStats: true (it corrects toward the running statistics), got trackRunningStats: false`,
    );
  }
  return limits;
}

/** A checked virtual (ghost) batch size: a positive integer, or `null` for none. */
export function checkVirtualBatchSize(k: unknown, where: string, name: string): number | null {
  if (k === null || k === undefined) return null;
  if (typeof k !== "number" || !Number.isSafeInteger(k) || k < 1) {
    const error = typeof k === "number" ? RangeError : TypeError;
    throw new error(`${where}: ${name} must be a positive integer or null, got ${show(k)}`);
  }
  return k;
}

/**
 * The number of ghost batches of an input whose batch axis has `n` entries: `n / k`. Throws a
 * RangeError naming both when `k` does not divide `n`, or when a ghost batch would hold a
 * single value per channel (its variance would be meaningless).
 */
export function ghostCount(
  k: number | null,
  shape: readonly number[],
  dims: Dims,
  where: string,
): number {
  if (k === null) return 1;
  const n = shape[0] as number;
  if (n % k !== 0) {
    throw new RangeError(
      `${where}: the batch size ${n} (input shape [${shape.join(", ")}]) is not a multiple of virtualBatchSize ${k}`,
    );
  }
  const ghosts = n / k;
  if (perChannel(dims) / ghosts <= 1) {
    throw new RangeError(
      `${where}: expected more than 1 value per channel in each ghost batch of virtualBatchSize ${k}, got input shape [${shape.join(", ")}]`,
    );
  }
  return ghosts;
}

/**
 * r and d of Batch Renormalization for one batch, into `out`: with `σ_B = √(var + eps)` and
 * `σ = √(runningVar + eps)`, `r = clip(σ_B/σ, 1/rMax, rMax)`,
 * `d = clip((mean − runningMean)/σ, −dMax, dMax)`.
 */
export function renormCorrection(
  limits: RenormLimits,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  running: { mean: ArrayLike<number>; variance: ArrayLike<number> },
  eps: number,
  out: Correction,
): void {
  const { rMax, dMax } = limits;
  for (let c = 0; c < out.r.length; c++) {
    const sigma = Math.sqrt((running.variance[c] as number) + eps);
    const r = Math.sqrt((variance[c] as number) + eps) / sigma;
    const d = ((mean[c] as number) - (running.mean[c] as number)) / sigma;
    out.r[c] = Math.min(rMax, Math.max(1 / rMax, r));
    out.d[c] = Math.min(dMax, Math.max(-dMax, d));
  }
}

/** One ghost batch of a forward: where it lies in the tensor, and what its backward needs. */
export interface Part {
  readonly offset: number;
  readonly length: number;
  readonly record: ForwardRecord;
  /**
   * This ghost batch's forward coefficients, kept when an activation is fused and there are
   * several ghost batches: its backward recomputes the activation's input from them, and the
   * scratch holds only the last ghost batch's.
   */
  readonly coefficients?: { readonly scale: Float32Array; readonly shift: Float32Array };
}

/** What a forward with batch statistics leaves: its parts, and the statistics for the update. */
/**
 * The parts of a forward, and its batch moments: with ghost batches, the mean over them of
 * their means and of their biased variances, and `count` the values per channel of one.
 */
export interface BatchStatsForward extends BatchMoments {
  readonly parts: Part[];
}

/** A ghost batch's views of {@link PartScratch}'s float64 arrays. */
interface GhostViews {
  readonly invstd: Float64Array;
  readonly correction: Correction;
}

/**
 * Per-forward arrays for {@link batchStatsForward}, kept between calls and re-made only when
 * the number of ghost batches changes: per ghost batch its mean (in back-end memory: the passes
 * read it), its 1/σ_B, and r and d when renormalizing.
 */
export class PartScratch {
  readonly #buffers: BufferSet;
  readonly #channels: number;
  #ghosts = 0;
  #centers: F32Buffer | undefined;
  #invstd = new Float64Array(0);
  #r = new Float64Array(0);
  #d = new Float64Array(0);
  #sums = { mean: new Float64Array(0), variance: new Float64Array(0) };
  /** Each ghost batch's views of the arrays above, made with them (not at every forward). */
  #views: GhostViews[] = [];

  constructor(buffers: BufferSet, channels: number) {
    this.#buffers = buffers;
    this.#channels = channels;
  }

  /**
   * Makes room for `ghosts` ghost batches. Returns whether the arrays were re-made, which
   * invalidates the records of an earlier forward. Allocates before freeing, so a failure
   * (memory full) changes nothing.
   */
  ensure(ghosts: number): boolean {
    if (ghosts === this.#ghosts) return false;
    const C = this.#channels;
    const centers = ghosts > 1 ? this.#buffers.alloc(ghosts * C) : undefined;
    this.#buffers.release(this.#centers);
    this.#centers = centers;
    this.#invstd = new Float64Array(ghosts * C);
    this.#r = new Float64Array(ghosts * C);
    this.#d = new Float64Array(ghosts * C);
    this.#sums = { mean: new Float64Array(C), variance: new Float64Array(C) };
    this.#views = Array.from({ length: ghosts }, (_, g) => {
      const at = (a: Float64Array) => a.subarray(g * C, (g + 1) * C);
      return { invstd: at(this.#invstd), correction: { r: at(this.#r), d: at(this.#d) } };
    });
    this.#ghosts = ghosts;
    return true;
  }

  /** Ghost batch `g`'s arrays (one ghost: its centre is the scratch's batch mean). */
  part(be: Backend, g: number, s: ChannelScratch) {
    const C = this.#channels;
    const center = this.#centers === undefined ? s.mean : be.subrange(this.#centers, g * C, C);
    const { invstd, correction } = this.#views[g] as GhostViews;
    return { center, invstd, correction };
  }

  get sums() {
    return this.#sums;
  }
}

/** How a forward with batch statistics runs. */
export interface BatchStatsPlan {
  readonly affine: Affine;
  readonly eps: number;
  /** Number of ghost batches (1: the whole batch). */
  readonly ghosts: number;
  /** Renormalize against these running statistics (as they were before this step). */
  readonly renorm: {
    limits: RenormLimits;
    running: { mean: ArrayLike<number>; variance: ArrayLike<number> };
  } | null;
  /** Replicas whose statistics are merged with this batch's (one ghost batch only), or none. */
  readonly sync?: BatchNormSync | null;
  /** The activation fused after the normalization, or none. */
  readonly act?: Act | null;
}

/**
 * `y` = batch norm of `x` with batch statistics, each ghost batch (a contiguous sub-range: the
 * batch axis is outermost in both layouts) normalized with its own, and renormalized when
 * planned. With one ghost batch and no renorm these are plain batch norm's calls, bit for bit.
 * With `y` null only the parts are computed (what a stateless backward needs of its forward).
 */
export function batchStatsForward(
  be: Backend,
  x: F32Buffer,
  y: F32Buffer | null,
  dims: Dims,
  s: ChannelScratch,
  scratch: PartScratch,
  plan: BatchStatsPlan,
): BatchStatsForward {
  const G = plan.ghosts;
  const sub: Dims = { outer: dims.outer / G, channels: dims.channels, inner: dims.inner };
  const length = sub.outer * sub.channels * sub.inner;
  const parts: Part[] = [];
  const { mean: meanSum, variance: varSum } = scratch.sums;
  let global: GlobalMoments | null = null;
  for (let g = 0; g < G; g++) {
    const p = scratch.part(be, g, s);
    const xg = G === 1 ? x : be.subrange(x, g * length, length);
    if (G === 1) batchMoments(be, xg, sub, s);
    else be.moments(xg, sub, s.ws, p.center, s.variance);
    // Synchronized: the whole batch's statistics, the mean written back as the centre.
    global = plan.sync ? syncScratch(plan.sync, s, perChannel(sub), "BatchNorm.forward") : null;
    const mean = p.center.view();
    const variance = global?.variance ?? s.variance.view();
    let correction: Correction | null = null;
    if (plan.renorm !== null) {
      correction = p.correction;
      renormCorrection(
        plan.renorm.limits,
        mean,
        variance,
        plan.renorm.running,
        plan.eps,
        correction,
      );
    }
    if (global === null && correction === null) {
      batchCoefficients(be, s, plan.affine, plan.eps, p.invstd);
    } else forwardCoefficients(s, plan.affine, variance, plan.eps, p.invstd, correction);
    if (y !== null) {
      const yg = G === 1 ? y : be.subrange(y, g * length, length);
      applyForward(be, xg, yg, sub, p.center, s, plan.act ?? null);
    }
    // Written out, not spread from another object: the spread took a third of a training
    // forward's time at [2, 4] (V8's object-clone path).
    const record = {
      dims: sub,
      center: p.center,
      invstd: p.invstd,
      weight: null,
      batchStats: true,
      correction,
      act: plan.act,
    };
    const part = { offset: g * length, length, record };
    parts.push(
      plan.act && G > 1
        ? {
            ...part,
            coefficients: { scale: s.scale.view().slice(), shift: s.shift.view().slice() },
          }
        : part,
    );
    if (G === 1) break;
    for (let c = 0; c < dims.channels; c++) {
      meanSum[c] = (g === 0 ? 0 : (meanSum[c] as number)) + (mean[c] as number) / G;
      varSum[c] = (g === 0 ? 0 : (varSum[c] as number)) + (variance[c] as number) / G;
    }
  }
  if (global !== null) return { parts, ...global, count: global.n, inScratch: false };
  const count = perChannel(sub);
  return G === 1
    ? { parts, mean: s.mean.view(), variance: s.variance.view(), count, inScratch: true }
    : { parts, mean: meanSum, variance: varSum, count, inScratch: false };
}

/**
 * The backward of a forward's parts, each ghost batch through its own statistics, with the
 * parameter gradients summed over them; `weight` is the one the forward used. `reduce` merges
 * a synchronized forward's sums with the other replicas' (one part only).
 */
export function partsBackward(
  be: Backend,
  parts: readonly Part[],
  weight: ArrayLike<number> | null,
  io: BackwardBuffers,
  s: ChannelScratch,
  reduce?: ((local: GradSums) => GradSums) | null,
): ParamGradients {
  if (parts.length === 1) {
    return backwardPasses(be, withWeight((parts[0] as Part).record, weight), io, s, reduce);
  }
  // Each ghost batch's float32 sums added in float64 and rounded once at the end.
  const dWeight = new Float64Array(s.sumDy.length);
  const dBias = new Float64Array(s.sumDy.length);
  for (const { offset, length, record, coefficients } of parts) {
    const sub = (b: F32Buffer) => be.subrange(b, offset, length);
    if (coefficients !== undefined) {
      s.scale.view().set(coefficients.scale);
      s.shift.view().set(coefficients.shift);
    }
    const g = backwardPasses(
      be,
      withWeight(record, weight),
      { x: sub(io.x), dy: sub(io.dy), dx: sub(io.dx) },
      s,
    );
    for (let c = 0; c < dWeight.length; c++) {
      dWeight[c] = (dWeight[c] as number) + (g.dWeight[c] as number);
      dBias[c] = (dBias[c] as number) + (g.dBias[c] as number);
    }
  }
  return { dWeight: new Float32Array(dWeight), dBias: new Float32Array(dBias) };
}

/**
 * `record` with `weight`, written out field by field: an object spread took as long as the
 * rest of a backward call at [2, 4] (V8's object-clone path).
 */
function withWeight(record: ForwardRecord, weight: ArrayLike<number> | null): ForwardRecord {
  const { dims, center, invstd, batchStats } = record;
  const [correction, act] = [record.correction ?? null, record.act ?? null];
  // Every field, checked: a field added to ForwardRecord must be copied here too.
  return {
    dims,
    center,
    invstd,
    weight,
    batchStats,
    correction,
    act,
  } satisfies Required<ForwardRecord>;
}
