//! # The batch-norm kernels, written once for any vector width
//!
//! Every tensor is seen as `[outer, channels, inner]`: NCHW with spatial size `S` is
//! `[N, C, S]`, and NHWC or 2-D `[N, C]` input is `[N·S, C, 1]`. Batch norm needs only four
//! passes over such a tensor, and everything else (running statistics, the per-channel
//! coefficients) is O(C) work that the TypeScript wrapper does in float64:
//!
//! - [`moments`]: per-channel mean and biased variance (training forward);
//! - [`map`] with [`ScaleShift`]: `y = (x − center)·scale + shift`, the one fused pass of both
//!   the training and the inference forward, and of `dx = dy·weight·invstd` after inference;
//! - [`reduce_grads`]: `Σdy` and `Σdy·(x − mean)` (backward);
//! - [`map`] with [`GradInput`]: `dx = k_dy·dy + k_xc·(x − mean) + k_const` (backward).
//!
//! ## Walking memory in storage order
//! Each pass reads memory front to back exactly once, because at tensor sizes past the cache
//! the kernels are bound by memory bandwidth, not arithmetic. Two layouts of the work cover
//! every shape, chosen by the run length `inner`:
//!
//! - Long runs (`inner > SHORT_RUN`, 16 floats): every `(n, c)` pair owns a contiguous run of
//!   `inner` floats and one set of per-channel constants, splatted into registers for the run;
//!   four vectors per step, then single vectors, then a tail of single lanes.
//! - Short runs (`inner <= 16`, channels last and 2-D included, where `inner` is 1): a run is
//!   too short to fill vectors or to pay for a run's set-up, so the tensor is walked as *rows*
//!   of `C·inner` floats (a plane of channels-first data, a row of channels-last data), and
//!   every per-channel constant is laid out once per position (`inner` times) in a scratch row
//!   (`Rows`). A vector of data then meets a vector of its own constants, whatever `C` and
//!   `inner` are, with no shuffling. When `C·inner` is not a multiple of the vector width,
//!   a multiple of `LANES / gcd(C·inner, LANES)` rows form a *super-row* of whole vectors,
//!   about `MIN_SUPER_ROW` (64) floats long when rows are narrow (rows too wide for the
//!   scratch row end in a few single lanes instead); rows after the last whole super-row go
//!   through the same code with one lane. Reductions keep per-position sums and
//!   fold the `r·inner` positions of each channel once per block. Over data in the cache the
//!   row loops take `ROW_GROUP` (4) rows per load of their parameters or accumulators, which
//!   then cost one memory operation per four vectors of data; streaming from memory they go
//!   row by row (four rows a row apart are four streams; see `ROW_GROUP`).
//!
//! ## Accurate statistics in one pass over memory
//! `E[x²] − E[x]²` in float32 loses every digit when the mean is large against the spread
//! (`x = 10000 + N(0, 1)`). Instead the data is cut into blocks small enough to stay in cache
//! (`BLOCK` floats). Each block sums `d = x − s` and `d²` for a shift `s` near its values;
//! then `mean = s + Σd/n` and `M2 = Σd² − (Σd)²/n` (the corrected two-pass formula of Chan,
//! Golub and LeVeque) lose only what float32 loses on sums of small numbers, which grows with
//! `((block mean − s)/spread)²`. A channel's first block takes the mean of 8 of its values
//! spread over the block as the shift (no sweep of its own: moments of tensors in the cache
//! got 1.1–1.5× faster); every later block takes the channel's mean so far, which is as
//! close for any data not sorted by value (moments of a 25 MB tensor got 1.4–2.4× faster than
//! with a sweep per block). Either shift is checked against the block's sums: where
//! `(Σd)²/n` would cancel more than ¾ of `Σd²` (the shift more than √3 standard deviations
//! from the block's mean) the channel takes its block's mean and the block is summed again,
//! so float32's error in `M2` stays within 4 times that of a shift at the mean (`centred` in
//! `stats`). Blocks are merged per channel in float64 with Chan's pairwise update, which is
//! exact whatever the blocks' means are. A block is, by layout:
//!
//! - a run of one channel (or a `BLOCK`-long piece of one), for runs too long to fit two to a
//!   band;
//! - a band of whole planes (`ROW_BLOCK` floats, at most `BLOCK` values per channel) for
//!   longer runs that do, whose runs' sums add up per channel before one merge;
//! - a band of whole rows for the row layout (`ROW_BLOCK` floats, at least `MIN_BLOCK_ROWS`
//!   rows, at most `BLOCK` values per channel),
//!
//! so that the per-channel merges stay cheap next to the block's data. In the band and row
//! layouts every channel of a block holds the same count, so the merge's `1/n` and weight are
//! worked out once per block, and a channel's first block overwrites its accumulators: there
//! is no division per channel and no clearing (`memset` is a slow loop on wasm32). NaN and ±∞
//! go through all of this as IEEE arithmetic takes them: a NaN or an infinity anywhere in a
//! channel makes its variance NaN, in whichever block it falls.
//!
//! ## Deterministic reductions
//! Inner loops keep four independent accumulators (to hide the latency of the adds), or one
//! per position, folded in a fixed order, then lanes are added in a fixed order, then blocks
//! are merged in storage order: the same input always gives the same bits on the same build.
//! The scalar and SIMD builds add in different orders and agree to float32 rounding, not to
//! the bit.
//!
//! ## Where each part lives
//! - this module: the tensor's [`Dims`] and the call's scratch space ([`Workspace`]);
//! - `ops`: what is done per vector, the reductions ([`Reduce`]) and maps ([`Map`]);
//! - `rows`: the row layout of short runs (`Rows`) and its constants, and statistics blocks
//!   of rows;
//! - `reduce`: the reduction loops over runs and over rows;
//! - `stats`: [`moments`] and the float64 merge of blocks ([`Moments`]);
//! - `grads`: [`reduce_grads`];
//! - `maps`: [`map`] over runs and rows, and [`copy`].

