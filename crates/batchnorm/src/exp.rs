//! `e^x` and `e^x − 1` per lane, over the [`Vector`] trait, for the activations built on them
//! (`activation.rs`: sigmoid, tanh, silu), the same bits in every build. Measured against
//! float64: `exp` 0.99 ulp at worst on [−87.33, 88.376] (every float of it, checked once; the
//! test's sweep asserts ≤ 2).

use crate::vector::Vector;

/// Below this, `exp` returns `e^EXP_LO` (≈ 1.2·10⁻³⁸, the smallest normal float's order).
const EXP_LO: f32 = -87.33;
/// Above this, `exp` returns `exp(EXP_HI)`, which is +∞: `n` = 128, the most `2^n` can be
/// (128 + 127 in the exponent field is ∞'s bits; 129 would wrap to −0).
const EXP_HI: f32 = 89.0;
/// The last argument `exp` gives finitely (≈ 2.4·10³⁸): from about `127.5·ln 2` on, `n`
/// rounds to 128 and `e^x` is +∞, where float32's own overflows from 88.723.
#[cfg(test)]
const EXP_FINITE: f32 = 88.376_26;

/// `e^x` per lane, to within 2 ulp (measured, see the tests) for x in [`EXP_LO`,
/// `EXP_FINITE`], `e^EXP_LO` below it (never 0), +∞ above it (so `1/(1 + e^x)` gives 0, and
/// `−∞/(1 + e^∞)` NaN, PyTorch's values at ±∞); NaN gives NaN. No FMA, no tables, no integer
/// conversion beyond bit shifts, so every build computes the same bits:
///
/// 1. `n = round(x·log2 e)`, by adding and subtracting `1.5·2^23` (round to nearest, exact
///    for |n| < 2^22);
/// 2. `r = x − n·ln 2` with ln 2 split Cody–Waite style into `LN2_HI` (9 significant bits, so
///    `n·LN2_HI` is exact for |n| ≤ 128) and `LN2_LO`: |r| ≤ ln 2 / 2;
/// 3. `e^r ≈ 1 + r + r²·P(r)` with Cephes' degree-5 minimax `P` for `expf` (relative error
///    about 1e-7 on that interval);
/// 4. `e^x = e^r · 2^n`, with `2^n` made by shifting `n` into the exponent bits
///    ([`Vector::pow2_rounded`]; `n` = 128 gives +∞, and `e^r` > 0 keeps it).
#[inline(always)]
pub(crate) fn exp<W: Vector>(x: W) -> W {
    let (q, scale) = exp_reduced(x.clamp(W::splat(EXP_LO), W::splat(EXP_HI)));
    q.add(W::splat(1.0)).mul(scale)
}

/// Above this, [`expm1`] returns `expm1(EXPM1_HI)` (≈ 1.65·10³⁸): finite, so `tanh`'s
/// `e/(e + 2)` is 1 there, not ∞/∞ (`activation.rs`).
const EXPM1_HI: f32 = 88.0;

/// `e^x − 1` per lane for x in [`EXP_LO`, `EXPM1_HI`] (clamped to it; NaN gives NaN): as
/// `q·2^n + (2^n − 1)` with `q = e^r − 1` from [`exp`]'s steps, which is `q` itself for
/// |x| ≤ ln 2 / 2 (n = 0), so there is no cancellation near 0.
#[inline(always)]
pub(crate) fn expm1<W: Vector>(x: W) -> W {
    let (q, scale) = exp_reduced(x.clamp(W::splat(EXP_LO), W::splat(EXPM1_HI)));
    q.mul(scale).add(scale.sub(W::splat(1.0)))
}

/// Steps 1–3 of [`exp`] for an `x` already clamped: `(e^r − 1, 2^n)`.
#[inline(always)]
fn exp_reduced<W: Vector>(x: W) -> (W, W) {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375 = 355/512
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23
    const P: [f32; 6] =
        [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
    let t = x.mul(W::splat(LOG2E)).add(W::splat(ROUND));
    let n = t.sub(W::splat(ROUND));
    let r = x.sub(n.mul(W::splat(LN2_HI))).sub(n.mul(W::splat(LN2_LO)));
    let mut p = W::splat(P[0]);
    for &c in &P[1..] {
        p = p.mul(r).add(W::splat(c));
    }
    (p.mul(r.mul(r)).add(r), t.pow2_rounded())
}

#[cfg(test)]
pub(crate) mod tests {
    //! `exp` against float64 on the host, with the one-lane vector; the helpers serve the
    //! activations' accuracy tests too.
    extern crate std;
    use super::*;
    use crate::scalar::F32x1;

    fn exp1(x: f32) -> f32 {
        let mut y = 0f32;
        // SAFETY: y is one float.
        unsafe { exp(F32x1::splat(x)).store(&mut y) };
        y
    }

    /// Distance in units in the last place of `want` (rounded to float32).
    pub(crate) fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    pub(crate) fn sweep(from: f32, to: f32, steps: usize) -> impl Iterator<Item = f32> {
        // `min`: the float32 steps may round past `to`.
        (0..=steps).map(move |i| (from + (to - from) * (i as f32 / steps as f32)).min(to))
    }

    #[test]
    fn exp_within_two_ulp() {
        let mut worst = 0f64;
        for x in sweep(EXP_LO, EXP_FINITE, 2_000_000) {
            let e = ulps(exp1(x), (x as f64).exp());
            worst = worst.max(e);
        }
        std::println!("exp: worst {worst:.2} ulp");
        assert!(worst <= 2.0, "exp error {worst} ulp");
    }

    #[test]
    fn exp_beyond_its_range() {
        assert!(exp1(EXP_FINITE).is_finite() && exp1(EXP_FINITE) > 2.4e38);
        let above = f32::from_bits(EXP_FINITE.to_bits() + 1);
        for x in [above, 88.72, EXP_HI, 1000.0, f32::MAX, f32::INFINITY] {
            assert_eq!(exp1(x), f32::INFINITY, "exp({x})");
        }
        assert_eq!(exp1(-1000.0), exp1(EXP_LO));
        assert!(exp1(-1000.0) > 0.0);
        assert!(exp1(f32::NAN).is_nan());
        assert_eq!(exp1(0.0), 1.0);
    }
}
