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
//! `((block mean − s)/spread)²`. A channel's first block takes its own float32 mean as the
//! shift (a first sweep, from the cache); every later block takes the channel's mean so far,
//! which is as close for any data not sorted by value, and saves that sweep: moments of a
//! 25 MB tensor got 1.4–2.4× faster. Blocks are merged per channel in float64 with Chan's
//! pairwise update, which is exact whatever the blocks' means are. A block is, by layout:
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

use crate::activation::Activation;
use crate::scalar::F32x1;
use crate::vector::Vector;

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

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// Scratch space of one call: float64 accumulators per channel and float32 rows of per-position
/// parameters and sums for the row kernels. The wrapper allocates [`Workspace::bytes`] for its
/// channel count.
pub(crate) struct Workspace<'a> {
    pub moments: &'a mut [Moments],
    /// `SCRATCH_ROWS` rows of [`Workspace::row_capacity`] floats each.
    pub rows: &'a mut [f32],
}

/// Scratch rows needed at once: six expanded parameter rows for [`GradInputAct`].
const SCRATCH_ROWS: usize = 6;
/// Floats per channel in a scratch row: a row of the tensor (`channels · inner` floats, with
/// `inner` up to [`SHORT_RUN`]) fits, and so do super-rows of up to four narrower rows.
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
        let rows = match Self::row_floats(channels) {
            Some(floats) => floats,
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

/// Count, mean and sum of squared deviations of one channel, in float64.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Adds a block of `b.n` values whose deviations from `shift` sum to `sum_d` and whose
    /// squared deviations sum to `sum_d2` (Chan, Golub & LeVeque's pairwise update) to a channel
    /// of `b.before` values; a channel's first block (`b.before` is 0) overwrites whatever
    /// `self` held, so the accumulators need no clearing. `b` is worked out once for all the
    /// channels of a block that hold the same count (no division per channel).
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

/// A reduction of one or two inputs into two sums, given `P` per-position parameters `p`.
/// Implementations are values (an activation's slope travels in one), copied into the loops.
pub(crate) trait Reduce<const P: usize>: core::marker::Copy {
    fn step<W: Vector>(self, a: W, b: W, p: [W; P], acc: &mut [W; 2]);
}

/// `Σa` (the second sum is unused).
#[derive(Clone, Copy, Default)]
struct Sum;
impl Reduce<1> for Sum {
    #[inline(always)]
    fn step<W: Vector>(self, a: W, _: W, _: [W; 1], acc: &mut [W; 2]) {
        acc[0] = acc[0].add(a);
    }
}

/// `Σ(a − p)` and `Σ(a − p)²`.
#[derive(Clone, Copy, Default)]
struct ShiftedSums;
impl Reduce<1> for ShiftedSums {
    #[inline(always)]
    fn step<W: Vector>(self, a: W, _: W, p: [W; 1], acc: &mut [W; 2]) {
        let d = a.sub(p[0]);
        acc[0] = acc[0].add(d);
        acc[1] = acc[1].add(d.mul(d));
    }
}

/// With `a = x`, `b = dy`, `p = mean`: `Σdy` and `Σdy·(x − mean)`.
#[derive(Clone, Copy, Default)]
struct GradSums;
impl Reduce<1> for GradSums {
    #[inline(always)]
    fn step<W: Vector>(self, x: W, dy: W, mean: [W; 1], acc: &mut [W; 2]) {
        acc[0] = acc[0].add(dy);
        acc[1] = acc[1].add(dy.mul(x.sub(mean[0])));
    }
}

/// With `a = x`, `b = dy`, `p = [mean, scale, shift]`: `Σg` and `Σg·(x − mean)` for
/// `g = dy·act′(z)`, the pre-activation `z = (x − mean)·scale + shift` recomputed here (no mask
/// stored by the forward, no extra pass).
#[derive(Clone, Copy)]
pub(crate) struct GradSumsAct<A>(pub A);
impl<A: Activation> Reduce<3> for GradSumsAct<A> {
    #[inline(always)]
    fn step<W: Vector>(self, x: W, dy: W, p: [W; 3], acc: &mut [W; 2]) {
        let xc = x.sub(p[0]);
        let g = self.0.grad(xc.mul(p[1]).add(p[2]), dy);
        acc[0] = acc[0].add(g);
        acc[1] = acc[1].add(g.mul(xc));
    }
}

/// An elementwise map of one or two inputs, given `P` per-position parameters. Implementations
/// are values (an activation's slope travels in one), copied into the loops.
pub(crate) trait Map<const P: usize>: core::marker::Copy {
    /// Whether channels-last rows go four vectors per step: faster for [`ScaleShift`] (0.88–0.97
    /// of the time), slower for [`GradInput`] (1.06–1.2: four vectors of its six inputs each
    /// outgrow the registers).
    const UNROLL_ROWS: bool;
    /// Rows per load of the parameters when streaming from memory: 2 for [`ScaleShift`] (its
    /// two streams become four, still a prefetcher's easy case: 0.86–0.99 of the time on 12.8
    /// and 25 MB channels-last tensors), 1 for [`GradInput`] (three streams would become six:
    /// 1.13–1.16× slower for C = 256).
    const STREAM_ROWS: usize;
    fn apply<W: Vector>(self, a: W, b: W, p: [W; P]) -> W;
}

/// `y = (x − center)·scale + shift`, with `p = [center, scale, shift, _]`. Centering first
/// keeps the result accurate when the mean is large against the spread.
#[derive(Clone, Copy)]
pub(crate) struct ScaleShift;
impl Map<4> for ScaleShift {
    const UNROLL_ROWS: bool = true;
    const STREAM_ROWS: usize = 2;
    #[inline(always)]
    fn apply<W: Vector>(self, x: W, _: W, p: [W; 4]) -> W {
        x.sub(p[0]).mul(p[1]).add(p[2])
    }
}

/// `y = act((x − center)·scale + shift)`: [`ScaleShift`] and the activation in one pass.
#[derive(Clone, Copy)]
pub(crate) struct ScaleShiftAct<A>(pub A);
impl<A: Activation> Map<4> for ScaleShiftAct<A> {
    const UNROLL_ROWS: bool = true;
    const STREAM_ROWS: usize = 2;
    #[inline(always)]
    fn apply<W: Vector>(self, x: W, _: W, p: [W; 4]) -> W {
        self.0.apply(x.sub(p[0]).mul(p[1]).add(p[2]))
    }
}

/// `dx = k_dy·dy + k_xc·(x − mean) + k_const`, with `p = [mean, k_dy, k_xc, k_const]`.
#[derive(Clone, Copy)]
pub(crate) struct GradInput;
impl Map<4> for GradInput {
    const UNROLL_ROWS: bool = false;
    const STREAM_ROWS: usize = 1;
    #[inline(always)]
    fn apply<W: Vector>(self, x: W, dy: W, p: [W; 4]) -> W {
        dy.mul(p[1]).add(x.sub(p[0]).mul(p[2])).add(p[3])
    }
}

/// `dx = k_dy·g + k_xc·(x − mean) + k_const` with `g = dy·act′(z)`,
/// `z = (x − mean)·scale + shift` recomputed; `p = [mean, k_dy, k_xc, k_const, scale, shift]`.
#[derive(Clone, Copy)]
pub(crate) struct GradInputAct<A>(pub A);
impl<A: Activation> Map<6> for GradInputAct<A> {
    const UNROLL_ROWS: bool = false;
    const STREAM_ROWS: usize = 1;
    #[inline(always)]
    fn apply<W: Vector>(self, x: W, dy: W, p: [W; 6]) -> W {
        let xc = x.sub(p[0]);
        let g = self.0.grad(xc.mul(p[4]).add(p[5]), dy);
        g.mul(p[1]).add(xc.mul(p[2])).add(p[3])
    }
}

/// `y = x`: the streaming copy that benchmarks measure memory bandwidth with.
#[derive(Clone, Copy)]
pub(crate) struct Copy;
impl Map<4> for Copy {
    const UNROLL_ROWS: bool = true;
    const STREAM_ROWS: usize = 1;
    #[inline(always)]
    fn apply<W: Vector>(self, x: W, _: W, _: [W; 4]) -> W {
        x
    }
}

/// The vectors of parameters at position `j` of the parameter rows `p` (written with
/// `from_fn`, not `array::map`, whose code in the hot loops ran up to 1.9× slower).
///
/// # Safety
/// Every row of `p` holds at least `j + W::LANES` floats.
#[inline(always)]
unsafe fn load_params<W: Vector, const P: usize>(p: &[&[f32]; P], j: usize) -> [W; P] {
    core::array::from_fn(|k| W::load(p[k].as_ptr().add(j)))
}

/// Reduces a contiguous run (`a` and `b` equally long) with a constant parameter, `V` lanes at a
/// time with four accumulator pairs, then single vectors into the first pair, then the tail one
/// lane at a time.
#[inline(always)]
fn reduce_run<V: Vector, R: Reduce<1> + Default>(a: &[f32], b: &[f32], p: f32) -> [f32; 2] {
    reduce_run_with::<V, R, 1>(R::default(), a, b, [p])
}

/// [`reduce_run`] with `P` parameters and a reduction value `r`.
#[inline(always)]
fn reduce_run_with<V: Vector, R: Reduce<P>, const P: usize>(
    r: R,
    a: &[f32],
    b: &[f32],
    p: [f32; P],
) -> [f32; 2] {
    let step = 4 * V::LANES;
    let full = a.len() / step * step;
    let pv: [V; P] = core::array::from_fn(|k| V::splat(p[k]));
    let mut acc = [[V::splat(0.0); 2]; 4];
    let mut i = 0;
    while i < full {
        for (k, acc_k) in acc.iter_mut().enumerate() {
            let at = i + k * V::LANES;
            // SAFETY: at + LANES <= full <= a.len() == b.len().
            let (va, vb) = unsafe { (V::load(a.as_ptr().add(at)), V::load(b.as_ptr().add(at))) };
            r.step(va, vb, pv, acc_k);
        }
        i += step;
    }
    while i + V::LANES <= a.len() {
        // SAFETY: i + LANES <= a.len() == b.len().
        let (va, vb) = unsafe { (V::load(a.as_ptr().add(i)), V::load(b.as_ptr().add(i))) };
        r.step(va, vb, pv, &mut acc[0]);
        i += V::LANES;
    }
    let fold = |j: usize| acc[0][j].add(acc[1][j]).add(acc[2][j].add(acc[3][j])).sum_lanes();
    let mut tail = [F32x1::splat(0.0); 2];
    let ps: [F32x1; P] = core::array::from_fn(|k| F32x1::splat(p[k]));
    for (&va, &vb) in a[i..].iter().zip(&b[i..]) {
        r.step(F32x1::splat(va), F32x1::splat(vb), ps, &mut tail);
    }
    [fold(0) + tail[0].sum_lanes(), fold(1) + tail[1].sum_lanes()]
}

/// Channels-first runs of at most this many floats are walked as rows (see [`Rows`]): shorter
/// runs would leave vectors partly empty, or in scalar tails, and pay a run's set-up per few
/// floats.
const SHORT_RUN: usize = 16;

/// Floats in a super-row at least, where rows are narrower and the scratch row holds it: each
/// trip of the row loops over a group of rows sets up a pointer per row and stream, which rows
/// of a few vectors (C = 3: 3 vectors a super-row of 4 rows) do not amortize (maps of NHWC
/// C = 3 ran 1.25× slower than with 15-vector super-rows).
const MIN_SUPER_ROW: usize = 64;

/// How the row kernels see a tensor whose runs are short: a sequence of rows of
/// `channels · inner` floats (the channels-last rows when `inner` is 1, the planes of a
/// channels-first tensor otherwise), each position of which has one channel's parameters. The
/// parameters are laid out once per position in a scratch row (each channel's value `inner`
/// times), so every vector of data meets a vector of its own parameters, whatever `channels`
/// and `inner` are. `r` rows form a *super-row* of `width` floats, a whole number of vectors
/// (when that fits the scratch row; otherwise `r` is 1 and each row ends in a tail of single
/// lanes).
#[derive(Clone, Copy)]
struct Rows {
    channels: usize,
    inner: usize,
    /// Rows per super-row.
    r: usize,
}

impl Rows {
    /// Super-rows of whole vectors of `W`, within `capacity` floats, and of about
    /// [`MIN_SUPER_ROW`] floats when rows are narrower.
    fn new<W: Vector>(channels: usize, inner: usize, capacity: usize) -> Self {
        let positions = channels * inner;
        let base = W::LANES / gcd(positions, W::LANES);
        let r = if base * positions <= capacity {
            let most = core::cmp::min(capacity, MIN_SUPER_ROW);
            base * core::cmp::max(1, most / (base * positions))
        } else {
            1
        };
        Rows { channels, inner, r }
    }

    /// The same rows one at a time (for the rows left over after the last whole super-row).
    fn single(self) -> Self {
        Rows { r: 1, ..self }
    }

    fn positions(self) -> usize {
        self.channels * self.inner
    }

    fn width(self) -> usize {
        self.r * self.positions()
    }

    /// Per-channel `values` laid out per position of a super-row (`inner` times each, `r`
    /// times): `values` itself when that is the same, else written to `scratch` with vector
    /// stores (`memcpy` and `memset` are slow loops on wasm32, and this is O(C·inner) work per
    /// call, as much as the data itself when there are few rows).
    fn expand<'a, V: Vector>(self, values: &'a [f32], scratch: &'a mut [f32]) -> &'a [f32] {
        if self.r == 1 && self.inner == 1 {
            return values;
        }
        let (inner, positions) = (self.inner, self.positions());
        let first = &mut scratch[..positions];
        if inner == 1 {
            // SAFETY: values and first are distinct slices of `positions` floats.
            unsafe { copy::<V>(values.as_ptr(), first.as_mut_ptr(), positions) };
        } else {
            for (run, &v) in first.chunks_exact_mut(inner).zip(values) {
                let vv = V::splat(v);
                let mut i = 0;
                while i + V::LANES <= inner {
                    // SAFETY: i + LANES <= inner == run.len().
                    unsafe { vv.store(run.as_mut_ptr().add(i)) };
                    i += V::LANES;
                }
                for x in &mut run[i..] {
                    *x = v;
                }
            }
        }
        // The other r − 1 copies, doubling what is laid out (super-rows of narrow rows hold up
        // to 64 copies).
        let width = self.width();
        let mut done = positions;
        while done < width {
            let n = core::cmp::min(done, width - done);
            let (laid, rest) = scratch.split_at_mut(done);
            // SAFETY: laid and rest are disjoint, n <= done == laid.len() and n <= rest.len().
            unsafe { copy::<V>(laid.as_ptr(), rest.as_mut_ptr(), n) };
            done += n;
        }
        &scratch[..width]
    }

    /// Adds up the positions of each channel (`r · inner` of them, in storage order) so that
    /// `acc[c]` holds channel `c`'s sum. In place: channel `c`'s positions all lie at or after
    /// index `c`, and each is read before any later channel's sum is written.
    fn fold(self, acc: &mut [f32]) {
        let positions = self.positions();
        if self.inner == 1 {
            for copy in 1..self.r {
                for c in 0..self.channels {
                    acc[c] += acc[copy * positions + c];
                }
            }
            return;
        }
        for c in 0..self.channels {
            let mut sum = 0.0;
            for copy in 0..self.r {
                let run = copy * positions + c * self.inner;
                for &v in &acc[run..run + self.inner] {
                    sum += v;
                }
            }
            acc[c] = sum;
        }
    }
}

/// Super-rows that the row kernels handle per load of their per-position accumulators or
/// parameters: the accumulators and parameters stay in registers across `ROW_GROUP` rows, so a
/// vector of data costs one load (and one store) instead of up to six memory operations.
///
/// That pays while the data comes from the cache (1.4–1.7× at 64K floats), but streaming from
/// memory, the `ROW_GROUP` rows a row apart are that many streams, which ran up to 2.4× slower
/// than one sequential stream (measured for C = 32…1024 on 25 MB). So the row kernels group
/// rows only over data in the cache: tensors of at most [`CACHED_FLOATS`], and the second sweep
/// of a statistics block; and narrow rows (a group within [`MAX_GROUPED_WIDTH`] floats is nearly
/// one stream) in the sweeps that read memory for statistics and gradient sums.
const ROW_GROUP: usize = 4;

/// Tensors up to this many floats (1 MiB) are taken to be in the cache.
const CACHED_FLOATS: usize = 1 << 18;

/// Widest rows whose [`ROW_GROUP`] groups read like one stream.
const MAX_GROUPED_WIDTH: usize = 64;

/// Accumulates positions `from..to` (a multiple of `W::LANES` apart) of `nrows` rows `width`
/// floats apart into `acc0` and `acc1` (or, when `fresh`, overwrites them with the sums), the
/// accumulators of each vector of positions held in registers across the rows.
///
/// # Safety
/// `a` and `b` hold `nrows` rows of `width` floats, `to <= width`, and `p`, `acc0`, `acc1` at
/// least `to` floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn reduce_columns<
    W: Vector,
    R: Reduce<P>,
    const P: usize,
    const NROWS: usize,
    const FRESH: bool,
>(
    r: R,
    a: *const f32,
    b: *const f32,
    width: usize,
    (from, to): (usize, usize),
    p: [&[f32]; P],
    acc0: &mut [f32],
    acc1: &mut [f32],
) {
    let mut j = from;
    while j < to {
        let mut acc = if FRESH {
            [W::splat(0.0); 2]
        } else {
            [W::load(acc0.as_ptr().add(j)), W::load(acc1.as_ptr().add(j))]
        };
        let pv = load_params::<W, P>(&p, j);
        for row in 0..NROWS {
            let at = row * width + j;
            r.step(W::load(a.add(at)), W::load(b.add(at)), pv, &mut acc);
        }
        acc[0].store(acc0.as_mut_ptr().add(j));
        acc[1].store(acc1.as_mut_ptr().add(j));
        j += W::LANES;
    }
}

/// One trip of [`reduce_columns`] over all the positions of `NROWS` rows: vectors up to
/// `vectors`, single lanes after.
///
/// # Safety
/// As for [`reduce_columns`], with `to` = `width`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn reduce_trip<W: Vector, R: Reduce<P>, const P: usize, const NROWS: usize>(
    r: R,
    a: *const f32,
    b: *const f32,
    width: usize,
    vectors: usize,
    p: [&[f32]; P],
    acc0: &mut [f32],
    acc1: &mut [f32],
    fresh: bool,
) {
    let (body, tail) = ((0, vectors), (vectors, width));
    if fresh {
        reduce_columns::<W, R, P, NROWS, true>(r, a, b, width, body, p, acc0, acc1);
        reduce_columns::<F32x1, R, P, NROWS, true>(r, a, b, width, tail, p, acc0, acc1);
    } else {
        reduce_columns::<W, R, P, NROWS, false>(r, a, b, width, body, p, acc0, acc1);
        reduce_columns::<F32x1, R, P, NROWS, false>(r, a, b, width, tail, p, acc0, acc1);
    }
}

