/**
 * Synchronized batch norm: the hook a module gathers through (`options.sync`), its checks, and
 * the O(C) merges of every replica's statistics and gradient sums. A replica computes its local
 * moments and sums with the usual passes; only what is per channel crosses replicas.
 *
 * What is gathered (float64, one array per replica, in rank order):
 * - forward: `[tag, C, n, mean[C], M2[C]]`, merged with Chan, Golub and LeVeque's pairwise update
 *   (`M2 = M2a + M2b + δ²·na·nb/n`): no sums of squares, so a large mean costs no digits;
 * - backward: `[tag, C, n, Σdy[C], Σdy·(x − mean)[C]]`, summed. The centre is the merged mean
 *   (the forward wrote it into the module's centre buffer), so these are the whole batch's sums
 *   about the global mean, and `dx` is the whole batch's formula with the global `n`.
 *
 * `dWeight` and `dBias` are therefore the whole batch's, the same on every replica, not the
 * replica's part that PyTorch's SyncBatchNorm returns for DDP to average: the summed Σdy and
 * Σdy·x̂ are needed for `dx` anyway, so they cost nothing more; nobody all-reduces them again;
 * and with unequal batch sizes a sum over the whole batch is right where an average of
 * per-replica gradients is not.
 *
 * The tag tells a forward's gather from a backward's, and `C` tells layers apart, so replicas
 * whose calls do not line up get an Error instead of each other's numbers.
 *
 * @module
 */

import type { GradSums } from "./core.js";
import { show, typeName } from "./errors.js";
import type { ChannelScratch } from "./scratch.js";

/**
 * How a module reaches its replicas: `allGather(local)` must return every replica's `local`
 * (its own included) in rank order, synchronously — a blocking exchange such as
 * {@link joinSyncGroup}'s, or any transport that can answer at once. Every replica must call its
 * module's training forward and backward in the same order; each call gathers once.
 */
export interface BatchNormSync {
  /** This replica's index, an integer in [0, size). */
  readonly rank: number;
  /** Number of replicas, ≥ 1. */
  readonly size: number;
  allGather(local: Float64Array): ArrayLike<ArrayLike<number>>;
}

/** Merged statistics of the whole batch, in float64. */
export interface GlobalMoments {
  readonly mean: Float64Array;
  /** Biased variance, `M2/n`. */
  readonly variance: Float64Array;
  /** Values per channel over all replicas. */
  readonly n: number;
}

const TAG_MOMENTS = 1;
const TAG_GRADS = 2;
const HEADER = 3;

/** Checks `options.sync`; returns it (or `null` when absent). */
export function checkSync(sync: unknown, where: string): BatchNormSync | null {
  if (sync === undefined || sync === null) return null;
  const name = "options.sync";
  if (typeof sync !== "object") {
    throw new TypeError(
      `${where}: ${name} must be an object { rank, size, allGather }, got ${show(sync)}`,
    );
  }
  const { rank, size, allGather } = sync as Record<string, unknown>;
  if (!Number.isSafeInteger(size) || (size as number) < 1) {
    throw new RangeError(`${where}: ${name}.size must be an integer ≥ 1, got ${show(size)}`);
  }
  if (!Number.isSafeInteger(rank) || (rank as number) < 0 || (rank as number) >= (size as number)) {
    throw new RangeError(
      `${where}: ${name}.rank must be an integer in [0, ${size as number}), got ${show(rank)}`,
    );
  }
  if (typeof allGather !== "function") {
    throw new TypeError(
      `${where}: ${name}.allGather must be a function, got ${typeName(allGather)}`,
    );
  }
  return sync as BatchNormSync;
}

/** Packs `[tag, C, n, a[C], b[C]]` for a gather. */
function pack(tag: number, n: number, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const C = a.length;
  const out = new Float64Array(HEADER + 2 * C);
  out[0] = tag;
  out[1] = C;
  out[2] = n;
  for (let c = 0; c < C; c++) {
    out[HEADER + c] = a[c] as number;
    out[HEADER + C + c] = b[c] as number;
  }
  return out;
}

/**
 * Gathers `local` and checks what came back: one array per replica, each a gather of the same
 * kind for the same number of channels, with a count ≥ 1. Throws an Error saying what differs
 * (every replica sees the same arrays, so every replica throws the same error).
 */
