//! The O(C) float64 arithmetic of a training call, two channels per `f64x2`: a forward's
//! coefficients and running statistics, a backward's gradient coefficients. The wrapper does
//! the same in JavaScript (`ts/core.ts`) for the other back ends and the rarer paths; here it
//! runs at C = 1000 in a fraction of the time (JavaScript pays for each typed-array access,
//! more once wasm memory has grown and V8 has to check for detached buffers), and gives the
//! same values: every operation is the JavaScript one, in the same order, correctly rounded in
//! float64 (square root and division included), and each float32 result is rounded once, to
//! nearest, as a `Float32Array` store rounds. So every result has the JavaScript's bits, but
//! for a NaN's payload, which neither wasm nor JavaScript promises.
//!
//! The exports are here, not in `lib.rs` (as `threads.rs` has its own).
//!
//! SIMD builds only: wasm has a scalar `f64.sqrt`, but Rust 1.63's `core` has no way to emit
//! it, so the scalar build leaves this work to JavaScript.

use core::arch::wasm32::{
    f32x4_demote_f64x2_zero, f64x2_add, f64x2_div, f64x2_mul, f64x2_neg, f64x2_promote_low_f32x4,
    f64x2_splat, f64x2_sqrt, v128, v128_load, v128_load32_zero, v128_load64_zero, v128_store,
    v128_store32_lane, v128_store64_lane,
};

/// Where a channel pair's values come from and go: two channels at `c`, or, for an odd count's
/// last channel, one (lane 1 then computes on zeros and is never stored).
#[derive(Clone, Copy)]
struct Pair {
    c: usize,
    two: bool,
}

impl Pair {
    /// The pairs of `channels` channels, in order.
    fn all(channels: usize) -> impl Iterator<Item = Pair> {
        (0..channels).step_by(2).map(move |c| Pair { c, two: c + 1 < channels })
    }

    /// The pair's float32 values of `p`, as float64.
    ///
    /// # Safety
    /// `p` is valid for the pair's channels.
    #[inline(always)]
    unsafe fn f32(self, p: *const f32) -> v128 {
        let p = p.add(self.c);
        let v = if self.two {
            v128_load64_zero(p as *const u64)
        } else {
            v128_load32_zero(p as *const u32)
        };
        f64x2_promote_low_f32x4(v)
    }

    /// Stores `v` rounded to float32 at the pair's channels of `p`.
    ///
    /// # Safety
    /// `p` is valid for the pair's channels.
    #[inline(always)]
    unsafe fn put_f32(self, p: *mut f32, v: v128) {
        let p = p.add(self.c);
        let v = f32x4_demote_f64x2_zero(v);
        if self.two {
            v128_store64_lane::<0>(v, p as *mut u64);
        } else {
            v128_store32_lane::<0>(v, p as *mut u32);
        }
    }

    /// The pair's float64 values of `p`.
    ///
    /// # Safety
    /// `p` is valid for the pair's channels.
    #[inline(always)]
    unsafe fn f64(self, p: *const f64) -> v128 {
        let p = p.add(self.c);
        if self.two {
            v128_load(p as *const v128)
        } else {
            v128_load64_zero(p as *const u64)
        }
    }

    /// Stores `v` at the pair's channels of `p`.
    ///
    /// # Safety
    /// `p` is valid for the pair's channels.
    #[inline(always)]
    unsafe fn put_f64(self, p: *mut f64, v: v128) {
        let p = p.add(self.c);
        if self.two {
            v128_store(p as *mut v128, v);
        } else {
            v128_store64_lane::<0>(v, p as *mut u64);
        }
    }
}

/// `invstd = 1/sqrt(variance + eps)` and `scale = weight·invstd`, per channel (`weight` null:
/// 1): `forwardCoefficients` of `ts/core.ts` without a correction (which copies the bias into
/// `shift` itself).
///
/// # Safety
/// Every non-null pointer (`weight` may be 0) is valid for `channels` values (`invstd` for
/// float64, 8-byte aligned); outputs do not overlap inputs.
#[no_mangle]
pub unsafe extern "C" fn bn_forward_coefficients(
    variance: *const f32,
    weight: *const f32,
    eps: f64,
    channels: usize,
    invstd: *mut f64,
    scale: *mut f32,
) {
    let (one, eps) = (f64x2_splat(1.0), f64x2_splat(eps));
    for p in Pair::all(channels) {
        let k = f64x2_div(one, f64x2_sqrt(f64x2_add(p.f32(variance), eps)));
        p.put_f64(invstd, k);
        let scaled = if weight.is_null() { k } else { f64x2_mul(p.f32(weight), k) };
        p.put_f32(scale, scaled);
    }
}

/// `running = (1 − m)·running + m·batch` for the mean, and for the variance with the batch's
/// scaled by `unbias` (`n/(n − 1)`, or 1): `updateRunningStats` of `ts/core.ts`.
///
/// # Safety
/// Every pointer is valid for `channels` floats; the running arrays overlap nothing else.
#[no_mangle]
pub unsafe extern "C" fn bn_update_running(
    mean: *const f32,
    variance: *const f32,
    running_mean: *mut f32,
    running_var: *mut f32,
    momentum: f64,
    unbias: f64,
    channels: usize,
) {
    let m = f64x2_splat(momentum);
    let keep = f64x2_splat(1.0 - momentum);
    let unbias = f64x2_splat(unbias);
    for p in Pair::all(channels) {
        let rm = f64x2_add(f64x2_mul(keep, p.f32(running_mean)), f64x2_mul(m, p.f32(mean)));
        let batch_var = f64x2_mul(f64x2_mul(m, p.f32(variance)), unbias);
        let rv = f64x2_add(f64x2_mul(keep, p.f32(running_var)), batch_var);
        p.put_f32(running_mean, rm);
        p.put_f32(running_var, rv);
    }
}

/// A backward through batch statistics, per channel, from its sums `Σdy` and `Σdy·(x − mean)`
/// over `n` values: `dWeight = invstd·Σdy·xc`, `kDy = weight·invstd` (`weight` null: 1),
/// `kXc = −kDy·invstd²·Σdy·xc / n` and `kConst = −kDy·Σdy / n`, with `kDy` as stored (float32):
/// `gradientCoefficients` of `ts/core.ts` without a correction.
///
/// # Safety
/// Every non-null pointer (`weight` may be 0) is valid for `channels` values (`invstd` for
/// float64, 8-byte aligned); outputs overlap nothing.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bn_backward_coefficients(
    sum_dy: *const f32,
    sum_dy_xc: *const f32,
    invstd: *const f64,
    weight: *const f32,
    n: f64,
    channels: usize,
    d_weight: *mut f32,
    k_dy: *mut f32,
    k_xc: *mut f32,
    k_const: *mut f32,
) {
    let n = f64x2_splat(n);
    for p in Pair::all(channels) {
        let k = p.f64(invstd);
        let (g, gx) = (p.f32(sum_dy), p.f32(sum_dy_xc));
        p.put_f32(d_weight, f64x2_mul(k, gx));
        p.put_f32(k_dy, if weight.is_null() { k } else { f64x2_mul(p.f32(weight), k) });
        // The stored float32 kDy, read back, as JavaScript reads it.
        let neg_a = f64x2_neg(p.f32(k_dy));
        let xc = f64x2_mul(f64x2_mul(f64x2_mul(neg_a, k), k), gx);
        p.put_f32(k_xc, f64x2_div(xc, n));
        p.put_f32(k_const, f64x2_div(f64x2_mul(neg_a, g), n));
    }
}
