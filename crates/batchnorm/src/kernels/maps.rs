//! The elementwise passes ([`map`]): runs with constant parameters, rows with parameter rows,
//! in place or not; and the streaming [`copy`] the benchmarks measure against.

use super::ops::{self, Map};
use super::rows::{load_params, Rows, CACHED_FLOATS, ROW_GROUP, SHORT_RUN};
use super::{split_rows, Dims, Workspace, SCRATCH_ROWS};
use crate::scalar::F32x1;
use crate::vector::Vector;

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
    map_run::<V, ops::Copy, 4>(ops::Copy, a, a, out, len, [0.0; 4]);
}
