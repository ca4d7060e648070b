//! Per-channel mean and variance ([`moments`]) in cache-sized blocks, each summed around a
//! shift and merged in float64 ([`Moments::merge`]): see "Accurate statistics in one pass over
//! memory" in the essay of `kernels.rs`.

use super::ops::{ShiftedSums, Sum};
use super::reduce::{reduce_rows, reduce_run};
use super::rows::{
    for_row_blocks, row_block_rows, Rows, CACHED_FLOATS, MAX_GROUPED_WIDTH, ROW_BLOCK, SHORT_RUN,
};
use super::{split_rows, Dims, Workspace, BLOCK};
use crate::scalar::F32x1;
use crate::vector::Vector;

/// Count, mean and sum of squared deviations of one channel, in float64.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Moments {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    /// Adds a block of `b.n` values whose deviations from `shift` sum to `sum_d` and whose
    /// squared deviations sum to `sum_d2` (Chan, Golub & LeVeque's pairwise update) to a channel
    /// of `b.before` values; a channel's first block (`b.before` is 0) overwrites whatever
    /// `self` held, so the accumulators need no clearing. `b` is worked out once for all the
    /// channels of a block that hold the same count (no division per channel).
    #[inline(always)]
    fn merge(&mut self, b: BlockMerge, shift: f32, sum_d: f32, sum_d2: f32) {
        let sum_d = sum_d as f64;
        let mean_d = sum_d * b.inv_n;
        let mean_b = shift as f64 + mean_d;
        // Rounding can leave M2 a little below 0: clamp it, but let a NaN through (an infinity
        // in the block makes Σd² − (Σd)²/n = ∞ − ∞), where `f64::max` would turn it into 0
        // and, in a channel's last block, leave a variance of +∞ instead of NaN.
        let m2_b = sum_d2 as f64 - sum_d * mean_d;
        let m2_b = if m2_b < 0.0 { 0.0 } else { m2_b };
        if b.before == 0.0 {
            *self = Moments { n: b.n, mean: mean_b, m2: m2_b };
            return;
        }
        let delta = mean_b - self.mean;
        self.mean += delta * b.weight;
        self.m2 += m2_b + delta * delta * b.before * b.weight;
        self.n = b.before + b.n;
    }
}

/// What merging a block of `n` values into a channel of `before` values needs besides the
/// block's sums: `1/n` and the block's weight `n / (before + n)`.
#[derive(Clone, Copy)]
struct BlockMerge {
    n: f64,
    inv_n: f64,
    weight: f64,
    before: f64,
}

impl BlockMerge {
    fn new(n: usize, before: f64) -> Self {
        let n = n as f64;
        BlockMerge { n, inv_n: 1.0 / n, weight: n / (before + n), before }
    }
}

/// Per-channel mean and biased variance of `x`, written to `mean` and `var`.
pub(crate) fn moments<V: Vector>(
    x: &[f32],
    dims: Dims,
    ws: &mut Workspace,
    mean: &mut [f32],
    var: &mut [f32],
) {
    let channels = dims.channels;
    // Values per channel merged so far (the same for every channel in the row and band paths).
    let mut before = 0.0;
    if dims.inner <= SHORT_RUN {
        let capacity = Workspace::capacity_of(ws.rows);
        let rows = Rows::new::<V>(channels, dims.inner, capacity);
        let [shift, acc0, acc1, own] = split_rows::<4>(ws.rows, rows.width());
        let stats = &mut *ws.moments;
        let group = x.len() <= CACHED_FLOATS || rows.width() <= MAX_GROUPED_WIDTH;
        for_row_blocks!(x, rows, |block, r, vector| {
            let sums = (&mut *own, &mut *shift, &mut *acc0, &mut *acc1);
            if vector {
                block_moments_rows::<V>(block, r, sums, stats, before, group);
            } else {
                block_moments_rows::<F32x1>(block, r, sums, stats, before, group);
            }
            before += (block.len() / channels) as f64;
        });
    } else if band_planes(dims) >= 2 {
        // Runs too short to be blocks of their own: a block is a band of whole planes, swept in
        // storage order, holding several runs of each channel, whose sums add up before one
        // merge per channel. Only the first band sweeps twice (for its own means as shifts);
        // later ones shift by the channel's mean so far, as the per-run blocks do.
        let inner = dims.inner;
        let [shift, sum_d, sum_d2] = split_rows::<3>(ws.rows, channels);
        for band in x.chunks(band_planes(dims) * channels * inner) {
            let n = band.len() / channels;
            let merge = BlockMerge::new(n, before);
            // The first plane of a band overwrites the sums, the others add to them.
            if before > 0.0 {
                for (s, m) in shift.iter_mut().zip(ws.moments.iter()) {
                    *s = m.mean as f32;
                }
            } else {
                for (k, plane) in band.chunks_exact(channels * inner).enumerate() {
                    for (run, s) in plane.chunks_exact(inner).zip(shift.iter_mut()) {
                        let sum = reduce_run::<V, Sum>(run, run, 0.0)[0];
                        *s = if k == 0 { sum } else { *s + sum };
                    }
                }
                let inv_n = 1.0 / n as f32;
                for s in shift.iter_mut() {
                    *s *= inv_n;
                }
            }
            for (k, plane) in band.chunks_exact(channels * inner).enumerate() {
                for (c, run) in plane.chunks_exact(inner).enumerate() {
                    let [d, d2] = reduce_run::<V, ShiftedSums>(run, run, shift[c]);
                    if k == 0 {
                        (sum_d[c], sum_d2[c]) = (d, d2);
                    } else {
                        sum_d[c] += d;
                        sum_d2[c] += d2;
                    }
                }
            }
            merge_all(merge, ws.moments, shift, sum_d, sum_d2);
            before += n as f64;
        }
    } else {
        for (o, plane) in x.chunks_exact(channels * dims.inner).enumerate() {
            for (run, stats) in plane.chunks_exact(dims.inner).zip(ws.moments.iter_mut()) {
                for (k, block) in run.chunks(BLOCK).enumerate() {
                    let before = if o == 0 && k == 0 { 0.0 } else { stats.n };
                    let shift = if before > 0.0 {
                        stats.mean as f32
                    } else {
                        reduce_run::<V, Sum>(block, block, 0.0)[0] / block.len() as f32
                    };
                    let [sum_d, sum_d2] = reduce_run::<V, ShiftedSums>(block, block, shift);
                    let merge = BlockMerge::new(block.len(), before);
                    stats.merge(merge, shift, sum_d, sum_d2);
                }
            }
        }
    }
    // Every channel holds outer·inner values: one division for all.
    let inv_n = 1.0 / (dims.outer * dims.inner) as f64;
    for ((stats, m), v) in ws.moments.iter().zip(mean.iter_mut()).zip(var.iter_mut()) {
        *m = stats.mean as f32;
        *v = (stats.m2 * inv_n) as f32;
    }
}