/// Reduces whole super-rows (`a.len()` a multiple of `rows.width()`) position by position with
/// per-position parameters `p` (one super-row long) into `acc0` and `acc1`, then folds the
/// positions of each channel so that `acc0[c]`, `acc1[c]` hold channel `c`'s sums. Each
/// position is accumulated row after row in storage order; with `grouped`, [`ROW_GROUP`] rows
/// per trip through the registers.
#[allow(clippy::too_many_arguments)]
fn reduce_rows<W: Vector, R: Reduce<1> + Default>(
    a: &[f32],
    b: &[f32],
    rows: Rows,
    p: &[f32],
    acc0: &mut [f32],
    acc1: &mut [f32],
    grouped: bool,
) {
    reduce_rows_with::<W, R, 1>(R::default(), a, b, rows, [p], acc0, acc1, grouped);
}

/// [`reduce_rows`] with `P` parameter rows and a reduction value `r`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn reduce_rows_with<W: Vector, R: Reduce<P>, const P: usize>(
    r: R,
    a: &[f32],
    b: &[f32],
    rows: Rows,
    p: [&[f32]; P],
    acc0: &mut [f32],
    acc1: &mut [f32],
    grouped: bool,
) {
    let width = rows.width();
    let vectors = width / W::LANES * W::LANES;
    // The first trip overwrites the sums (clearing them would call a slow memset on wasm32).
    let mut fresh = true;
    let group = ROW_GROUP * width;
    let whole = if grouped { a.len() / group * group } else { 0 };
    let (a_main, a_rest) = a.split_at(whole);
    let (b_main, b_rest) = b.split_at(whole);
    for (ga, gb) in a_main.chunks_exact(group).zip(b_main.chunks_exact(group)) {
        let (pa, pb) = (ga.as_ptr(), gb.as_ptr());
        // SAFETY: ga and gb hold ROW_GROUP rows of width floats, and acc0, acc1 and p at least
        // width floats (as reduce_columns needs).
        unsafe {
            reduce_trip::<W, R, P, ROW_GROUP>(r, pa, pb, width, vectors, p, acc0, acc1, fresh);
        }
        fresh = false;
    }
    for (ra, rb) in a_rest.chunks_exact(width).zip(b_rest.chunks_exact(width)) {
        let (pa, pb) = (ra.as_ptr(), rb.as_ptr());
        // SAFETY: as above, with one row.
        unsafe {
            reduce_trip::<W, R, P, 1>(r, pa, pb, width, vectors, p, acc0, acc1, fresh);
        }
        fresh = false;
    }
    rows.fold(acc0);
    rows.fold(acc1);
}

