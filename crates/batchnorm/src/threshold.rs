//! Per-channel thresholds that let the backward passes of ReLU and leaky ReLU test the sign of
//! the pre-activation without forming it.
//!
//! Those passes keep `dy` where the forward's `z = fl(fl(x − mean)·scale) + shift` is positive,
//! which they test as `−shift < fl(xc·scale)` with `xc = fl(x − mean)` (the same lanes:
//! `activation.rs`'s `grad_at`): a multiply and a compare per vector. For a
//! finite `scale > 0`, `xc ↦ fl(xc·scale)` is non-decreasing over the floats with ±∞ (rounding
//! is monotone), so the `xc` that pass the test are exactly those above one float,
//! `θ = max{v : fl(v·scale) ≤ −shift}`, and `θ < xc` gives the same lanes with the multiply
//! gone: also for `xc` = ±∞ (θ ranges over ±∞ too) and NaN (false both ways), and for a NaN
//! `shift` (θ = NaN: false both ways).
//!
//! θ is found three ways, each exact: a zero shift's in closed form
//! ([`zero_shift_threshold`]); most others next to the quotient `−shift/scale`, four channels
//! at a time ([`quotient_threshold`]); the rest by a search over the floats in order
//! ([`search`]). The last two evaluate `fl(v·scale)` with the float32 multiply the kernels
//! use, so their θ is exact by construction, not by an error bound.

use crate::kernels::{Dims, Workspace};
use crate::vector::Vector;
use core::slice::from_raw_parts;

/// Values a channel from which the backward of relu and leakyRelu tests `θ < x − mean` against
/// per-channel thresholds (this module) instead of forming `(x − mean)·scale`: θ is found
/// once a backward (`bn_grad_sums` leaves it for `bn_grad_input`), for about 1–3 ns a
/// channel (4–5 for zero shifts with scales up to 1/2 and for shifts [`positive_thresholds`]
/// leaves to the search), and the test saves a multiply and a parameter per vector in both
/// passes. Measured (SIMD build, both passes, thresholds always against never): at
/// [r, 1000] with nonzero shifts 0.97–1.0× the time at 48 values a channel, 0.96× at 60–64,
/// 0.93× at 96–128, and 1.03–1.1× at 24–32; with zero shifts and scales 0.3, 1.02–1.06× at
/// 48–64 and 1.0× at 96; at [1, 256, r] (runs of r floats) 1.01–1.02× at 48–64, 0.97× at
/// 96 and 0.88× at 128. The scalar build, at [r, 1000]: 0.92–0.96× at 48–64, 0.9× at 128.
pub(crate) const THRESHOLDS_FROM: usize = 48;

/// For relu (`act` 1) and leakyRelu (3) on at least [`THRESHOLDS_FROM`] values a channel, with
/// every `scale` finite and positive: the thresholds of the sign test, taken out of the
/// workspace, for `GradSumsAbove` and `GradInputAbove`; otherwise `None`. With `ready` (the
/// caller knows a call with the same arguments left them there), the workspace's as they are.
///
/// # Safety
/// `scale` and `shift` hold `dims.channels` floats.
pub(crate) unsafe fn sign_thresholds<'a, V: Vector>(
    act: u32,
    dims: Dims,
    scale: *const f32,
    shift: *const f32,
    ws: &mut Workspace<'a>,
    ready: bool,
) -> Option<&'a [f32]> {
    let channels = dims.channels;
    if !(act == 1 || act == 3) || dims.outer * dims.inner < THRESHOLDS_FROM {
        return None;
    }
    let out = core::mem::take(&mut ws.thresholds);
    if ready {
        return Some(out);
    }
    let (scale, shift) = (from_raw_parts(scale, channels), from_raw_parts(shift, channels));
    positive_thresholds::<V>(scale, shift, out).then_some(out)
}

