//! One pass split into fixed chunks, for the threaded back end (`ts/threads/`).
//!
//! The shared-memory build (`batchnorm-simd-shared.wasm`) is instantiated once per thread over
//! one `WebAssembly.Memory`. The calling thread writes a [`Job`] into that memory, publishes it
//! in the pool's [`Control`] block, and every thread (the caller too) calls [`bn_work`]: each
//! claims chunks with a compare-and-swap on the control block's claim word until none is left,
//! and counts every chunk it finished in `done`, which the caller waits on. A worker that
//! wakes late finds nothing to claim and does nothing, so the caller never waits for a thread
//! that is not running a chunk. Which thread runs a chunk does not matter: a chunk's result depends only
//! on its data, and the chunks depend only on the tensor's shape (the wrapper plans them, never
//! from the thread count). Reductions write per-chunk, per-channel float64 partials, which the
//! wrapper merges in chunk order; maps write their elements, and any split of a map is exact.
//!
//! A chunk is `rows` outer rows with all channels, or (when one row is already a large chunk
//! and its runs are long) one outer row and `group` channels: either way a contiguous
//! `[rows, group, inner]` sub-tensor that the ordinary kernels take as it is.

use crate::kernels::{self, Dims, GradInput, GradInputAct, GradSumsAct, Moments};
use crate::kernels::{ScaleShift, ScaleShiftAct, Workspace};
use crate::{grad_sums_out_of_line, map_out_of_line, Lanes};
use core::slice::{from_raw_parts, from_raw_parts_mut};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Per-channel mean and biased variance: partials `{n, mean, m2}`.
const OP_MOMENTS: u32 = 0;
/// `out = (x − p0)·p1 + p2`, then the job's activation.
const OP_SCALE_SHIFT: u32 = 1;
/// `Σg` and `Σg·(x − p0)`: partials `{_, Σg, Σg·xc}`; `g = b`, or with an activation
/// `g = b·act′((x − p0)·p1 + p2)`.
const OP_GRAD_SUMS: u32 = 2;
/// `out = p1·g + p2·(x − p0) + p3`; `g = b`, or with an activation
/// `g = b·act′((x − p0)·p4 + p5)`.
const OP_GRAD_INPUT: u32 = 3;
/// `out = x`: the benchmarks' bandwidth yardstick, threaded.
const OP_COPY: u32 = 4;

/// The pool's control block (`ts/threads/pool.ts`), 8-byte aligned. `generation`, `stop` and
/// `failed` are the JavaScript side's; `job` is the current job's address; `claim` holds the
/// current job's chunk count (high 32 bits) and the next chunk to claim (low 32 bits).
#[repr(C)]
pub struct Control {
    generation: AtomicU32,
    done: AtomicU32,
    stop: AtomicU32,
    job: AtomicU32,
    failed: AtomicU32,
    _pad: u32,
    claim: AtomicU64,
}

/// A pass, as the wrapper writes it into memory (twenty-one little-endian 32-bit words,
/// addresses are byte offsets).
#[repr(C)]
pub struct Job {
    op: u32,
    chunks: u32,
    outer: u32,
    channels: u32,
    inner: u32,
    /// Outer rows per chunk (1 when channels are split).
    rows: u32,
    /// Channels per chunk (`channels` when they are not split).
    group: u32,
    x: u32,
    b: u32,
    out: u32,
    /// Per-channel parameters, `channels` floats each: those of the op, 0 for the others.
    p: [u32; 6],
    /// The fused activation, numbered as for the exports of `lib.rs` (0: none), and the slope
    /// of leakyRelu.
    act: u32,
    slope: f32,
    /// Float64 partials: `group` [`Moments`] per chunk, chunk after chunk.
    partials: u32,
    /// Per-thread scratch: slot `k` at `slots + k·slot_bytes`, see [`bn_slot_bytes`].
    slots: u32,
    slot_bytes: u32,
}

/// Bytes of one thread's scratch for chunks of `group` channels: the kernels' scratch rows and
/// two float32 outputs per channel (which the partials make unused), rounded up to 16. Saturates
/// at `usize::MAX`, as [`Workspace::bytes`] does.
#[no_mangle]
pub extern "C" fn bn_slot_bytes(group: usize) -> usize {
    let rows = match Workspace::row_floats(group) {
        Some(floats) => floats,
        None => return usize::MAX,
    };
    match group.checked_mul(2).and_then(|g| g.checked_add(rows)) {
        Some(floats) if floats <= (usize::MAX - 15) / 4 => (floats * 4 + 15) / 16 * 16,
        _ => usize::MAX,
    }
}

/// Claims and runs chunks of the current job of `control` until none is left, with scratch
/// slot `slot`; returns how many it ran.
///
/// # Safety
/// `control` points to the pool's [`Control`] block. Whenever its claim word has a chunk left,
/// `job` is the address of a [`Job`] whose fields the wrapper validated: positive sizes,
/// `chunks` chunks that cover the `[outer, channels, inner]` tensor (`rows == 1` whenever
/// `group < channels`), every address valid for its op as in the matching export of `lib.rs`
/// (`x`, `b`, `out` for the tensor, each `p[k]` that the op and its activation use for `channels` floats,
/// `partials` for `chunks·group` [`Moments`], slot `slot` for [`bn_slot_bytes`]`(group)`), and
/// no two threads are given the same slot. The wrapper rewrites a job only once `done` says
/// every chunk of the last one finished. Every chunk writes disjoint memory (its own elements,
/// partials and slot), so threads running different chunks of one job do not race.
#[no_mangle]
pub unsafe extern "C" fn bn_work(control: *const Control, slot: u32) -> u32 {
    let control = &*control;
    let mut ran = 0;
    loop {
        let claim = control.claim.load(Ordering::SeqCst);
        let (chunks, next) = (claim >> 32, claim & 0xffff_ffff);
        if next >= chunks {
            return ran;
        }
        let claimed =
            control.claim.compare_exchange(claim, claim + 1, Ordering::SeqCst, Ordering::SeqCst);
        if claimed.is_err() {
            continue;
        }
        // Chunk `next` of the current job is ours, so that job is not finished and the
        // wrapper leaves it (and the address in `job`) alone until we count the chunk done.
        let job = &*(control.job.load(Ordering::SeqCst) as usize as *const Job);
        run_chunk(job, next as usize, slot as usize);
        control.done.fetch_add(1, Ordering::SeqCst);
        ran += 1;
    }
}