/// Planes per channels-first statistics block when runs are short: a band of about
/// [`ROW_BLOCK`] floats (in the cache for its second sweep) with at most [`BLOCK`] values per
/// channel. Fewer than 2: each run is a block of its own (or several, when longer than
/// [`BLOCK`]).
fn band_planes(dims: Dims) -> usize {
    core::cmp::min(ROW_BLOCK / (dims.channels * dims.inner), BLOCK / dims.inner)
}

/// One row-kernel block of whole super-rows: the corrected two-pass moments of each channel,
/// merged into `stats`, which hold `before` values per channel. `sums` are four scratch rows:
/// the shift per channel, the shift per position, and the two per-position sums. `group`:
/// whether the first sweep, which reads memory, groups rows (the second reads the cache and
/// always does).
fn block_moments_rows<W: Vector>(
    block: &[f32],
    rows: Rows,
    (own, shift, acc0, acc1): (&mut [f32], &mut [f32], &mut [f32], &mut [f32]),
    stats: &mut [Moments],
    before: f64,
    group: bool,
) {
    let channels = rows.channels;
    let n = block.len() / rows.positions() * rows.inner;
    if before > 0.0 {
        for (s, m) in own.iter_mut().zip(stats.iter()) {
            *s = m.mean as f32;
        }
    } else {
        reduce_rows::<W, Sum>(block, block, rows, shift, acc0, acc1, group);
        // Any shift near the values does; a multiplication is cheaper than a division.
        let inv_n = 1.0 / n as f32;
        for (s, &sum) in own.iter_mut().zip(acc0.iter()).take(channels) {
            *s = sum * inv_n;
        }
    }
    let shift = rows.expand::<W>(&own[..channels], shift);
    reduce_rows::<W, ShiftedSums>(block, block, rows, shift, acc0, acc1, true);
    merge_all(BlockMerge::new(n, before), stats, own, acc0, acc1);
}

/// Merges a block's sums into each channel's moments (as many as `stats` holds), over zipped
/// iterators: indexing four slices per channel, with their bounds checks, made the merges of a
/// [2, 1000] tensor 2.8 µs, more than both passes over its data (now 1.2 µs).
fn merge_all(
    merge: BlockMerge,
    stats: &mut [Moments],
    shift: &[f32],
    sum_d: &[f32],
    sum_d2: &[f32],
) {
    // A zip stops at the shortest: every channel must have its sums (a bug otherwise).
    let channels = stats.len();
    assert!(shift.len() >= channels && sum_d.len() >= channels && sum_d2.len() >= channels);
    let sums = shift.iter().zip(sum_d).zip(sum_d2);
    for (m, ((&s, &d), &d2)) in stats.iter_mut().zip(sums) {
        m.merge(merge, s, d, d2);
    }
}
