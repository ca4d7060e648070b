//! Activations fused into the batch-norm passes, over the [`Vector`] trait so that the SIMD and
//! scalar builds run the same code.
//!
//! The forward applies `act(z)` to `z = (x − center)·scale + shift` before storing it; the
//! backward passes recompute `z` from `x` and the forward's coefficients and use
//! `g = dy·act′(z)` where plain batch norm uses `dy` (see `GradSumsAct`, `GradInputAct`), so
//! the forward stores no mask and the backward reads memory no more than without activation.
//! Where `act′` costs more than a stream of memory (an `exp` a value), or the tensor is in
//! the cache and no sign thresholds apply (see `bn_writes_g` in lib.rs), the first backward
//! pass writes `g` into `dx`'s memory and the second reads it (`Storing`): `act′` once a
//! backward, not twice.
//!
//! `relu`, `relu6` and `leakyRelu` are compares with masks, `pmin` and selects (PyTorch's
//! conventions at the kinks: the derivative is 0 at 0 for relu, 0 at 0 and 6 for relu6, the
//! slope at 0 for leakyRelu; NaN in gives NaN out); the backward tests relu's and leakyRelu's
//! sign without forming `z` ([`Activation::grad_at`]), or, against per-channel thresholds,
//! without forming `(x − mean)·scale` either ([`SignActivation`]). `sigmoid`, `tanh` and
//! `silu` are built on [`exp`] and [`expm1`] (`exp.rs`):
//!
//! - `sigmoid(z) = 1 / (1 + e^−z)`,
//! - `tanh(z) = (e^2z − 1) / (e^2z − 1 + 2)`, with `e^2z − 1` from `expm1`,
//! - `silu(z) = z / (1 + e^−z)`,
//!
//! where `exp` never gives 0 and overflows to +∞, so that large `|z|` gives the limits 0, ±1,
//! 0 or `z`, and ±∞ gives PyTorch's values: silu(−∞) is NaN (−∞·0), silu(+∞) +∞. Measured
//! errors against float64 (host tests below, dense sweeps; `exp`'s in `exp.rs`): `sigmoid` 2.4
//! ulp, `tanh` 2.5 ulp (2.2 near 0, subnormals included) and `silu` 2.3 ulp
//! (asserted ≤ 4, 4 and 6); the derivatives within 1.1·10⁻⁷·(1 + |z|) absolute (asserted
//! 2.5·10⁻⁷; silu′ carries the rounding of `s` times `z`).

use crate::exp::{exp, expm1};
use crate::vector::Vector;

/// An activation: its value and its derivative times an upstream gradient.
pub(crate) trait Activation: core::marker::Copy {
    fn apply<W: Vector>(self, z: W) -> W;
    /// `dy·act′(z)`.
    fn grad<W: Vector>(self, z: W, dy: W) -> W;
    /// `dy·act′(m + shift)`, for the backward passes, which have `m = (x − mean)·scale`.
    /// Activations whose derivative depends only on whether `z > 0` override it to test
    /// `−shift < m` instead: the same lanes (`m + shift` rounds to a positive float exactly when
    /// the exact sum is positive, NaN and infinities compare false both ways), and with `−shift`
    /// per channel, hoisted out of a run's loop, one add less per vector.
    #[inline(always)]
    fn grad_at<W: Vector>(self, m: W, shift: W, dy: W) -> W {
        self.grad(m.add(shift), dy)
    }
}

/// An activation whose derivative depends only on whether `z > 0`: the backward passes can
/// test `θ < x − mean` against a per-channel threshold instead of forming `(x − mean)·scale`
/// (`crate::threshold`, [`GradSumsAbove`](crate::kernels::GradSumsAbove)).
pub(crate) trait SignActivation: Activation {
    /// `dy·act′(z)` where `z > 0` exactly in the lanes where `threshold < v`.
    fn grad_above<W: Vector>(self, v: W, threshold: W, dy: W) -> W;
}

