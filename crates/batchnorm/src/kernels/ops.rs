//! The element operations of the passes: what a [`Reduce`] or a [`Map`] does to one vector
//! of data with its vectors of parameters. The loops in `reduce` and `maps` are written once
//! over these traits, so a pass is a type parameter of its loop.

use crate::activation::{Activation, SignActivation};
use crate::vector::Vector;

/// A reduction of one or two inputs into two sums, given `P` per-position parameters `p`.
/// Implementations are values (an activation's slope travels in one), copied into the loops.
pub(crate) trait Reduce<const P: usize>: core::marker::Copy {
    /// Whether the loops store what `step` returns, at the position of its inputs, in an
    /// output of their own ([`Storing`]).
    const STORES: bool = false;
    /// Adds one vector's terms to `acc`; returns the value a storing loop writes (the
    /// gradient sums' `g`; the loops drop it otherwise).
    fn step<W: Vector>(self, a: W, b: W, p: [W; P], acc: &mut [W; 2]) -> W;
}

/// `R`, its loops also writing what its steps return: the backward's `g = dy·act′(z)`, so
/// that the second backward pass reads `g` instead of evaluating `act′` again (an `exp` a
/// value for sigmoid, tanh and silu).
#[derive(Clone, Copy)]
pub(crate) struct Storing<R>(pub R);
impl<R: Reduce<P>, const P: usize> Reduce<P> for Storing<R> {
    const STORES: bool = true;
    #[inline(always)]
    fn step<W: Vector>(self, a: W, b: W, p: [W; P], acc: &mut [W; 2]) -> W {
        self.0.step(a, b, p, acc)
    }
}

/// `Σa` (the second sum is unused).
#[derive(Clone, Copy, Default)]
pub(super) struct Sum;
impl Reduce<1> for Sum {
    #[inline(always)]
    fn step<W: Vector>(self, a: W, _: W, _: [W; 1], acc: &mut [W; 2]) -> W {
        acc[0] = acc[0].add(a);
        a
    }
}

/// `Σ(a − p)` and `Σ(a − p)²`.
#[derive(Clone, Copy, Default)]
pub(super) struct ShiftedSums;
impl Reduce<1> for ShiftedSums {
    #[inline(always)]
    fn step<W: Vector>(self, a: W, _: W, p: [W; 1], acc: &mut [W; 2]) -> W {
        let d = a.sub(p[0]);
        acc[0] = acc[0].add(d);
        acc[1] = acc[1].add(d.mul(d));
        d
    }
}

/// With `a = x`, `b = dy`, `p = mean`: `Σdy` and `Σdy·(x − mean)`.
#[derive(Clone, Copy, Default)]
pub(super) struct GradSums;
impl Reduce<1> for GradSums {
    #[inline(always)]
    fn step<W: Vector>(self, x: W, dy: W, mean: [W; 1], acc: &mut [W; 2]) -> W {
        add_grad_sums(acc, dy, x.sub(mean[0]))
    }
}

/// With `a = x`, `b = dy`, `p = [mean, scale, shift]`: `Σg` and `Σg·(x − mean)` for
/// `g = dy·act′(z)`, the pre-activation `z = (x − mean)·scale + shift` recomputed here (no mask
/// stored by the forward, no extra pass).
#[derive(Clone, Copy)]
pub(crate) struct GradSumsAct<A>(pub A);
impl<A: Activation> Reduce<3> for GradSumsAct<A> {
    #[inline(always)]
    fn step<W: Vector>(self, x: W, dy: W, p: [W; 3], acc: &mut [W; 2]) -> W {
        let xc = x.sub(p[0]);
        add_grad_sums(acc, self.0.grad_at(xc.mul(p[1]), p[2], dy), xc)
    }
}

/// [`GradSumsAct`] for an activation that depends on the sign of `z` only, with
/// `p = [mean, θ]`: `z > 0` tested as `θ < x − mean` (θ from `crate::threshold`, exact), one
/// multiply and one parameter less per vector.
#[derive(Clone, Copy)]
pub(crate) struct GradSumsAbove<A>(pub A);
impl<A: SignActivation> Reduce<2> for GradSumsAbove<A> {
    #[inline(always)]
    fn step<W: Vector>(self, x: W, dy: W, p: [W; 2], acc: &mut [W; 2]) -> W {
        let xc = x.sub(p[0]);
        add_grad_sums(acc, self.0.grad_above(xc, p[1], dy), xc)
    }
}

/// The backward's sums of one vector: `Σg += g`, `Σg·xc += g·xc`; returns `g`.
#[inline(always)]
fn add_grad_sums<W: Vector>(acc: &mut [W; 2], g: W, xc: W) -> W {
    acc[0] = acc[0].add(g);
    acc[1] = acc[1].add(g.mul(xc));
    g
}

/// The backward's map of one vector: `dx = k_dy·g + k_xc·xc + k_const`, `k = [k_dy, k_xc, k_const]`.
#[inline(always)]
fn grad_input<W: Vector>(g: W, xc: W, k: [W; 3]) -> W {
    g.mul(k[0]).add(xc.mul(k[1])).add(k[2])
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
        grad_input(dy, x.sub(p[0]), [p[1], p[2], p[3]])
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
        grad_input(self.0.grad_at(xc.mul(p[4]), p[5], dy), xc, [p[1], p[2], p[3]])
    }
}

/// [`GradInputAct`] for an activation that depends on the sign of `z` only, with
/// `p = [mean, k_dy, k_xc, k_const, θ]` (see [`GradSumsAbove`]).
#[derive(Clone, Copy)]
pub(crate) struct GradInputAbove<A>(pub A);
impl<A: SignActivation> Map<5> for GradInputAbove<A> {
    const UNROLL_ROWS: bool = false;
    const STREAM_ROWS: usize = 1;
    #[inline(always)]
    fn apply<W: Vector>(self, x: W, dy: W, p: [W; 5]) -> W {
        let xc = x.sub(p[0]);
        grad_input(self.0.grad_above(xc, p[4], dy), xc, [p[1], p[2], p[3]])
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