/// Floats per row-kernel statistics block: 512 KiB, half of this machine's L2 cache, which
/// the block's second sweep reads. Per-block work (a shift and a float64 merge per channel,
/// folding the per-position sums; then also clearing them) made small blocks dear: 16 KiB
/// blocks ran 1.2–1.3× slower than 128 KiB ones, and 512 KiB ran up to 13% faster still
/// (25 MB, C = 32…256). Channels-first planes use the same blocks.
const ROW_BLOCK: usize = 128 * 1024;
/// Rows per row-kernel block at least, so that the per-channel work of a block (a float64
/// merge for every channel) stays small next to its `rows · channels · inner` elements of data.
const MIN_BLOCK_ROWS: usize = 64;

/// Rows per row-kernel statistics block: about [`ROW_BLOCK`] floats, at least
/// [`MIN_BLOCK_ROWS`] rows and at most [`BLOCK`] values per channel (which bounds how many
/// values the float32 accumulators sum, as in the channels-first blocks), a multiple of `r`.
fn row_block_rows(rows: Rows) -> usize {
    let most = BLOCK / rows.inner;
    let n = (ROW_BLOCK / rows.positions()).clamp(MIN_BLOCK_ROWS, most);
    core::cmp::max(rows.r, n / rows.r * rows.r)
}