/// `max(z, 0)`; derivative 1 for z > 0, else 0.
#[derive(Clone, Copy)]
pub(crate) struct Relu {
    /// +0.0, read so that the compiler cannot see it ([`Vector::relu`] uses that).
    zero: f32,
}
impl Relu {
    pub(crate) fn new() -> Self {
        static ZERO: f32 = 0.0;
        // SAFETY: a read of a valid, aligned static; volatile only to hide its value.
        Relu { zero: unsafe { core::ptr::read_volatile(&ZERO) } }
    }
}
impl Activation for Relu {
    #[inline(always)]
    fn apply<W: Vector>(self, z: W) -> W {
        z.relu(W::splat(self.zero))
    }
    #[inline(always)]
    fn grad<W: Vector>(self, z: W, dy: W) -> W {
        W::splat(0.0).lt_keep(z, dy)
    }
    #[inline(always)]
    fn grad_at<W: Vector>(self, m: W, shift: W, dy: W) -> W {
        self.grad_above(m, W::splat(0.0).sub(shift), dy)
    }
}
impl SignActivation for Relu {
    #[inline(always)]
    fn grad_above<W: Vector>(self, v: W, threshold: W, dy: W) -> W {
        threshold.lt_keep(v, dy)
    }
}

/// `min(max(z, 0), 6)`; derivative 1 for 0 < z < 6, else 0.
#[derive(Clone, Copy)]
pub(crate) struct Relu6;
impl Activation for Relu6 {
    #[inline(always)]
    fn apply<W: Vector>(self, z: W) -> W {
        z.relu(W::splat(0.0)).pmin(W::splat(6.0))
    }
    #[inline(always)]
    fn grad<W: Vector>(self, z: W, dy: W) -> W {
        W::splat(0.0).lt_keep(z, z.lt_keep(W::splat(6.0), dy))
    }
}

/// `z` for z > 0, else `slope·z`; derivative 1 for z > 0, else `slope`.
#[derive(Clone, Copy)]
pub(crate) struct LeakyRelu(pub f32);
impl Activation for LeakyRelu {
    #[inline(always)]
    fn apply<W: Vector>(self, z: W) -> W {
        W::splat(0.0).lt_select(z, z, z.mul(W::splat(self.0)))
    }
    #[inline(always)]
    fn grad<W: Vector>(self, z: W, dy: W) -> W {
        W::splat(0.0).lt_select(z, dy, dy.mul(W::splat(self.0)))
    }
    #[inline(always)]
    fn grad_at<W: Vector>(self, m: W, shift: W, dy: W) -> W {
        self.grad_above(m, W::splat(0.0).sub(shift), dy)
    }
}
impl SignActivation for LeakyRelu {
    #[inline(always)]
    fn grad_above<W: Vector>(self, v: W, threshold: W, dy: W) -> W {
        threshold.lt_select(v, dy, dy.mul(W::splat(self.0)))
    }
}

/// `1 / (1 + e^−z)`; derivative `s·(1 − s)`.
#[derive(Clone, Copy)]
pub(crate) struct Sigmoid;
impl Activation for Sigmoid {
    #[inline(always)]
    fn apply<W: Vector>(self, z: W) -> W {
        sigmoid(z)
    }
    #[inline(always)]
    fn grad<W: Vector>(self, z: W, dy: W) -> W {
        let s = sigmoid(z);
        dy.mul(s.mul(W::splat(1.0).sub(s)))
    }
}

/// `(e^2z − 1)/(e^2z + 1)`; derivative `1 − t²`.
#[derive(Clone, Copy)]
pub(crate) struct Tanh;
impl Activation for Tanh {
    #[inline(always)]
    fn apply<W: Vector>(self, z: W) -> W {
        tanh(z)
    }
    #[inline(always)]
    fn grad<W: Vector>(self, z: W, dy: W) -> W {
        let t = tanh(z);
        dy.mul(W::splat(1.0).sub(t.mul(t)))
    }
}

/// `z·sigmoid(z)`; derivative `s·(1 + z·(1 − s))`.
#[derive(Clone, Copy)]
pub(crate) struct Silu;
impl Activation for Silu {
    #[inline(always)]
    fn apply<W: Vector>(self, z: W) -> W {
        z.div(W::splat(1.0).add(exp(W::splat(0.0).sub(z))))
    }
    #[inline(always)]
    fn grad<W: Vector>(self, z: W, dy: W) -> W {
        let one = W::splat(1.0);
        let s = sigmoid(z);
        dy.mul(s.mul(one.add(z.mul(one.sub(s)))))
    }
}

#[inline(always)]
fn sigmoid<W: Vector>(z: W) -> W {
    let one = W::splat(1.0);
    one.div(one.add(exp(W::splat(0.0).sub(z))))
}