function gather(sync: BatchNormSync, local: Float64Array, where: string): ArrayLike<number>[] {
  const what = local[0] === TAG_MOMENTS ? "forward (statistics)" : "backward (gradient sums)";
  const C = local[1] as number;
  const all = sync.allGather(local);
  if (all === null || typeof all !== "object" || all.length !== sync.size) {
    throw new Error(
      `${where}: sync.allGather must return one array per replica (${sync.size}), got ` +
        (all !== null && typeof all === "object" ? `${all.length}` : typeName(all)),
    );
  }
  const out: ArrayLike<number>[] = [];
  for (let r = 0; r < sync.size; r++) {
    const a = all[r];
    const got = a === null || typeof a !== "object" ? -1 : a.length;
    if (got !== local.length) {
      throw new Error(
        `${where}: sync.allGather returned ${got < 0 ? typeName(a) : `${got} values`} for rank ${r}, ` +
          `expected ${local.length} (a ${what} gather of ${C} channels)`,
      );
    }
    const arr = a as ArrayLike<number>;
    if (arr[0] !== local[0] || arr[1] !== C) {
      const theirs = arr[0] === TAG_MOMENTS ? "forward" : arr[0] === TAG_GRADS ? "backward" : "?";
      throw new Error(
        `${where}: replicas out of step: rank ${sync.rank} is in a ${what} of ${C} channels, ` +
          `rank ${r} in a ${theirs} of ${show(arr[1])} channels (every replica must run the same ` +
          "layers' training forward and backward in the same order)",
      );
    }
    const n = arr[2] as number;
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new Error(`${where}: rank ${r} sent a count of ${show(n)} values per channel`);
    }
    out.push(arr);
  }
  return out;
}

/**
 * The whole batch's mean and biased variance from this replica's (`mean`, `variance` over `n`
 * values per channel; float32 from the kernels), merged in rank order so that every replica
 * computes the same bits.
 *
 * @throws RangeError when the whole batch has one value per channel (PyTorch's rule, checked
 *   on the total since a replica may hold one); Error when the gather fails or does not match.
 */
export function syncMoments(
  sync: BatchNormSync,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  n: number,
  where: string,
): GlobalMoments {
  const C = mean.length;
  const m2 = Float64Array.from(variance, (v) => v * n);
  const all = gather(sync, pack(TAG_MOMENTS, n, mean, m2), where);
  const gMean = new Float64Array(C);
  const gM2 = new Float64Array(C);
  let total = 0;
  for (const part of all) {
    const nb = part[2] as number;
    const merged = total + nb;
    // Chan et al.: the weights are exact in float64 (counts < 2^53) and δ is a difference of
    // means, never of sums, so large means do not cancel.
    const wb = nb / merged;
    const cross = (total * nb) / merged;
    for (let c = 0; c < C; c++) {
      const delta = (part[HEADER + c] as number) - (gMean[c] as number);
      gMean[c] = (gMean[c] as number) + delta * wb;
      gM2[c] = (gM2[c] as number) + (part[HEADER + C + c] as number) + delta * delta * cross;
    }
    total = merged;
  }
  if (total <= 1) {
    throw new RangeError(
      `${where}: expected more than 1 value per channel when training, got ${total} over ` +
        `${sync.size} replica${sync.size === 1 ? "" : "s"}`,
    );
  }
  return { mean: gMean, variance: gM2.map((v) => v / total), n: total };
}

/**
 * {@link syncMoments} over a module's per-channel buffers, with the merged mean written into
 * `s.mean` as the forward's centre (float32, as an unsynchronized module's is).
 */
export function syncScratch(
  sync: BatchNormSync,
  s: ChannelScratch,
  n: number,
  where: string,
): GlobalMoments {
  const global = syncMoments(sync, s.mean.view(), s.variance.view(), n, where);
  s.mean.view().set(global.mean);
  return global;
}

/**
 * The whole batch's `Σdy` and `Σdy·(x − mean)` from this replica's (taken about the merged
 * mean), summed in rank order.
 */
export function syncGradSums(sync: BatchNormSync, local: GradSums, where: string): GradSums {
  const C = local.sumDy.length;
  const all = gather(sync, pack(TAG_GRADS, local.n, local.sumDy, local.sumDyXc), where);
  const gDy = new Float64Array(C);
  const gDyXc = new Float64Array(C);
  let total = 0;
  for (const part of all) {
    total += part[2] as number;
    for (let c = 0; c < C; c++) {
      gDy[c] = (gDy[c] as number) + (part[HEADER + c] as number);
      gDyXc[c] = (gDyXc[c] as number) + (part[HEADER + C + c] as number);
    }
  }
  return { sumDy: gDy, sumDyXc: gDyXc, n: total };
}

/**
 * Element-wise sum of every replica's `local` (the same length on all), in rank order, so every
 * replica gets the same bits: the all-reduce of data-parallel training, over the same hook.
 *
 * @throws Error when the replicas' lengths differ or the gather fails.
 */
export function allReduceSum(sync: BatchNormSync, local: Float64Array): Float64Array {
  const all = sync.allGather(local);
  if (all === null || typeof all !== "object" || all.length !== sync.size) {
    throw new Error(`allReduceSum: allGather must return ${sync.size} arrays`);
  }
  const out = new Float64Array(local.length);
  for (let r = 0; r < sync.size; r++) {
    const part = all[r] as ArrayLike<number>;
    if (part?.length !== local.length) {
      throw new Error(
        `allReduceSum: rank ${r} sent ${part?.length} values, rank ${sync.rank} ${local.length}`,
      );
    }
    for (let i = 0; i < out.length; i++) out[i] = (out[i] as number) + (part[i] as number);
  }
  return out;
}