/// Fills `out` with each channel's θ for `−shift < fl(xc·scale)` (see the module). Returns
/// false, leaving `out` untouched, when some `scale` is not finite and positive: zero, a
/// negative or an infinite scale makes the lanes that pass a down-set or no interval, and the
/// caller keeps the multiply.
///
/// `V` channels at a time through [`quotient_threshold`] (about 2 ns a channel on the SIMD
/// build, against 5 for the search), and one at a time through [`threshold`] where that
/// leaves a lane unanswered, for the last channels, and where a shift is zero: the
/// quotient's neighbours would then be subnormals, and each product of one costs the CPU a
/// microcode assist (the threshold passes at [60, 1000] ran 2.5× slower), while a zero
/// shift's θ is quickly found apart ([`zero_shift_threshold`]; a whole vector of +0 at once
/// where every scale is above 1/2).
pub(crate) fn positive_thresholds<V: Vector>(
    scale: &[f32],
    shift: &[f32],
    out: &mut [f32],
) -> bool {
    let n = scale.len();
    assert!(shift.len() >= n && out.len() >= n);
    if !scale.iter().all(|&s| s > 0.0 && s < f32::INFINITY) {
        return false;
    }
    let channels = scale.chunks(V::LANES).zip(shift[..n].chunks(V::LANES));
    for ((s, b), theta) in channels.zip(out.chunks_mut(V::LANES)) {
        if b.iter().all(|&b| b == 0.0) && s.iter().all(|&s| s > 0.5) {
            // θ = +0 (see zero_shift_threshold): the usual bias of a module's first steps.
            theta.fill(0.0);
            continue;
        }
        if s.len() == V::LANES && b.iter().all(|&b| b != 0.0) {
            // SAFETY: s, b and theta hold LANES floats.
            unsafe {
                let (vs, vb) = (V::load(s.as_ptr()), V::load(b.as_ptr()));
                let th = quotient_threshold(vs, V::splat(0.0).sub(vb));
                // Every lane finite (x − x = +0): none is NaN, the mark of a lane not answered.
                if th.sub(th).sum_lanes() == 0.0 {
                    th.store(theta.as_mut_ptr());
                    continue;
                }
            }
        }
        for ((&s, &b), theta) in s.iter().zip(b).zip(theta) {
            *theta = threshold(s, -b);
        }
    }
    true
}

/// θ for `t < fl(xc·s)` per lane where it is the quotient `fl(t/s)`, the float below it or the
/// one above (the second above is only checked: all the ordinary scales and nonzero shifts of
/// the host test), NaN elsewhere. Whether a float `v` is at most θ, `!(t < fl(v·s))`, is the
/// kernels' own test, and it holds for every float up to θ and none above: so `v` is θ exactly
/// when it passes and the float above it does not, whatever the quotient's rounding. (A NaN product passes
/// too, but only ±0 and ±∞ step to NaN, and each meets that step only where the answer is NaN
/// anyway or in a case it does not reach.) A division and four multiplies a vector; the lanes
/// not answered (a NaN or +∞ `t`, θ further from the quotient, as among the subnormals) and
/// an infinite θ (which the caller's finiteness check turns away) are left to [`threshold`].
#[inline(always)]
fn quotient_threshold<V: Vector>(s: V, t: V) -> V {
    let quotient = t.div(s);
    let [below, above] = quotient.adjacent();
    let above2 = above.adjacent()[1];
    let nan = V::splat(f32::NAN);
    let fails = |v: V, then: V, otherwise: V| t.lt_select(v.mul(s), then, otherwise);
    let at_or_above = fails(above, quotient, fails(above2, above, nan));
    fails(quotient, fails(below, nan, below), at_or_above)
}

/// `max{v : fl(v·s) ≤ t}` for a finite `s > 0` (NaN for a NaN `t`).
fn threshold(s: f32, t: f32) -> f32 {
    if t.is_nan() || t == f32::INFINITY {
        // A NaN compares false, as `t < fl(xc·s)` does; nothing exceeds +∞, as nothing does t.
        return t;
    }
    if t == 0.0 {
        if let Some(theta) = zero_shift_threshold(s) {
            return theta;
        }
    }
    search(s, t)
}