/// Visits the rows of `$x` in statistics blocks, in storage order: whole super-rows
/// (`$vector` is true: use `V`), then any rows left over (`$vector` false, `r` = 1: use one
/// lane).
macro_rules! for_row_blocks {
    ($x:expr, $rows:expr, |$block:ident, $r:ident, $vector:ident| $body:expr) => {{
        let rows: Rows = $rows;
        let positions = rows.positions();
        for block in $x.chunks(row_block_rows(rows) * positions) {
            let whole = block.len() / positions / rows.r * rows.r * positions;
            let (main, rest) = block.split_at(whole);
            if !main.is_empty() {
                let ($block, $r, $vector) = (main, rows, true);
                $body;
            }
            if !rest.is_empty() {
                let ($block, $r, $vector) = (rest, rows.single(), false);
                $body;
            }
        }
    }};
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
            for c in 0..channels {
                ws.moments[c].merge(merge, shift[c], sum_d[c], sum_d2[c]);
            }
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
    let merge = BlockMerge::new(n, before);
    for c in 0..channels {
        stats[c].merge(merge, own[c], acc0[c], acc1[c]);
    }
}

/// Per-channel `Σdy` and `Σdy·(x − mean)`, accumulated in float64 across blocks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_grads<V: Vector>(
    x: &[f32],
    dy: &[f32],
    dims: Dims,
    mean: &[f32],
    ws: &mut Workspace,
    sum_dy: &mut [f32],
    sum_dy_xc: &mut [f32],
) {
    reduce_grads_with::<V, GradSums, 1>(GradSums, x, dy, dims, [mean], ws, sum_dy, sum_dy_xc);
}