/// # Safety
/// As for [`bn_work`], with `i < job.chunks`.
unsafe fn run_chunk(job: &Job, i: usize, slot: usize) {
    let (outer, channels, inner) = (job.outer as usize, job.channels as usize, job.inner as usize);
    let (rows, group) = (job.rows as usize, job.group as usize);
    let groups = (channels + group - 1) / group;
    assert!(rows >= 1 && group >= 1 && (groups == 1 || rows == 1));
    let o0 = i / groups * rows;
    let c0 = i % groups * group;
    let dims = Dims {
        outer: core::cmp::min(rows, outer - o0),
        channels: core::cmp::min(group, channels - c0),
        inner,
    };
    let offset = (o0 * channels + c0) * inner;
    let len = dims.len();
    let gc = dims.channels;
    let slot_ptr = (job.slots as usize + slot * job.slot_bytes as usize) as *mut f32;
    let row_floats = Workspace::row_floats(group).unwrap_or(0);
    let outs = slot_ptr.add(row_floats);
    let partials = (job.partials as usize as *mut Moments).add(i * group);
    let mut ws = Workspace {
        moments: from_raw_parts_mut(partials, gc),
        rows: from_raw_parts_mut(slot_ptr, row_floats),
        thresholds: &mut [],
    };
    let x = (job.x as usize as *const f32).add(offset);
    let b = (job.b as usize as *const f32).add(offset);
    let out = (job.out as usize as *mut f32).add(offset);
    // Only the parameters an op uses are made into slices: the others may be 0 (null).
    let p = |k: usize| from_raw_parts((job.p[k] as usize as *const f32).add(c0), gc);
    let (out_a, out_b) = (from_raw_parts_mut(outs, gc), from_raw_parts_mut(outs.add(group), gc));
    // The fused passes call the kernels that the exports of `lib.rs` call, out of line there
    // for the plain paths' sake.
    if job.act != 0 {
        match job.op {
            OP_SCALE_SHIFT => with_activation!(job.act, job.slope, |a| {
                let params = [p(0), p(1), p(2), p(2)];
                map_out_of_line(ScaleShiftAct(a), x, x, out, dims, params, &mut ws)
            }),
            OP_GRAD_SUMS => with_activation!(job.act, job.slope, |a| {
                let (xs, bs) = (from_raw_parts(x, len), from_raw_parts(b, len));
                let params = [p(0), p(1), p(2)];
                let r = GradSumsAct(a);
                let kept = grad_sums_out_of_line(r, xs, bs, dims, params, &mut ws, out_a, out_b);
                keep_partials(kept, ws.moments, out_a, out_b);
            }),
            OP_GRAD_INPUT => with_activation!(job.act, job.slope, |a| {
                let params = [p(0), p(1), p(2), p(3), p(4), p(5)];
                map_out_of_line(GradInputAct(a), x, b, out, dims, params, &mut ws)
            }),
            _ => panic!(),
        }
        return;
    }
    match job.op {
        OP_MOMENTS => {
            kernels::moments::<Lanes>(from_raw_parts(x, len), dims, &mut ws, out_a, out_b)
        }
        OP_SCALE_SHIFT => kernels::map::<Lanes, _, 4>(
            ScaleShift,
            x,
            x,
            out,
            dims,
            [p(0), p(1), p(2), p(2)],
            &mut ws,
        ),
        OP_GRAD_SUMS => {
            let (xs, bs) = (from_raw_parts(x, len), from_raw_parts(b, len));
            let kept = kernels::reduce_grads::<Lanes>(xs, bs, dims, p(0), &mut ws, out_a, out_b);
            keep_partials(kept, ws.moments, out_a, out_b);
        }
        OP_GRAD_INPUT => {
            let params = [p(0), p(1), p(2), p(3)];
            kernels::map::<Lanes, _, 4>(GradInput, x, b, out, dims, params, &mut ws)
        }
        OP_COPY => kernels::copy::<Lanes>(x, out, len),
        _ => panic!(),
    }
}

/// Makes sure a gradient-sums chunk leaves its float64 sums in its partials (`mean` Σdy, `m2`
/// Σdy·(x − mean)), which the wrapper merges (ts/threads/plan.ts's `mergeGradSums`): a chunk
/// of one block has them only as the float32 `sum_dy`, `sum_dy_xc` (`kept` false), which
/// convert exactly.
fn keep_partials(kept: bool, partials: &mut [Moments], sum_dy: &[f32], sum_dy_xc: &[f32]) {
    if kept {
        return;
    }
    for (m, (&a, &b)) in partials.iter_mut().zip(sum_dy.iter().zip(sum_dy_xc)) {
        (m.mean, m.m2) = (a as f64, b as f64);
    }
}
