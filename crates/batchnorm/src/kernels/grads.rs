//! The backward's per-channel sums, `Σdy` and `Σdy·(x − mean)` (or those of `g = dy·act′(z)`),
//! over runs or rows, added up per block in float64.

use super::maps::copy;
use super::ops::{GradSums, Reduce};
use super::reduce::{reduce_rows_with, reduce_run_with};
use super::rows::{
    for_row_blocks, row_block_rows, Rows, CACHED_FLOATS, MAX_GROUPED_WIDTH, SHORT_RUN,
};
use super::{split_rows, Dims, Workspace, BLOCK};
use crate::scalar::F32x1;
use crate::vector::Vector;

/// Per-channel `Σdy` and `Σdy·(x − mean)`, accumulated in float64 across blocks. Returns
/// whether `ws.moments` holds the float64 sums too (`mean` Σdy, `m2` Σdy·(x − mean)): not when
/// the tensor was one block, whose float32 sums are written out directly (the threaded back
/// end, which merges chunks' float64 sums, then converts them itself).
#[allow(clippy::too_many_arguments)]
#[must_use]
pub(crate) fn reduce_grads<V: Vector>(
    x: &[f32],
    dy: &[f32],
    dims: Dims,
    mean: &[f32],
    ws: &mut Workspace,
    sum_dy: &mut [f32],
    sum_dy_xc: &mut [f32],
) -> bool {
    let out = core::ptr::null_mut();
    // SAFETY: GradSums does not store.
    unsafe {
        reduce_grads_with::<V, GradSums, 1>(
            GradSums,
            x,
            dy,
            dims,
            [mean],
            ws,
            sum_dy,
            sum_dy_xc,
            out,
        )
    }
}

/// [`reduce_grads`] with the reduction `r` and its per-channel parameters `params` (the first
/// is the mean): [`GradSums`], or [`GradSumsAct`](super::GradSumsAct) with `[mean, scale, shift]`;
/// where `R` stores ([`Storing`](super::Storing)), each step's `g` goes to `out` at its
/// position.
///
/// # Safety
/// Where `R::STORES`, `out` is valid for writing `x.len()` floats that overlap none of the
/// other arguments.
#[allow(clippy::too_many_arguments)]
#[must_use]
pub(crate) unsafe fn reduce_grads_with<V: Vector, R: Reduce<P>, const P: usize>(
    r: R,
    x: &[f32],
    dy: &[f32],
    dims: Dims,
    params: [&[f32]; P],
    ws: &mut Workspace,
    sum_dy: &mut [f32],
    sum_dy_xc: &mut [f32],
    out: *mut f32,
) -> bool {
    let channels = dims.channels;
    // Reuse the float64 accumulators: `mean` holds Σdy and `m2` holds Σdy·(x − mean).
    let sums = &mut ws.moments[..channels];
    if dims.inner <= SHORT_RUN {
        let capacity = Workspace::capacity_of(ws.rows);
        let rows = Rows::new::<V>(channels, dims.inner, capacity);
        // Rows [params… | acc0 | acc1]: with one parameter, the layout of the other passes.
        let mut scratch = split_rows::<5>(ws.rows, rows.width()).into_iter();
        let mut next = || scratch.next().unwrap_or_default();
        let reps: [&[f32]; P] = core::array::from_fn(|k| rows.expand::<V>(params[k], next()));
        let (acc0, acc1) = (next(), next());
        let group = x.len() <= CACHED_FLOATS || rows.width() <= MAX_GROUPED_WIDTH;
        let (mut at, mut blocks) = (0, 0);
        for_row_blocks!(x, rows, |block, rows_r, vector| {
            // The last block's sums go to float64 before this one's overwrite them.
            if blocks > 0 {
                add_all(sums, acc0, acc1, blocks == 1);
            }
            blocks += 1;
            let (dy_block, g) = (&dy[at..][..block.len()], out.wrapping_add(at));
            at += block.len();
            let (a0, a1) = (&mut *acc0, &mut *acc1);
            // SAFETY: out, if it stores, holds as many floats from `g` as the block.
            if vector {
                reduce_rows_with::<V, R, P>(r, block, dy_block, g, rows_r, reps, a0, a1, group);
            } else {
                reduce_rows_with::<F32x1, R, P>(r, block, dy_block, g, rows_r, reps, a0, a1, group);
            }
        });
        if blocks == 1 {
            // One block (a small tensor): its float32 sums are the result, the bits that a
            // round trip through float64 gives, without the two passes over the channels
            // (2 µs at [2, 1000], where the data's passes take 0.5).
            // SAFETY: the outputs hold `channels` floats, acc0 and acc1 at least as many, and
            // scratch rows do not overlap them.
            copy::<V>(acc0.as_ptr(), sum_dy.as_mut_ptr(), channels);
            copy::<V>(acc1.as_ptr(), sum_dy_xc.as_mut_ptr(), channels);
            return false;
        }
        add_all(sums, acc0, acc1, false);
    } else {
        let plane = channels * dims.inner;
        for (o, (xp, dyp)) in x.chunks_exact(plane).zip(dy.chunks_exact(plane)).enumerate() {
            let runs = xp.chunks_exact(dims.inner).zip(dyp.chunks_exact(dims.inner));
            for (c, (xr, dyr)) in runs.enumerate() {
                for (k, (xb, dyb)) in xr.chunks(BLOCK).zip(dyr.chunks(BLOCK)).enumerate() {
                    let p = core::array::from_fn(|k| params[k][c]);
                    let g = out.wrapping_add(o * plane + c * dims.inner + k * BLOCK);
                    // SAFETY: out, if it stores, holds as many floats from there as the block.
                    let block_sums = reduce_run_with::<V, R, P>(r, xb, dyb, g, p);
                    add(&mut sums[c], block_sums, o == 0 && k == 0);
                }
            }
        }
    }
    for ((s, a), b) in sums.iter().zip(sum_dy.iter_mut()).zip(sum_dy_xc.iter_mut()) {
        *a = s.mean as f32;
        *b = s.m2 as f32;
    }
    true
}

/// Adds a block's per-channel sums to the channels' float64 accumulators (as many as `sums`
/// holds), over zipped iterators (indexed, three bounds checks a channel made this most of the
/// kernel's time at [2, 1000]); `first`: overwrites them instead.
fn add_all(sums: &mut [super::Moments], acc0: &[f32], acc1: &[f32], first: bool) {
    // A zip stops at the shortest: every channel must have its sums (a bug otherwise).
    assert!(acc0.len() >= sums.len() && acc1.len() >= sums.len());
    for (m, (&a, &b)) in sums.iter_mut().zip(acc0.iter().zip(acc1)) {
        add(m, [a, b], first);
    }
}

/// Adds a block's two sums to a channel's float64 accumulators; a channel's first block
/// overwrites them (clearing them would call a slow memset).
#[inline(always)]
fn add(m: &mut super::Moments, s: [f32; 2], first: bool) {
    let (a, b) = (s[0] as f64, s[1] as f64);
    (m.mean, m.m2) = if first { (a, b) } else { (m.mean + a, m.m2 + b) };
}