/// [`reduce_grads`] with the reduction `r` and its per-channel parameters `params` (the first
/// is the mean): [`GradSums`], or [`GradSumsAct`] with `[mean, scale, shift]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_grads_with<V: Vector, R: Reduce<P>, const P: usize>(
    r: R,
    x: &[f32],
    dy: &[f32],
    dims: Dims,
    params: [&[f32]; P],
    ws: &mut Workspace,
    sum_dy: &mut [f32],
    sum_dy_xc: &mut [f32],
) {
    let channels = dims.channels;
    // Reuse the float64 accumulators: `mean` holds Σdy and `m2` holds Σdy·(x − mean).
    let sums = &mut ws.moments[..channels];
    // A channel's first block overwrites its sums (clearing them would call a slow memset).
    let mut add = |c: usize, s: [f32; 2], first: bool| {
        let (a, b) = (s[0] as f64, s[1] as f64);
        let m = &mut sums[c];
        (m.mean, m.m2) = if first { (a, b) } else { (m.mean + a, m.m2 + b) };
    };
    if dims.inner <= SHORT_RUN {
        let capacity = Workspace::capacity_of(ws.rows);
        let rows = Rows::new::<V>(channels, dims.inner, capacity);
        // Rows [params… | acc0 | acc1]: with one parameter, the layout of the other passes.
        let mut scratch = split_rows::<5>(ws.rows, rows.width()).into_iter();
        let mut next = || scratch.next().unwrap_or_default();
        let reps: [&[f32]; P] = core::array::from_fn(|k| rows.expand::<V>(params[k], next()));
        let (acc0, acc1) = (next(), next());
        let group = x.len() <= CACHED_FLOATS || rows.width() <= MAX_GROUPED_WIDTH;
        let mut at = 0;
        for_row_blocks!(x, rows, |block, rows_r, vector| {
            let first = at == 0;
            let dy_block = &dy[at..][..block.len()];
            at += block.len();
            let (a0, a1) = (&mut *acc0, &mut *acc1);
            if vector {
                reduce_rows_with::<V, R, P>(r, block, dy_block, rows_r, reps, a0, a1, group);
            } else {
                reduce_rows_with::<F32x1, R, P>(r, block, dy_block, rows_r, reps, a0, a1, group);
            }
            for c in 0..channels {
                add(c, [acc0[c], acc1[c]], first);
            }
        });
    } else {
        let plane = channels * dims.inner;
        for (o, (xp, dyp)) in x.chunks_exact(plane).zip(dy.chunks_exact(plane)).enumerate() {
            let runs = xp.chunks_exact(dims.inner).zip(dyp.chunks_exact(dims.inner));
            for (c, (xr, dyr)) in runs.enumerate() {
                for (k, (xb, dyb)) in xr.chunks(BLOCK).zip(dyr.chunks(BLOCK)).enumerate() {
                    let p = core::array::from_fn(|k| params[k][c]);
                    let sums = reduce_run_with::<V, R, P>(r, xb, dyb, p);
                    add(c, sums, o == 0 && k == 0);
                }
            }
        }
    }
    for ((s, a), b) in sums.iter().zip(sum_dy.iter_mut()).zip(sum_dy_xc.iter_mut()) {
        *a = s.mean as f32;
        *b = s.m2 as f32;
    }
}

/// `out = M(a, b)` elementwise with per-channel parameters `params` (each `channels` long).
///
/// # Safety
/// `a`, `b` and `out` must each be valid for `dims.len()` floats; `out` may be the same
/// pointer as `a` or `b` (every position is read before it is written) but must not overlap
/// them otherwise. `ws` must not overlap any of them.
pub(crate) unsafe fn map<V: Vector, M: Map<P>, const P: usize>(
    m: M,
    a: *const f32,
    b: *const f32,
    out: *mut f32,
    dims: Dims,
    params: [&[f32]; P],
    ws: &mut Workspace,
) {
    let channels = dims.channels;
    if dims.inner <= SHORT_RUN {
        let capacity = Workspace::capacity_of(ws.rows);
        let rows = Rows::new::<V>(channels, dims.inner, capacity);
        let mut scratch = split_rows::<SCRATCH_ROWS>(ws.rows, rows.width()).into_iter();
        let mut next = || scratch.next().unwrap_or_default();
        let reps: [&[f32]; P] = core::array::from_fn(|k| rows.expand::<V>(params[k], next()));
        let positions = rows.positions();
        let whole = dims.outer / rows.r * rows.r * positions;
        // SAFETY: the caller guarantees the lengths; the parameter rows are `width` long and
        // their first `positions` floats are the parameters of a single row, used by the rest.
        map_rows::<V, M, P>(m, a, b, out, whole, rows.width(), reps);
        let rest = dims.len() - whole;
        let (a, b, out) = (a.add(whole), b.add(whole), out.add(whole));
        map_rows::<F32x1, M, P>(m, a, b, out, rest, positions, reps);
    } else {
        let inner = dims.inner;
        for o in 0..dims.outer {
            // Indexes the channel's value in each of the P parameter arrays.
            #[allow(clippy::needless_range_loop)]
            for c in 0..channels {
                let at = (o * channels + c) * inner;
                let p = core::array::from_fn(|k| params[k][c]);
                // SAFETY: the run [at, at + inner) lies inside the tensor.
                map_run::<V, M, P>(m, a.add(at), b.add(at), out.add(at), inner, p);
            }
        }
    }
}

