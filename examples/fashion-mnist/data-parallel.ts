/**
 * Data-parallel training for the demo: each of `size` replicas (worker threads) takes its rows of
 * every mini-batch, its BatchNorms gather the whole batch's statistics (synchronized BN), and the
 * dense layers' gradients and the batch's loss and accuracy are summed over the replicas through
 * the same group — so every replica makes the same SGD step as one network on the whole batch.
 *
 * @module
 */
import { allReduceSum, type BatchNormSync } from "../../ts/index.node.js";
import type { BatchResult, DataParallel } from "./mlp.js";

/** Rows `[from, from + count)` of a batch for `rank`: contiguous parts, the first ranks one larger. */
export function replicaRows(batchSize: number, rank: number, size: number) {
  const base = Math.floor(batchSize / size);
  const extra = batchSize % size;
  return { from: rank * base + Math.min(rank, extra), count: base + (rank < extra ? 1 : 0) };
}

/** Floats one all-reduce sends for a network of these layer sizes (every weight and bias, +2). */
export function gradientFloats(sizes: readonly number[]): number {
  let n = 2;
  for (let l = 0; l + 1 < sizes.length; l++) {
    n += ((sizes[l] as number) + 1) * (sizes[l + 1] as number);
  }
  return n;
}

/**
 * The {@link DataParallel} of a replica: one all-reduce per step of every dense gradient, the
 * loss sum and the correct count, in float64 and rank order (the same bits on every replica).
 */
export function dataParallel(sync: BatchNormSync, batchSize: number): DataParallel {
  return {
    batchSize,
    reduce(grads: readonly Float32Array[], result: BatchResult): BatchResult {
      const floats = grads.reduce((a, g) => a + g.length, 2);
      const local = new Float64Array(floats);
      let at = 0;
      for (const g of grads) {
        local.set(g, at);
        at += g.length;
      }
      local[at] = result.lossSum;
      local[at + 1] = result.correct;
      const total = allReduceSum(sync, local);
      at = 0;
      for (const g of grads) {
        g.set(total.subarray(at, at + g.length));
        at += g.length;
      }
      return { lossSum: total[at] as number, correct: total[at + 1] as number };
    },
  };
}