#[cfg(test)]
mod exp_tests;
mod grads;
mod maps;
mod ops;
mod reduce;
mod rows;
mod stats;
#[cfg(test)]
mod stats_tests;
#[cfg(test)]
mod tests;

pub(crate) use grads::{reduce_grads, reduce_grads_with};
pub(crate) use maps::{copy, map};
pub(crate) use ops::{
    GradInput, GradInputAbove, GradInputAct, GradSumsAbove, GradSumsAct, Map, Reduce, ScaleShift,
    ScaleShiftAct, Storing,
};
pub(crate) use rows::CACHED_FLOATS;
pub(crate) use stats::{moments, Moments};

/// Floats per statistics block: 16 KiB, so a block's second sweep hits the L1 cache.
const BLOCK: usize = 4096;

/// A tensor as `[outer, channels, inner]`. All three are positive (the wrapper checks).
#[derive(Clone, Copy)]
#[cfg_attr(test, derive(Debug))]
pub(crate) struct Dims {
    pub outer: usize,
    pub channels: usize,
    pub inner: usize,
}

impl Dims {
    pub(crate) fn len(self) -> usize {
        self.outer * self.channels * self.inner
    }
}

/// Scratch space of one call: float64 accumulators per channel, float32 rows of per-position
/// parameters and sums for the row kernels, and a float32 per channel for the backward's sign
/// thresholds (`crate::threshold`). The wrapper allocates [`Workspace::bytes`] for its channel
/// count.
pub(crate) struct Workspace<'a> {
    pub moments: &'a mut [Moments],
    /// `SCRATCH_ROWS` rows of [`Workspace::row_capacity`] floats each.
    pub rows: &'a mut [f32],
    /// One float a channel, or none (the threaded back end's chunks do not use them).
    pub thresholds: &'a mut [f32],
}

/// Scratch rows needed at once: six expanded parameter rows for [`GradInputAct`].
const SCRATCH_ROWS: usize = 6;
/// Floats per channel in a scratch row: a row of the tensor (`channels · inner` floats, with
/// `inner` up to [`SHORT_RUN`](rows::SHORT_RUN)) fits, and so do super-rows of up to four
/// narrower rows.
const ROW_FLOATS_PER_CHANNEL: usize = 16;
/// Floats in a scratch row at least, so that super-rows of few channels fit.
const MIN_ROW_FLOATS: usize = 64;
/// Floats in a 64-byte cache line: scratch rows are spaced in whole lines (see [`split_rows`]).
const ROW_PAD: usize = 16;

impl Workspace<'_> {
    /// Bytes for `channels` channels, or `usize::MAX` when that does not fit in a `usize`.
    pub(crate) const fn bytes(channels: usize) -> usize {
        let moments = match channels.checked_mul(core::mem::size_of::<Moments>()) {
            Some(bytes) => bytes,
            None => return usize::MAX,
        };
        // The rows, then the thresholds: a float a channel more.
        let rows = match Self::row_floats(channels) {
            Some(floats) => match floats.checked_add(channels) {
                Some(floats) => floats,
                None => return usize::MAX,
            },
            None => return usize::MAX,
        };
        match rows.checked_mul(core::mem::size_of::<f32>()) {
            Some(bytes) => match moments.checked_add(bytes) {
                Some(total) => total,
                None => usize::MAX,
            },
            None => usize::MAX,
        }
    }

    /// Floats in one scratch row; `None` when it overflows.
    pub(crate) const fn row_capacity(channels: usize) -> Option<usize> {
        match channels.checked_mul(ROW_FLOATS_PER_CHANNEL) {
            Some(floats) if floats < MIN_ROW_FLOATS => Some(MIN_ROW_FLOATS),
            other => other,
        }
    }

    /// Floats in all scratch rows (each [`ROW_PAD`] longer than its capacity, see
    /// [`split_rows`]); `None` when it overflows.
    pub(crate) const fn row_floats(channels: usize) -> Option<usize> {
        match Self::row_capacity(channels) {
            Some(floats) => match floats.checked_add(ROW_PAD) {
                Some(padded) => padded.checked_mul(SCRATCH_ROWS),
                None => None,
            },
            None => None,
        }
    }

    /// Floats in a scratch row of the workspace `rows`, less its padding.
    fn capacity_of(rows: &[f32]) -> usize {
        rows.len() / SCRATCH_ROWS - ROW_PAD
    }
}

/// Splits float32 scratch into `K` rows of `len` floats (`len` at most the row capacity),
/// spaced an odd number of 64-byte lines apart. Rows a multiple of 4 KiB apart make a store to
/// one and a load from another at the same position look dependent to the CPU (4K aliasing):
/// with rows of the full capacity (16·C floats, 4 KiB for C = 64) moments and gradient sums of
/// a channels-last tensor ran 1.2–1.4× slower.
fn split_rows<const K: usize>(scratch: &mut [f32], len: usize) -> [&mut [f32]; K] {
    let lines = (len + ROW_PAD - 1) / ROW_PAD;
    let stride = (lines | 1) * ROW_PAD;
    let mut rest = scratch;
    core::array::from_fn(|_| {
        let (head, tail) = core::mem::take(&mut rest).split_at_mut(stride);
        rest = tail;
        &mut head[..len]
    })
}