/// Maps positions `from..to` (a multiple of `W::LANES` apart) of `nrows` rows `width` floats
/// apart, each vector of parameters loaded once for the rows; all rows of a vector are loaded
/// before any is stored, so in-place calls stay correct.
///
/// # Safety
/// As for [`map`], with `nrows` rows of `width` floats from `a`, `b` and `out`, `to <= width`,
/// and every row of `p` at least `to` floats.
#[inline(always)]
unsafe fn map_columns<W: Vector, M: Map<P>, const P: usize, const NROWS: usize>(
    m: M,
    (a, b, out): (*const f32, *const f32, *mut f32),
    width: usize,
    (from, to): (usize, usize),
    p: [&[f32]; P],
) {
    let mut j = from;
    while j < to {
        let pv = load_params::<W, P>(&p, j);
        let y: [W; NROWS] = core::array::from_fn(|k| {
            let at = k * width + j;
            m.apply(W::load(a.add(at)), W::load(b.add(at)), pv)
        });
        for (k, yk) in y.iter().enumerate() {
            yk.store(out.add(k * width + j));
        }
        j += W::LANES;
    }
}

/// Maps `len` floats of rows, `width` floats at a time, with parameter rows: when the data is
/// in the cache, [`ROW_GROUP`] rows per load of the parameters (at any width: 1.2–1.6× faster
/// than row by row for rows of 100 to 1024 floats); streaming, `M::STREAM_ROWS`; the rest one
/// row at a time.
///
/// # Safety
/// As for [`map`], with `len` floats, a multiple of `width`; every row of `p` holds at least
/// `width` floats.
unsafe fn map_rows<W: Vector, M: Map<P>, const P: usize>(
    m: M,
    a: *const f32,
    b: *const f32,
    out: *mut f32,
    len: usize,
    width: usize,
    p: [&[f32]; P],
) {
    let vectors = width / W::LANES * W::LANES;
    let group = ROW_GROUP * width;
    let mut row = 0;
    let grouped = len <= CACHED_FLOATS;
    while grouped && row + group <= len {
        let at = (a.add(row), b.add(row), out.add(row));
        map_columns::<W, M, P, ROW_GROUP>(m, at, width, (0, vectors), p);
        map_columns::<F32x1, M, P, ROW_GROUP>(m, at, width, (vectors, width), p);
        row += group;
    }
    while M::STREAM_ROWS == 2 && row + 2 * width <= len {
        let at = (a.add(row), b.add(row), out.add(row));
        map_columns::<W, M, P, 2>(m, at, width, (0, vectors), p);
        map_columns::<F32x1, M, P, 2>(m, at, width, (vectors, width), p);
        row += 2 * width;
    }
    let params = |j: usize| load_params::<W, P>(&p, j);
    while row < len {
        let mut j = 0;
        // Four vectors per step, all loaded before any is stored (in-place calls stay correct).
        while M::UNROLL_ROWS && j + 4 * W::LANES <= vectors {
            let y: [W; 4] = core::array::from_fn(|k| {
                let (jk, at) = (j + k * W::LANES, row + j + k * W::LANES);
                m.apply(W::load(a.add(at)), W::load(b.add(at)), params(jk))
            });
            for (k, yk) in y.iter().enumerate() {
                yk.store(out.add(row + j + k * W::LANES));
            }
            j += 4 * W::LANES;
        }
        let at = (a.add(row), b.add(row), out.add(row));
        map_columns::<W, M, P, 1>(m, at, width, (j, vectors), p);
        map_columns::<F32x1, M, P, 1>(m, at, width, (vectors, width), p);
        row += width;
    }
}

/// Maps one contiguous run of `len` floats with constant parameters: four vectors per step,
/// then single vectors, then the tail one lane at a time.
///
/// # Safety
/// As for [`map`], with `len` floats.
#[inline(always)]
unsafe fn map_run<V: Vector, M: Map<P>, const P: usize>(
    m: M,
    a: *const f32,
    b: *const f32,
    out: *mut f32,
    len: usize,
    p: [f32; P],
) {
    let pv: [V; P] = core::array::from_fn(|k| V::splat(p[k]));
    let mut i = 0;
    while i + 4 * V::LANES <= len {
        // Load all four vectors before storing any, so that in-place calls stay correct.
        let mut y = [V::splat(0.0); 4];
        for (k, yk) in y.iter_mut().enumerate() {
            let at = i + k * V::LANES;
            *yk = m.apply(V::load(a.add(at)), V::load(b.add(at)), pv);
        }
        for (k, yk) in y.iter().enumerate() {
            yk.store(out.add(i + k * V::LANES));
        }
        i += 4 * V::LANES;
    }
    while i + V::LANES <= len {
        m.apply(V::load(a.add(i)), V::load(b.add(i)), pv).store(out.add(i));
        i += V::LANES;
    }
    let ps: [F32x1; P] = core::array::from_fn(|k| F32x1::splat(p[k]));
    while i < len {
        m.apply(F32x1::load(a.add(i)), F32x1::load(b.add(i)), ps).store(out.add(i));
        i += 1;
    }
}

/// `out = a` through the vector registers, for measuring streaming bandwidth.
///
/// # Safety
/// `a` and `out` must be valid for `len` floats and must not overlap.
pub(crate) unsafe fn copy<V: Vector>(a: *const f32, out: *mut f32, len: usize) {
    map_run::<V, Copy, 4>(Copy, a, a, out, len, [0.0; 4]);
}

