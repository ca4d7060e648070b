/**
 * How the threaded back end cuts a pass into chunks, and how it merges the chunks' partial
 * reductions. Both depend only on the tensor's shape (and the back end's chunk size), never on
 * the number of threads, so the results are the same bits for any thread count.
 *
 * @module
 */
import type { Dims } from "../backend.js";

/** Floats per chunk (256 KiB), the default: large enough for the kernels' blocks to pay. */
export const CHUNK_FLOATS = 3 << 17;
/**
 * Values per channel in a chunk at least, as a fraction of the chunk size (256 for the
 * default), so that the float64 partials (24 bytes a channel and chunk) stay small next to
 * the data (at most 6/256 of it).
 */
const MIN_VALUES_DIVISOR = 256;

/**
 * The chunks of a `[outer, channels, inner]` tensor: `rows` outer rows with every channel, or,
 * when one row is already more than a chunk and its runs are long, one row and `group`
 * channels. Chunk `i` is rows `⌊i/groups⌋·rows…` and channels `(i mod groups)·group…`: a
 * contiguous sub-tensor either way.
 */
export interface ChunkPlan {
  readonly rows: number;
  readonly group: number;
  readonly groups: number;
  readonly chunks: number;
}

export function planChunks(d: Dims, chunkFloats: number = CHUNK_FLOATS): ChunkPlan {
  const { outer, channels, inner } = d;
  const plane = channels * inner;
  const minValues = Math.max(1, Math.floor(chunkFloats / MIN_VALUES_DIVISOR));
  if (plane > chunkFloats && inner >= minValues && channels > 1) {
    const group = Math.max(1, Math.floor(chunkFloats / inner));
    const groups = Math.ceil(channels / group);
    return { rows: 1, group, groups, chunks: outer * groups };
  }
  const rows = Math.min(
    outer,
    Math.max(1, Math.floor(chunkFloats / plane), Math.ceil(minValues / inner)),
  );
  return { rows, group: channels, groups: 1, chunks: Math.ceil(outer / rows) };
}

/** Float64s of partials a plan writes: `{n, mean, m2}` per channel of each chunk. */
export function partialFloat64s(plan: ChunkPlan): number {
  return plan.chunks * plan.group * 3;
}

/**
 * Calls `f(c, at)` for every channel `c` of every chunk, in chunk order, with `at` the index
 * of the chunk's partial `{_, a, b}` for that channel.
 */
function forEachPartial(plan: ChunkPlan, channels: number, f: (c: number, at: number) => void) {
  for (let i = 0; i < plan.chunks; i++) {
    const c0 = (i % plan.groups) * plan.group;
    const end = Math.min(c0 + plan.group, channels);
    for (let c = c0, at = i * plan.group * 3; c < end; c++, at += 3) f(c, at);
  }
}

/** Merges a pass's partials, in chunk order, into two float32 per-channel outputs. */
type Merge = (
  partials: Float64Array,
  plan: ChunkPlan,
  d: Dims,
  a: Float32Array,
  b: Float32Array,
) => void;

/**
 * Merges per-chunk moments `{n, mean, m2}` in chunk order with Chan, Golub and LeVeque's
 * pairwise update (float64), into float32 means and biased variances.
 */
export const mergeMoments: Merge = (partials, plan, d, mean, variance) => {
  const channels = d.channels;
  const n = new Float64Array(channels);
  const mu = new Float64Array(channels);
  const m2 = new Float64Array(channels);
  forEachPartial(plan, channels, (c, at) => {
    const nb = partials[at] as number;
    const mb = partials[at + 1] as number;
    const m2b = partials[at + 2] as number;
    const na = n[c] as number;
    if (na === 0) {
      n[c] = nb;
      mu[c] = mb;
      m2[c] = m2b;
      return;
    }
    const total = na + nb;
    const delta = mb - (mu[c] as number);
    const weight = nb / total;
    mu[c] = (mu[c] as number) + delta * weight;
    m2[c] = (m2[c] as number) + m2b + delta * delta * na * weight;
    n[c] = total;
  });
  // As the kernels do: one division for all channels (each holds outer·inner values).
  const invN = 1 / (d.outer * d.inner);
  for (let c = 0; c < channels; c++) {
    mean[c] = mu[c] as number;
    variance[c] = (m2[c] as number) * invN;
  }
};

/** Adds per-chunk `{_, Σdy, Σdy·xc}` in chunk order (float64), into float32 sums. */
export const mergeGradSums: Merge = (partials, plan, d, sumDy, sumDyXc) => {
  const channels = d.channels;
  const s0 = new Float64Array(channels);
  const s1 = new Float64Array(channels);
  const seen = new Uint8Array(channels);
  forEachPartial(plan, channels, (c, at) => {
    const a = partials[at + 1] as number;
    const b = partials[at + 2] as number;
    // The first chunk of a channel is taken as it is (−0 stays −0, as in the kernels).
    if (seen[c] === 0) {
      seen[c] = 1;
      s0[c] = a;
      s1[c] = b;
    } else {
      s0[c] = (s0[c] as number) + a;
      s1[c] = (s1[c] as number) + b;
    }
  });
  for (let c = 0; c < channels; c++) {
    sumDy[c] = s0[c] as number;
    sumDyXc[c] = s1[c] as number;
  }
};