/// `(e^2z − 1)/(e^2z + 1)` through [`expm1`], accurate near 0, where `1 − 2/(1 + e^2z)`
/// cancels (its absolute error, about an ulp of 1, was 19% of tanh(1e-7)).
#[inline(always)]
fn tanh<W: Vector>(z: W) -> W {
    let em = expm1(z.add(z));
    em.div(em.add(W::splat(2.0)))
}

#[cfg(test)]
mod tests {
    //! Accuracy of the activations built on `exp` against float64, on the host with the
    //! one-lane vector (the SIMD build runs the same operations lane by lane: IEEE
    //! single-precision add, mul, div and bit shifts give the same bits).
    extern crate std;
    use super::*;
    use crate::exp::tests::{sweep, ulps};
    use crate::scalar::F32x1;
    use crate::vector::Vector;

    fn at<A: Activation>(a: A, z: f32) -> (f32, f32) {
        let mut y = [0f32; 2];
        // SAFETY: y holds two floats.
        unsafe {
            a.apply(F32x1::splat(z)).store(y.as_mut_ptr());
            a.grad(F32x1::splat(z), F32x1::splat(1.0)).store(y.as_mut_ptr().add(1));
        }
        (y[0], y[1])
    }

    #[test]
    fn smooth_activations_accurate() {
        let (mut s_worst, mut t_worst, mut u_worst, mut d_worst) = (0f64, 0f64, 0f64, 0f64);
        for z in sweep(-30.0, 30.0, 600_001) {
            let zd = z as f64;
            let s = 1.0 / (1.0 + (-zd).exp());
            let (ys, ds) = at(Sigmoid, z);
            s_worst = s_worst.max(ulps(ys, s));
            let (yt, dt) = at(Tanh, z);
            t_worst = t_worst.max(ulps(yt, zd.tanh()));
            let (yu, du) = at(Silu, z);
            // silu's value: relative error where it is not near 0 (its zero is at z = 0).
            if zd.abs() > 1e-3 {
                u_worst = u_worst.max(ulps(yu, zd * s));
            }
            // Derivatives: absolute error against float64 (they are at most 1.1 in size), per
            // unit of 1 + |z|: silu′ = s·(1 + z·(1 − s)) carries s's rounding times z.
            let dsil = s * (1.0 + zd * (1.0 - s));
            let dt_want = 1.0 - zd.tanh().powi(2);
            for (got, want) in [(ds, s * (1.0 - s)), (dt, dt_want), (du, dsil)] {
                d_worst = d_worst.max((got as f64 - want).abs() / (1.0 + zd.abs()));
            }
        }
        std::println!(
            "sigmoid {s_worst:.2} ulp, tanh {t_worst:.2} ulp, silu {u_worst:.2} ulp, derivatives {d_worst:.2e}·(1 + |z|) abs"
        );
        assert!(s_worst <= 4.0, "sigmoid {s_worst} ulp");
        assert!(t_worst <= 4.0, "tanh {t_worst} ulp");
        assert!(u_worst <= 6.0, "silu {u_worst} ulp");
        assert!(d_worst <= 2.5e-7, "derivatives {d_worst}");
    }

    /// tanh keeps its relative accuracy near 0, subnormals included, and is odd there (the
    /// `1 − 2/(1 + e^2z)` it replaced was off by about an ulp of 1: 19% at 1e-7).
    #[test]
    fn tanh_accurate_near_zero() {
        let mut worst = 0f64;
        for k in 0..=4000 {
            let z = 10f32.powf(-40.0 + k as f32 / 100.0);
            for z in [z, -z] {
                worst = worst.max(ulps(at(Tanh, z).0, (z as f64).tanh()));
            }
        }
        std::println!("tanh near 0: worst {worst:.2} ulp");
        assert!(worst <= 4.0, "tanh near 0: {worst} ulp");
    }