/// [`threshold`] for a `t` that is not NaN or +∞, by search over the floats in order, starting
/// from `t/s`, which is within an ulp or two of θ unless the products overflow or fall among the
/// subnormals: there the search widens by doubling steps, then halves, so at most about 64
/// products a channel (each among the subnormals a microcode assist: see
/// [`zero_shift_threshold`]).
fn search(s: f32, t: f32) -> f32 {
    let at_most = |k: u32| from_key(k) * s <= t;
    // at_most(lo) holds and at_most(hi) does not: fl(−∞·s) = −∞ ≤ t, fl(+∞·s) = +∞ > t.
    let (mut lo, mut hi) = (key(f32::NEG_INFINITY), key(f32::INFINITY));
    let guess = key(t / s);
    let mut step = 1u32;
    if at_most(guess) {
        lo = guess;
        while hi - lo > step {
            if !at_most(lo + step) {
                hi = lo + step;
                break;
            }
            lo += step;
            step = step.saturating_mul(2);
        }
    } else {
        hi = guess;
        while hi - lo > step {
            if at_most(hi - step) {
                lo = hi - step;
                break;
            }
            hi -= step;
            step = step.saturating_mul(2);
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if at_most(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    from_key(lo)
}

/// [`threshold`] for `t = ±0` (a zero shift: the usual bias, and every non-affine module's) in
/// closed form, where the search would multiply subnormals, which take the CPU a microcode
/// assist each (90–940 ns a channel for s from 0.45 down to 1e-4; a backward at [8, 32, 16, 16]
/// ran 1.2× slower). fl(v·s) ≤ 0 for every v ≤ 0; a positive v rounds to 0 exactly when
/// v·s ≤ 2^−150 (a tie goes to the even 0), and the positive floats below 2^−125 are m·2^−149
/// for their bits m. So θ has the bits m = max{m : m·s ≤ 1/2} = floor(1/(2s)); `None` where
/// m might reach 2^24 (s below about 3·10⁻⁸).
fn zero_shift_threshold(s: f32) -> Option<f32> {
    if s > 0.5 {
        // m = 0: the smallest positive float times s rounds up to it, not to 0.
        return Some(0.0);
    }
    // 2^24; and 2^52, adding which rounds a smaller positive float to an integer whose bits
    // are then the low bits of the sum's (no float-to-integer conversion: on wasm32, a dozen
    // instructions and branches).
    const LINEAR_BITS: f64 = 16_777_216.0;
    const ROUND: f64 = 4_503_599_627_370_496.0;
    let s = s as f64;
    let q = 0.5 / s;
    if q >= LINEAR_BITS - 1.0 {
        return None;
    }
    // m = floor(0.5/s) is floor(q): no integer n < 2^24 lies between them. 0.5/s is n only for
    // s = 0.5/n, a float only for n a power of 2, where q is exact; for the other n, a float s
    // is at least 2^−24/n relatively away from 0.5/n (0.5/n = 2^−k/o for an odd o > 1, and
    // M·o ≠ 2^j for 24-bit M), far more than q's rounding, 2^−53.
    let mut m = (q + ROUND) - ROUND;
    // Rounded to nearest: one less where that rounded up.
    m -= f64::from(u8::from(m > q));
    Some(f32::from_bits((m + ROUND).to_bits() as u32))
}

/// The floats other than NaN in order as integers: −∞ lowest, −0 just below +0, +∞ highest.
pub(crate) fn key(v: f32) -> u32 {
    let bits = v.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The float of a [`key`].
pub(crate) fn from_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

#[cfg(test)]
mod tests {
    //! θ against the test it replaces, `t < fl(xc·s)`, on every `xc` where the two could part:
    //! θ and the floats around it, ±0, ±∞, NaN, the extremes, and a spread of ordinary values;
    //! for scales and shifts that are ordinary, subnormal, huge (products that overflow), zero,
    //! infinite and NaN.
    extern crate std;
    use super::*;
    use crate::scalar::F32x1;
    use std::vec::Vec;

    fn neighbours(v: f32) -> impl Iterator<Item = f32> {
        let k = key(v) as i64;
        (-3i64..=3)
            .map(move |d| k + d)
            .filter(|&k| k >= key(f32::NEG_INFINITY) as i64 && k <= key(f32::INFINITY) as i64)
            .map(|k| from_key(k as u32))
    }

    #[test]
    fn key_orders_the_floats() {
        let mut v: Vec<f32> = std::vec![f32::NEG_INFINITY, -f32::MAX, -1.5, -f32::MIN_POSITIVE];
        v.extend([-1e-45, -0.0, 0.0, 1e-45, f32::MIN_POSITIVE, 1.0, f32::MAX, f32::INFINITY]);
        for w in v.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} {}", w[0], w[1]);
            assert_eq!(from_key(key(w[0])).to_bits(), w[0].to_bits());
        }
        assert_eq!(key(0.0) - key(-0.0), 1);
    }

    #[test]
    fn threshold_matches_the_multiply() {
        let tiny = f32::from_bits(1);
        let mut scales = std::vec![1.0f32, 0.7, 3.0, 1e-3, 1e3, 1e-30, 1e30, tiny, f32::MAX];
        scales.extend([f32::MIN_POSITIVE, 1.0 - f32::EPSILON / 2.0, 1.0 + f32::EPSILON]);
        // The zero shift's closed form: either side of 1/2 (θ = 0 above), of 1/4 and 1/3 (the
        // last subnormal bits m with m·s ≤ 1/2 on a tie or not), and where it gives up (2^−25).
        scales.extend([0.5, 0.5 + f32::EPSILON / 2.0, 0.5 - f32::EPSILON / 4.0, 0.25, 1.0 / 3.0]);
        scales.extend([0.25 + f32::EPSILON / 8.0, 1e-4, 3e-8, 2.9e-8, 2.0f32.powi(-25)]);
        let mut shifts = std::vec![0.0f32, -0.0, 1.0, -1.0, 0.3, -2.5, 1e-40, -1e-40, tiny, -tiny];
        shifts.extend([1e20, -1e20, f32::MAX, -f32::MAX, f32::INFINITY, f32::NEG_INFINITY]);
        shifts.extend([f32::NAN, 6.0, -6.0, 1e-38, 5e3]);
        let mut probes: Vec<f32> = std::vec![0.0, -0.0, tiny, -tiny, f32::MAX, -f32::MAX];
        probes.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0, -1.0]);
        for k in 0..2000 {
            // A spread of magnitudes of both signs, from about 1e-38 to 1e38.
            let e = (k % 160) as f32 - 80.0;
            probes.push(if k % 2 == 0 { 1.7f32.powf(e) } else { -1.3f32.powf(e) });
        }
        let mut cases = 0;
        for &s in &scales {
            for &b in &shifts {
                let mut theta = [0f32];
                assert!(positive_thresholds::<F32x1>(&[s], &[b], &mut theta));
                let th = theta[0];
                let t = -b;
                let near_t: Vec<f32> =
                    if t.is_finite() { neighbours(t / s).collect() } else { Vec::new() };
                let all = probes.iter().copied().chain(neighbours(th)).chain(near_t);
                for xc in all {
                    assert_eq!(th < xc, t < xc * s, "s {s:e}, shift {b:e}, xc {xc:e}: θ {th:e}");
                    cases += 1;
                }
                if !th.is_nan() && th != f32::INFINITY {
                    // θ is the largest: the next float up passes.
                    let up = from_key(key(th) + 1);
                    assert!(t < up * s, "s {s:e}, shift {b:e}: θ {th:e} not the largest");
                }
            }
        }
        std::println!("thresholds: {cases} comparisons");
    }

    /// The zero shift's closed form against the search, wherever it answers: every scale
    /// from 2^−24 up by quarter octaves, and either side of each 1/k (ties of m·s with 1/2).
    #[test]
    fn zero_shift_closed_form_is_the_search() {
        let mut scales: Vec<f32> =
            (0..=4 * 30).map(|k| 2.0f32.powf(k as f32 / 4.0 - 24.0)).collect();
        for k in 1..2000 {
            let s = 0.5 / k as f32;
            scales.extend([s, from_key(key(s) + 1), from_key(key(s) - 1)]);
        }
        for &s in &scales {
            let closed = zero_shift_threshold(s);
            if s >= 3e-8 {
                assert!(closed.is_some(), "scale {s:e}: no closed form");
            }
            if let Some(theta) = closed {
                assert_eq!(theta.to_bits(), search(s, 0.0).to_bits(), "scale {s:e}");
                assert_eq!(theta.to_bits(), search(s, -0.0).to_bits(), "scale {s:e}, −0");
            }
        }
    }

    /// The quotient's θ against [`threshold`]'s wherever it answers, on pseudo-random bit
    /// patterns (every kind of float for the shift, every finite positive one for the scale)
    /// and on ordinary scales and shifts, where it must answer nearly always.
    #[test]
    fn quotient_threshold_is_the_search() {
        let mut state = 0x9e37_79b9u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for ordinary in [false, true] {
            let (mut answered, mut total) = (0u32, 0u32);
            for _ in 0..400_000 {
                let (s, b) = if ordinary {
                    let u = |r: u32| r as f32 / u32::MAX as f32;
                    (1e-3f32 * 1e6f32.powf(u(next())), (u(next()) - 0.5) * 20.0)
                } else {
                    (f32::from_bits(next() % 0x7f80_0000), f32::from_bits(next()))
                };
                // A zero shift goes to zero_shift_threshold instead (tested below).
                if s == 0.0 || b == 0.0 {
                    continue;
                }
                total += 1;
                let q = quotient_threshold(F32x1::splat(s), F32x1::splat(-b)).sum_lanes();
                if q.is_nan() {
                    continue;
                }
                answered += 1;
                let th = threshold(s, -b);
                assert_eq!(q.to_bits(), th.to_bits(), "s {s:e}, shift {b:e}: {q:e} vs {th:e}");
            }
            std::println!("quotient answered {answered} of {total} (ordinary: {ordinary})");
            if ordinary {
                assert!(answered as f64 >= 0.999 * total as f64, "{answered} of {total}");
            }
        }
    }

    #[test]
    fn refuses_scales_without_an_up_set() {
        let mut out = [0f32];
        for s in [0.0f32, -0.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            assert!(!positive_thresholds::<F32x1>(&[s], &[0.5], &mut out), "scale {s}");
        }
        assert!(!positive_thresholds::<F32x1>(&[1.0, -1.0], &[0.0, 0.0], &mut [0.0, 0.0]));
    }
}