#[cfg(test)]
mod tests {
    //! The kernels against plain float64 loops, on the host, for every path: runs of 1 to 40
    //! floats, channel counts that do and do not divide the vector width, row counts that leave
    //! rows after the last whole super-row, and tensors past the cache and block sizes. Besides
    //! the one-lane build, a four-lane vector emulated in scalar code exercises the super-rows
    //! and vector tails of the SIMD build.
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[derive(Clone, Copy)]
    struct Emu4([f32; 4]);

    impl Vector for Emu4 {
        const LANES: usize = 4;
        unsafe fn load(p: *const f32) -> Self {
            Emu4(core::array::from_fn(|k| *p.add(k)))
        }
        unsafe fn store(self, p: *mut f32) {
            for (k, v) in self.0.iter().enumerate() {
                *p.add(k) = *v;
            }
        }
        fn splat(value: f32) -> Self {
            Emu4([value; 4])
        }
        fn add(self, o: Self) -> Self {
            Emu4(core::array::from_fn(|k| self.0[k] + o.0[k]))
        }
        fn sub(self, o: Self) -> Self {
            Emu4(core::array::from_fn(|k| self.0[k] - o.0[k]))
        }
        fn mul(self, o: Self) -> Self {
            Emu4(core::array::from_fn(|k| self.0[k] * o.0[k]))
        }
        fn div(self, o: Self) -> Self {
            Emu4(core::array::from_fn(|k| self.0[k] / o.0[k]))
        }
        fn pmax(self, o: Self) -> Self {
            Emu4(core::array::from_fn(|k| if self.0[k] < o.0[k] { o.0[k] } else { self.0[k] }))
        }
        fn pmin(self, o: Self) -> Self {
            Emu4(core::array::from_fn(|k| if o.0[k] < self.0[k] { o.0[k] } else { self.0[k] }))
        }
        fn lt_select(self, o: Self, then: Self, otherwise: Self) -> Self {
            Emu4(core::array::from_fn(
                |k| {
                    if self.0[k] < o.0[k] {
                        then.0[k]
                    } else {
                        otherwise.0[k]
                    }
                },
            ))
        }
        fn lt_keep(self, o: Self, value: Self) -> Self {
            Emu4(core::array::from_fn(|k| if self.0[k] < o.0[k] { value.0[k] } else { 0.0 }))
        }
        fn pow2_rounded(self) -> Self {
            Emu4(self.0.map(|v| f32::from_bits((v.to_bits() << 23).wrapping_add(0x3f80_0000))))
        }
        fn sum_lanes(self) -> f32 {
            (self.0[0] + self.0[1]) + (self.0[2] + self.0[3])
        }
    }