    #[test]
    fn large_inputs_give_limits() {
        for z in [-1e30f32, -1000.0, -100.0, 100.0, 1000.0, 1e30] {
            for (y, d) in [at(Sigmoid, z), at(Tanh, z), at(Silu, z)] {
                assert!(y.is_finite() && d.is_finite(), "z = {z}");
            }
            let pos = z > 0.0;
            assert_eq!(at(Sigmoid, z).0, if pos { 1.0 } else { at(Sigmoid, z).0.min(1e-37) });
            assert_eq!(at(Tanh, z).0, if pos { 1.0 } else { -1.0 });
            if pos {
                assert_eq!(at(Silu, z).0, z);
            } else {
                assert!(at(Silu, z).0.abs() <= 1e-36 * z.abs().max(1.0) || z < -1e20);
            }
        }
        assert!(at(Relu::new(), f32::NAN).0.is_nan() && at(Sigmoid, f32::NAN).0.is_nan());
        // At ±∞, float32 PyTorch's values (x·sigmoid(x), e^x overflowing): sigmoid 0 and 1,
        // tanh ±1, silu(+∞) = +∞, and NaN for −∞·0 (silu(−∞), silu′(−∞)) and ∞·0 (silu′(+∞)).
        let inf = f32::INFINITY;
        assert_eq!((at(Sigmoid, -inf).0, at(Sigmoid, inf).0), (0.0, 1.0));
        assert_eq!((at(Tanh, -inf).0, at(Tanh, inf).0), (-1.0, 1.0));
        assert_eq!((at(Sigmoid, -inf).1, at(Tanh, inf).1), (0.0, 0.0));
        let [(yn, dn), (yp, dp)] = [at(Silu, -inf), at(Silu, inf)];
        assert!(yn.is_nan() && dn.is_nan() && yp == inf && dp.is_nan(), "silu {yn} {dn} {yp} {dp}");
    }

    /// `grad_at(m, shift, dy)` against `grad(m + shift, dy)`, bit for bit, where the sign test
    /// could differ: sums that are exactly 0, a subnormal, or an ulp either side of 0; ±0,
    /// infinities and NaN in either term.
    #[test]
    fn grad_at_is_grad_of_the_sum() {
        let tiny = f32::from_bits(1);
        let mut terms = std::vec![0.0, -0.0, tiny, -tiny, 1.0, -1.0, 3.5, -1e-30, 6.0, -6.0];
        terms.extend([f32::MIN_POSITIVE, -f32::MAX, f32::MAX, f32::INFINITY, -f32::INFINITY]);
        terms.push(f32::NAN);
        let mut pairs = std::vec::Vec::new();
        for &m in &terms {
            for &s in &terms {
                pairs.push((m, s));
            }
        }
        // m = −shift exactly and an ulp or two either side, at several magnitudes.
        for &s in &[1.0f32, 0.3, 1e-38, 7e4, 2.5e-3] {
            for k in -2i32..=2 {
                let m = f32::from_bits((s.to_bits() as i32 + k) as u32);
                pairs.extend([(m, -s), (-m, s)]);
            }
        }
        fn check<A: Activation>(a: A, pairs: &[(f32, f32)]) {
            for &(m, s) in pairs {
                for dy in [1.5f32, -2.0, -0.0, f32::INFINITY, f32::NAN] {
                    let (mut want, mut got) = (0f32, 0f32);
                    let (m1, s1, d1) = (F32x1::splat(m), F32x1::splat(s), F32x1::splat(dy));
                    // SAFETY: want and got are one float each.
                    unsafe {
                        a.grad(m1.add(s1), d1).store(&mut want);
                        a.grad_at(m1, s1, d1).store(&mut got);
                    }
                    let same = want.to_bits() == got.to_bits() || want.is_nan() && got.is_nan();
                    assert!(same, "m {m:e}, shift {s:e}, dy {dy}: {got} for {want}");
                }
            }
        }
        check(Relu::new(), &pairs);
        check(LeakyRelu(0.1), &pairs);
        check(Relu6, &pairs);
    }

    #[test]
    fn kinks_follow_pytorch() {
        assert_eq!(at(Relu::new(), 0.0), (0.0, 0.0));
        assert_eq!(at(Relu::new(), -2.0), (0.0, 0.0));
        assert_eq!(at(Relu::new(), 2.0), (2.0, 1.0));
        assert_eq!(at(Relu6, 0.0).1, 0.0);
        assert_eq!(at(Relu6, 6.0), (6.0, 0.0));
        assert_eq!(at(Relu6, 7.0), (6.0, 0.0));
        assert_eq!(at(Relu6, 3.0), (3.0, 1.0));
        assert_eq!(at(LeakyRelu(0.1), 0.0).1, 0.1);
        assert_eq!(at(LeakyRelu(0.1), -2.0), (-0.2, 0.1));
        assert_eq!(at(LeakyRelu(0.1), 2.0), (2.0, 1.0));
    }
}
