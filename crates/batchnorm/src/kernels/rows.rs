//! The row layout of short runs ([`Rows`]; see "Walking memory in storage order" in the essay
//! of `kernels.rs`), the constants that choose how the row loops group rows, and the
//! statistics blocks of rows ([`for_row_blocks`]).

use super::maps::copy;
use super::BLOCK;
use crate::vector::Vector;

/// The vectors of parameters at position `j` of the parameter rows `p` (written with
/// `from_fn`, not `array::map`, whose code in the hot loops ran up to 1.9× slower).
///
/// # Safety
/// Every row of `p` holds at least `j + W::LANES` floats.
#[inline(always)]
pub(super) unsafe fn load_params<W: Vector, const P: usize>(p: &[&[f32]; P], j: usize) -> [W; P] {
    core::array::from_fn(|k| W::load(p[k].as_ptr().add(j)))
}

/// Channels-first runs of at most this many floats are walked as rows (see [`Rows`]): shorter
/// runs would leave vectors partly empty, or in scalar tails, and pay a run's set-up per few
/// floats.
pub(super) const SHORT_RUN: usize = 16;

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
pub(super) struct Rows {
    pub channels: usize,
    pub inner: usize,
    /// Rows per super-row.
    pub r: usize,
}

impl Rows {
    /// Super-rows of whole vectors of `W`, within `capacity` floats, and of about
    /// [`MIN_SUPER_ROW`] floats when rows are narrower.
    pub(super) fn new<W: Vector>(channels: usize, inner: usize, capacity: usize) -> Self {
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
    pub(super) fn single(self) -> Self {
        Rows { r: 1, ..self }
    }

    pub(super) fn positions(self) -> usize {
        self.channels * self.inner
    }

    pub(super) fn width(self) -> usize {
        self.r * self.positions()
    }

    /// Per-channel `values` laid out per position of a super-row (`inner` times each, `r`
    /// times): `values` itself when that is the same, else written to `scratch` with vector
    /// stores (`memcpy` and `memset` are slow loops on wasm32, and this is O(C·inner) work per
    /// call, as much as the data itself when there are few rows).
    pub(super) fn expand<'a, V: Vector>(
        self,
        values: &'a [f32],
        scratch: &'a mut [f32],
    ) -> &'a [f32] {
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
    pub(super) fn fold(self, acc: &mut [f32]) {
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
pub(super) const ROW_GROUP: usize = 4;

/// Tensors up to this many floats (1 MiB) are taken to be in the cache.
pub(crate) const CACHED_FLOATS: usize = 1 << 18;

/// Widest rows whose [`ROW_GROUP`] groups read like one stream.
pub(super) const MAX_GROUPED_WIDTH: usize = 64;

/// Floats per row-kernel statistics block: 512 KiB, half of this machine's L2 cache, which
/// the block's second sweep reads. Per-block work (a shift and a float64 merge per channel,
/// folding the per-position sums; then also clearing them) made small blocks dear: 16 KiB
/// blocks ran 1.2–1.3× slower than 128 KiB ones, and 512 KiB ran up to 13% faster still
/// (25 MB, C = 32…256). Channels-first planes use the same blocks.
pub(super) const ROW_BLOCK: usize = 128 * 1024;
/// Rows per row-kernel block at least, so that the per-channel work of a block (a float64
/// merge for every channel) stays small next to its `rows · channels · inner` elements of data.
const MIN_BLOCK_ROWS: usize = 64;

/// Rows per row-kernel statistics block: about [`ROW_BLOCK`] floats, at least
/// [`MIN_BLOCK_ROWS`] rows and at most [`BLOCK`] values per channel (which bounds how many
/// values the float32 accumulators sum, as in the channels-first blocks), a multiple of `r`.
pub(super) fn row_block_rows(rows: Rows) -> usize {
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
pub(super) use for_row_blocks;

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}
