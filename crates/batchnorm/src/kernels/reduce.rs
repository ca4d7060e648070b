//! The reduction loops: over a contiguous run with constant parameters ([`reduce_run`]), and
//! over the rows of the row layout with per-position parameters and sums ([`reduce_rows`]).

use super::ops::Reduce;
use super::rows::{load_params, Rows, ROW_GROUP};
use crate::scalar::F32x1;
use crate::vector::Vector;

/// Reduces a contiguous run (`a` and `b` equally long) with a constant parameter, `V` lanes at a
/// time with four accumulator pairs, then single vectors into the first pair, then the tail one
/// lane at a time.
#[inline(always)]
pub(super) fn reduce_run<V: Vector, R: Reduce<1> + Default>(
    a: &[f32],
    b: &[f32],
    p: f32,
) -> [f32; 2] {
    assert!(!R::STORES, "a storing reduction needs reduce_run_with's output");
    // SAFETY: R stores nothing, so the null output is never written.
    unsafe { reduce_run_with::<V, R, 1>(R::default(), a, b, core::ptr::null_mut(), [p]) }
}

/// [`reduce_run`] with `P` parameters and a reduction value `r`; where `R` stores, what each
/// step returns goes to `out` at the position of its inputs.
///
/// # Safety
/// Where `R::STORES`, `out` is valid for writing `a.len()` floats that overlap none of the
/// other arguments.
#[inline(always)]
pub(super) unsafe fn reduce_run_with<V: Vector, R: Reduce<P>, const P: usize>(
    r: R,
    a: &[f32],
    b: &[f32],
    out: *mut f32,
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
            // SAFETY: at + LANES <= full <= a.len() == b.len() (and out's length, if it stores).
            let (va, vb) = (V::load(a.as_ptr().add(at)), V::load(b.as_ptr().add(at)));
            let g = r.step(va, vb, pv, acc_k);
            if R::STORES {
                g.store(out.add(at));
            }
        }
        i += step;
    }
    while i + V::LANES <= a.len() {
        // SAFETY: i + LANES <= a.len() == b.len() (and out's length, if it stores).
        let (va, vb) = (V::load(a.as_ptr().add(i)), V::load(b.as_ptr().add(i)));
        let g = r.step(va, vb, pv, &mut acc[0]);
        if R::STORES {
            g.store(out.add(i));
        }
        i += V::LANES;
    }
    let fold = |j: usize| acc[0][j].add(acc[1][j]).add(acc[2][j].add(acc[3][j])).sum_lanes();
    let mut tail = [F32x1::splat(0.0); 2];
    let ps: [F32x1; P] = core::array::from_fn(|k| F32x1::splat(p[k]));
    for (&va, &vb) in a[i..].iter().zip(&b[i..]) {
        let g = r.step(F32x1::splat(va), F32x1::splat(vb), ps, &mut tail);
        if R::STORES {
            g.store(out.add(i));
        }
        i += 1;
    }
    [fold(0) + tail[0].sum_lanes(), fold(1) + tail[1].sum_lanes()]
}

/// Accumulates positions `from..to` (a multiple of `W::LANES` apart) of `nrows` rows `width`
/// floats apart into `acc0` and `acc1` (or, when `fresh`, overwrites them with the sums), the
/// accumulators of each vector of positions held in registers across the rows; where `R`
/// stores, its steps' values go to `out` at their inputs' positions.
///
/// # Safety
/// `a` and `b` hold `nrows` rows of `width` floats, `to <= width`, and `p`, `acc0`, `acc1` at
/// least `to` floats; where `R::STORES`, `out` is valid for as many floats as `a` and
/// overlaps none of the other arguments.
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
    out: *mut f32,
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
            let g = r.step(W::load(a.add(at)), W::load(b.add(at)), pv, &mut acc);
            if R::STORES {
                g.store(out.add(at));
            }
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
    out: *mut f32,
    width: usize,
    vectors: usize,
    p: [&[f32]; P],
    acc0: &mut [f32],
    acc1: &mut [f32],
    fresh: bool,
) {
    let (body, tail) = ((0, vectors), (vectors, width));
    if fresh {
        reduce_columns::<W, R, P, NROWS, true>(r, a, b, out, width, body, p, acc0, acc1);
        reduce_columns::<F32x1, R, P, NROWS, true>(r, a, b, out, width, tail, p, acc0, acc1);
    } else {
        reduce_columns::<W, R, P, NROWS, false>(r, a, b, out, width, body, p, acc0, acc1);
        reduce_columns::<F32x1, R, P, NROWS, false>(r, a, b, out, width, tail, p, acc0, acc1);
    }
}

/// Reduces whole super-rows (`a.len()` a multiple of `rows.width()`) position by position with
/// per-position parameters `p` (one super-row long) into `acc0` and `acc1`, then folds the
/// positions of each channel so that `acc0[c]`, `acc1[c]` hold channel `c`'s sums. Each
/// position is accumulated row after row in storage order; with `grouped`, [`ROW_GROUP`] rows
/// per trip through the registers.
#[allow(clippy::too_many_arguments)]
pub(super) fn reduce_rows<W: Vector, R: Reduce<1> + Default>(
    a: &[f32],
    b: &[f32],
    rows: Rows,
    p: &[f32],
    acc0: &mut [f32],
    acc1: &mut [f32],
    grouped: bool,
) {
    assert!(!R::STORES, "a storing reduction needs reduce_rows_with's output");
    let out = core::ptr::null_mut();
    // SAFETY: R stores nothing, so the null output is never written.
    unsafe { reduce_rows_with::<W, R, 1>(R::default(), a, b, out, rows, [p], acc0, acc1, grouped) };
}

/// [`reduce_rows`] with `P` parameter rows and a reduction value `r`; where `R` stores, its
/// steps' values go to `out` at their inputs' positions.
///
/// # Safety
/// Where `R::STORES`, `out` is valid for writing `a.len()` floats that overlap none of the
/// other arguments.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn reduce_rows_with<W: Vector, R: Reduce<P>, const P: usize>(
    r: R,
    a: &[f32],
    b: &[f32],
    out: *mut f32,
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
    let mut at = 0;
    for (ga, gb) in a_main.chunks_exact(group).zip(b_main.chunks_exact(group)) {
        let (pa, pb, po) = (ga.as_ptr(), gb.as_ptr(), out.wrapping_add(at));
        // SAFETY: ga and gb hold ROW_GROUP rows of width floats, and acc0, acc1 and p at least
        // width floats (as reduce_columns needs); out, if it stores, as many as a from `at`.
        reduce_trip::<W, R, P, ROW_GROUP>(r, pa, pb, po, width, vectors, p, acc0, acc1, fresh);
        fresh = false;
        at += group;
    }
    for (ra, rb) in a_rest.chunks_exact(width).zip(b_rest.chunks_exact(width)) {
        let (pa, pb, po) = (ra.as_ptr(), rb.as_ptr(), out.wrapping_add(at));
        // SAFETY: as above, with one row.
        reduce_trip::<W, R, P, 1>(r, pa, pb, po, width, vectors, p, acc0, acc1, fresh);
        fresh = false;
        at += width;
    }
    rows.fold(acc0);
    rows.fold(acc1);
}