    fn data(n: usize, seed: u32, offset: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                offset + (s as f32 / u32::MAX as f32 - 0.5) * 4.0
            })
            .collect()
    }

    fn channel(dims: Dims, i: usize) -> usize {
        i / dims.inner % dims.channels
    }

    fn check<V: Vector>(dims: Dims) {
        let n = dims.len();
        let c_n = dims.channels;
        let x = data(n, 1 + n as u32, 3.0);
        let dy = data(n, 7 + c_n as u32, 0.0);
        // float64 references
        let count = (dims.outer * dims.inner) as f64;
        let mut mean = vec![0f64; c_n];
        for (i, &v) in x.iter().enumerate() {
            mean[channel(dims, i)] += v as f64 / count;
        }
        let mut var = vec![0f64; c_n];
        let (mut g0, mut g1) = (vec![0f64; c_n], vec![0f64; c_n]);
        for (i, (&v, &d)) in x.iter().zip(&dy).enumerate() {
            let c = channel(dims, i);
            var[c] += (v as f64 - mean[c]).powi(2) / count;
            g0[c] += d as f64;
            g1[c] += d as f64 * (v as f64 - mean[c]);
        }
        let mut moments_buf = vec![Moments::default(); c_n];
        let mut rows = vec![f32::NAN; Workspace::row_floats(c_n).unwrap()];
        let mut ws = Workspace { moments: &mut moments_buf, rows: &mut rows };
        let (mut m, mut v) = (vec![0f32; c_n], vec![0f32; c_n]);
        moments::<V>(&x, dims, &mut ws, &mut m, &mut v);
        for c in 0..c_n {
            assert!((m[c] as f64 - mean[c]).abs() < 1e-5, "mean {c} {dims:?}");
            let tol = 1e-5 * var[c] + 1e-9;
            assert!((v[c] as f64 - var[c]).abs() <= tol, "var {c} {dims:?}");
        }
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let (mut s0, mut s1) = (vec![0f32; c_n], vec![0f32; c_n]);
        reduce_grads::<V>(&x, &dy, dims, &mean32, &mut ws, &mut s0, &mut s1);
        let scale = (n as f64).sqrt() * 1e-5 * 4.0;
        for c in 0..c_n {
            assert!((s0[c] as f64 - g0[c]).abs() < scale, "Σdy {c} {dims:?}");
            assert!((s1[c] as f64 - g1[c]).abs() < scale * 4.0, "Σdy·xc {c} {dims:?}");
        }
        let p: [Vec<f32>; 4] = core::array::from_fn(|k| data(c_n, 40 + k as u32, 0.5));
        let params = [&p[0][..], &p[1][..], &p[2][..], &p[3][..]];
        let mut y = vec![0f32; n];
        let mut in_place = x.clone();
        // SAFETY: every buffer holds n floats; the second call maps in place.
        unsafe {
            map::<V, _, 4>(
                ScaleShift,
                x.as_ptr(),
                x.as_ptr(),
                y.as_mut_ptr(),
                dims,
                params,
                &mut ws,
            );
            let ptr = in_place.as_mut_ptr();
            map::<V, _, 4>(ScaleShift, ptr, ptr, ptr, dims, params, &mut ws);
        }
        for i in 0..n {
            let c = channel(dims, i);
            let want = (x[i] - p[0][c]) * p[1][c] + p[2][c];
            assert_eq!(y[i], want, "y[{i}] {dims:?}");
            assert_eq!(in_place[i], want, "in-place y[{i}] {dims:?}");
        }
        // SAFETY: as above.
        unsafe {
            map::<V, _, 4>(
                GradInput,
                x.as_ptr(),
                dy.as_ptr(),
                y.as_mut_ptr(),
                dims,
                params,
                &mut ws,
            );
        }
        for i in 0..n {
            let c = channel(dims, i);
            let want = dy[i] * p[1][c] + (x[i] - p[0][c]) * p[2][c] + p[3][c];
            assert_eq!(y[i], want, "dx[{i}] {dims:?}");
        }
        check_activations::<V>(dims, &x, &dy, &mut ws);
    }

    /// One lane of `act` (the scalar build's arithmetic, which every lane of every build does).
    fn lane<A: Activation>(act: A, z: f32, dy: f32) -> (f32, f32) {
        let z1 = F32x1::splat(z);
        let (mut y, mut g) = (0f32, 0f32);
        // SAFETY: y and g are one float each.
        unsafe {
            act.apply(z1).store(&mut y);
            act.grad(z1, F32x1::splat(dy)).store(&mut g);
        }
        (y, g)
    }

    /// The fused-activation passes on every path: the maps bit for bit against one lane
    /// elementwise (the same operations in the same order), the sums against float64.
    fn check_activations<V: Vector>(dims: Dims, x: &[f32], dy: &[f32], ws: &mut Workspace) {
        use crate::activation::{LeakyRelu, Relu6, Silu};
        fn one<V: Vector, A: Activation>(
            act: A,
            dims: Dims,
            x: &[f32],
            dy: &[f32],
            ws: &mut Workspace,
        ) {
            let (n, c_n) = (dims.len(), dims.channels);
            let p: [Vec<f32>; 6] = core::array::from_fn(|k| data(c_n, 60 + k as u32, 0.5));
            let [mean, k_dy, k_xc, k_const, scale, shift] = &p;
            let mut y = vec![0f32; n];
            let fwd = [&mean[..], &scale[..], &shift[..], &shift[..]];
            let bwd = [&mean[..], &k_dy[..], &k_xc[..], &k_const[..], &scale[..], &shift[..]];
            // SAFETY: every buffer holds n floats.
            unsafe {
                map::<V, _, 4>(
                    ScaleShiftAct(act),
                    x.as_ptr(),
                    x.as_ptr(),
                    y.as_mut_ptr(),
                    dims,
                    fwd,
                    ws,
                );
            }
            for i in 0..n {
                let c = channel(dims, i);
                let z = (x[i] - mean[c]) * scale[c] + shift[c];
                assert_eq!(y[i], lane(act, z, 0.0).0, "act y[{i}] {dims:?}");
            }
            // SAFETY: as above.
            unsafe {
                map::<V, _, 6>(
                    GradInputAct(act),
                    x.as_ptr(),
                    dy.as_ptr(),
                    y.as_mut_ptr(),
                    dims,
                    bwd,
                    ws,
                );
            }
            let (mut g0, mut g1, mut gabs) = (vec![0f64; c_n], vec![0f64; c_n], vec![0f64; c_n]);
            for i in 0..n {
                let c = channel(dims, i);
                let xc = x[i] - mean[c];
                let g = lane(act, xc * scale[c] + shift[c], dy[i]).1;
                let want = g * k_dy[c] + xc * k_xc[c] + k_const[c];
                assert_eq!(y[i], want, "act dx[{i}] {dims:?}");
                g0[c] += g as f64;
                g1[c] += g as f64 * xc as f64;
                gabs[c] += (g as f64).abs() * (1.0 + xc.abs() as f64);
            }
            let (mut s0, mut s1) = (vec![0f32; c_n], vec![0f32; c_n]);
            let params = [&mean[..], &scale[..], &shift[..]];
            reduce_grads_with::<V, _, 3>(
                GradSumsAct(act),
                x,
                dy,
                dims,
                params,
                ws,
                &mut s0,
                &mut s1,
            );
            for c in 0..c_n {
                // Float32 sums of the same terms: a few roundings of the sum of their sizes.
                let tol = 1e-6 * gabs[c] + 1e-12;
                assert!((s0[c] as f64 - g0[c]).abs() <= tol, "act Σg {c} {dims:?}");
                assert!((s1[c] as f64 - g1[c]).abs() <= tol, "act Σg·xc {c} {dims:?}");
            }
        }
        one::<V, _>(Relu6, dims, x, dy, ws);
        one::<V, _>(LeakyRelu(0.1), dims, x, dy, ws);
        one::<V, _>(Silu, dims, x, dy, ws);
    }

    fn shapes() -> Vec<Dims> {
        let mut out = Vec::new();
        for inner in [1, 2, 3, 4, 5, 7, 8, 10, 15, 16, 17, 33] {
            for channels in [1, 2, 3, 5, 8, 64] {
                for outer in [1, 2, 3, 5, 9, 70] {
                    out.push(Dims { outer, channels, inner });
                }
            }
        }
        // Past the cache, several statistics blocks, runs longer than BLOCK.
        out.push(Dims { outer: 5000, channels: 3, inner: 1 });
        out.push(Dims { outer: 300, channels: 1000, inner: 1 });
        out.push(Dims { outer: 3000, channels: 7, inner: 3 });
        out.push(Dims { outer: 70, channels: 30, inner: 150 });
        out.push(Dims { outer: 3, channels: 2, inner: 9000 });
        out
    }

    #[test]
    fn one_lane() {
        for dims in shapes() {
            check::<F32x1>(dims);
        }
    }

    #[test]
    fn four_lanes() {
        for dims in shapes() {
            check::<Emu4>(dims);
        }
    }
}
