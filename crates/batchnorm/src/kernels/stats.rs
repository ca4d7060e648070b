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
        // merge per channel.
        let inner = dims.inner;
        let plane_len = channels * inner;
        let [shift, sum_d, sum_d2] = split_rows::<3>(ws.rows, channels);
        for band in x.chunks(band_planes(dims) * plane_len) {
            let n = band.len() / channels;
            for (c, s) in shift.iter_mut().enumerate() {
                *s = if before > 0.0 {
                    ws.moments[c].mean as f32
                } else {
                    sample_mean(n, |t| band[t / inner * plane_len + c * inner + t % inner])
                };
            }
            // The sums of channel `c` around `s`, run after run (the order of the sweep below,
            // so a channel summed again alone gets the bits a whole sweep would give).
            let band_sums = |c: usize, s: f32| {
                let runs = band.chunks_exact(plane_len).map(|p| &p[c * inner..(c + 1) * inner]);
                runs.fold([0.0, 0.0], |[d, d2], run| {
                    let [e, e2] = reduce_run::<V, ShiftedSums>(run, run, s);
                    [d + e, d2 + e2]
                })
            };
            for (k, plane) in band.chunks_exact(plane_len).enumerate() {
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
            for c in 0..channels {
                if !centred(n, sum_d[c], sum_d2[c]) {
                    shift[c] = recentred(n, shift[c], sum_d[c]);
                    [sum_d[c], sum_d2[c]] = band_sums(c, shift[c]);
                }
            }
            merge_all(BlockMerge::new(n, before), ws.moments, shift, sum_d, sum_d2);
            before += n as f64;
        }
    } else {
        for (o, plane) in x.chunks_exact(channels * dims.inner).enumerate() {
            for (run, stats) in plane.chunks_exact(dims.inner).zip(ws.moments.iter_mut()) {
                for (k, block) in run.chunks(BLOCK).enumerate() {
                    let n = block.len();
                    let before = if o == 0 && k == 0 { 0.0 } else { stats.n };
                    let mut shift =
                        if before > 0.0 { stats.mean as f32 } else { sample_mean(n, |t| block[t]) };
                    let mut sums = reduce_run::<V, ShiftedSums>(block, block, shift);
                    if !centred(n, sums[0], sums[1]) {
                        shift = recentred(n, shift, sums[0]);
                        sums = reduce_run::<V, ShiftedSums>(block, block, shift);
                    }
                    stats.merge(BlockMerge::new(n, before), shift, sums[0], sums[1]);
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

/// Values a channel's first block averages for its shift (see [`sample_mean`]).
pub(super) const SHIFT_SAMPLES: usize = 8;

/// The float32 mean of [`SHIFT_SAMPLES`] of a block's `n` values of one channel (all of them
/// when fewer), spread evenly over the block (`value(t)` is its `t`-th value in storage order):
/// the first block's shift, without a sweep of its own. Spread, because neighbours in storage
/// order (one image's pixels) are often alike. Where that is not finite, the block's first
/// value ([`finite_shift`]).
fn sample_mean(n: usize, value: impl Fn(usize) -> f32) -> f32 {
    let picks = core::cmp::min(n, SHIFT_SAMPLES);
    let sum: f32 = (0..picks).map(|i| value(spread(i, n, picks))).sum();
    finite_shift(sum / picks as f32, value(0))
}

/// `shift`, or `first` (a value of the channel's block) where `shift` is not finite. A sum of
/// `n` finite values overflows float32 from about `f32::MAX / n` on (a constant channel of
/// 6e36 over 64 rows made every statistic NaN): any finite value of the block centres its
/// sums well enough for the check that follows ([`centred`]). Where the block holds NaN or an
/// infinity, `first` may be one too, as the statistics will be.
#[inline(always)]
fn finite_shift(shift: f32, first: f32) -> f32 {
    if shift.is_finite() {
        shift
    } else {
        first
    }
}

/// The `i`-th of `picks` indices spread evenly over `0..n`.
pub(super) fn spread(i: usize, n: usize, picks: usize) -> usize {
    i * n / picks
}

/// The largest share of `Σd²` that `(Σd)²/n` may cancel in `M2 = Σd² − (Σd)²/n` (see
/// [`centred`]).
const MAX_CANCELLED: f32 = 0.75;

/// Whether a block's sums `Σd`, `Σd²` of `n` values around a shift `s` keep `M2 = Σd² −
/// (Σd)²/n` accurate: `(Σd)²/n ≤ ¾·Σd²`, which is `|s − mean| ≤ √3·σ` for the block's mean
/// and standard deviation. float32's rounding error in `Σd²` is then at most 4 times its share
/// of `M2` (a shift at the mean would give 1 time; a sampled one is typically within σ/√8 of
/// it, 1.1 times); otherwise, or when a sum is not finite, the block is summed again around
/// [`recentred`]. A sample of 8 misses by √3·σ for about one channel in a million of normal
/// data, more often for an outlier or data sorted by value, which only costs that second
/// sweep: the one every first block took before shifts were sampled. (A bound of σ, half of
/// `Σd²`, failed for about 1 channel in 200: at C = 1000, a second sweep in most calls.)
#[inline(always)]
fn centred(n: usize, sum_d: f32, sum_d2: f32) -> bool {
    sum_d * sum_d <= MAX_CANCELLED * n as f32 * sum_d2 && sum_d2 < f32::INFINITY
}

/// The block's own mean, `s + Σd/n`, as the shift of its second sweep.
fn recentred(n: usize, s: f32, sum_d: f32) -> f32 {
    (s as f64 + sum_d as f64 / n as f64) as f32
}

/// Planes per channels-first statistics block when runs are short: a band of about
/// [`ROW_BLOCK`] floats (in the cache for its second sweep, when one is needed) with at most
/// [`BLOCK`] values per channel. Fewer than 2: each run is a block of its own (or several,
/// when longer than [`BLOCK`]).
fn band_planes(dims: Dims) -> usize {
    core::cmp::min(ROW_BLOCK / (dims.channels * dims.inner), BLOCK / dims.inner)
}

/// One row-kernel block of whole super-rows: the shifted sums of each channel, merged into
/// `stats`, which hold `before` values per channel. `sums` are four scratch rows: the shift
/// per channel, the shift per position, and the two per-position sums. `group`: whether the
/// sweep, which reads memory, groups rows (a second sweep reads the cache and always does).
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
    // Whether the shifts are the block's own means, which need no check.
    let exact = if before > 0.0 {
        for (s, m) in own.iter_mut().zip(stats.iter()) {
            *s = m.mean as f32;
        }
        false
    } else {
        sample_rows_mean::<W>(block, rows, own, (&mut *shift, &mut *acc0, &mut *acc1))
    };
    let expanded = rows.expand::<W>(&own[..channels], shift);
    reduce_rows::<W, ShiftedSums>(block, block, rows, expanded, acc0, acc1, group);
    // Channels whose shift was far take their block's mean and the block is swept again;
    // the others keep their shifts and so get the same sums again, bit for bit (a channel's
    // results never depend on another's values).
    if !exact && recentre_all(n, own, acc0, acc1, channels) {
        let expanded = rows.expand::<W>(&own[..channels], shift);
        reduce_rows::<W, ShiftedSums>(block, block, rows, expanded, acc0, acc1, true);
    }
    merge_all(BlockMerge::new(n, before), stats, own, acc0, acc1);
}

/// Re-centres the shift of every channel whose sums are not [`centred`]; whether any was not.
/// (This check costs about 2 µs at C = 1000, as much as the merge, whether written as its own
/// loop, a branch-free count, or inside the merge loop; not understood.)
fn recentre_all(
    n: usize,
    shift: &mut [f32],
    sum_d: &[f32],
    sum_d2: &[f32],
    channels: usize,
) -> bool {
    let mut any = false;
    for ((s, &d), &d2) in shift.iter_mut().zip(sum_d).zip(sum_d2).take(channels) {
        if !centred(n, d, d2) {
            *s = recentred(n, *s, d);
            any = true;
        }
    }
    any
}

/// [`sample_mean`] of the row layout into `own` (per channel): the mean of super-rows spread
/// evenly over `block`, as many as hold [`SHIFT_SAMPLES`] values per channel
/// ([`sum_picked_rows`]), then folded. When that would be half the block or more, the mean
/// of all of it, by the row kernel (a sample of 8 rows out of 16 measured slower than that
/// sweep); then it returns true. `p`, `acc1`: scratch rows.
fn sample_rows_mean<W: Vector>(
    block: &[f32],
    rows: Rows,
    own: &mut [f32],
    (p, acc0, acc1): (&mut [f32], &mut [f32], &mut [f32]),
) -> bool {
    let (width, channels) = (rows.width(), rows.channels);
    let supers = block.len() / width;
    let per_super = rows.r * rows.inner;
    let picks = (SHIFT_SAMPLES + per_super - 1) / per_super;
    let (summed, exact) = if 2 * picks >= supers {
        reduce_rows::<W, Sum>(block, block, rows, p, acc0, acc1, true);
        (supers, true)
    } else {
        sum_picked_rows::<W>(block, width, picks, acc0);
        rows.fold(acc0);
        (picks, false)
    };
    let inv = 1.0 / (summed * per_super) as f32;
    for (s, &sum) in own.iter_mut().zip(acc0.iter()).take(channels) {
        *s = sum * inv;
    }
    if all_finite(&own[..channels]) {
        return exact;
    }
    for (c, s) in own.iter_mut().enumerate().take(channels) {
        // The block starts a row: channel c's first value is at c·inner.
        *s = finite_shift(*s, block[c * rows.inner]);
    }
    // A first value for a shift is not the mean: the sums are checked.
    false
}

/// Whether every value is finite, as an OR over their bits (integer operations, which the
/// compiler vectorises: checking each channel inside the loop above cost 1.3 µs at C = 1000).
fn all_finite(values: &[f32]) -> bool {
    let exponent = 0x7f80_0000;
    values.iter().fold(0, |any, v| any | u32::from(v.to_bits() & exponent == exponent)) == 0
}

/// Adds `picks` super-rows (of `width` floats) spread evenly over `block` position by position
/// into `acc` (one super-row long).
fn sum_picked_rows<W: Vector>(block: &[f32], width: usize, picks: usize, acc: &mut [f32]) {
    let supers = block.len() / width;
    let mut picked = [0; SHIFT_SAMPLES];
    for (i, at) in picked.iter_mut().enumerate().take(picks) {
        *at = spread(i, supers, picks) * width;
    }
    let picked = &picked[..picks];
    let vectors = width / W::LANES * W::LANES;
    for j in (0..vectors).step_by(W::LANES) {
        // SAFETY: every picked super-row lies in `block`, and j + LANES <= width.
        let sum = picked
            .iter()
            .fold(W::splat(0.0), |s, &at| s.add(unsafe { W::load(block.as_ptr().add(at + j)) }));
        // SAFETY: `acc` holds a super-row (`width` floats).
        unsafe { sum.store(acc.as_mut_ptr().add(j)) };
    }
    for j in vectors..width {
        acc[j] = picked.iter().map(|&at| block[at + j]).sum();
    }
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
