//! The few vector operations the kernels need. The algorithm in `kernels` is written once
//! against this trait; `scalar.rs` and `simd128.rs` are thin implementations of it.

/// A register of `LANES` single-precision floats.
pub(crate) trait Vector: Copy {
    /// Floats per register; every kernel's tail handling is driven by it.
    const LANES: usize;

    /// Loads `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` floats; it need not be aligned.
    unsafe fn load(p: *const f32) -> Self;

    /// Stores `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` floats; it need not be aligned.
    unsafe fn store(self, p: *mut f32);

    fn splat(value: f32) -> Self;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    fn div(self, other: Self) -> Self;

    /// Per lane, `other` where `other < self`, else `self` (wasm's `f32x4.pmin`).
    fn pmin(self, other: Self) -> Self;

    /// Per lane, `then` where `self < other` and `otherwise` elsewhere (NaN compares false).
    fn lt_select(self, other: Self, then: Self, otherwise: Self) -> Self;

    /// Per lane, `value` where `self < other` and +0 elsewhere (a compare and one bitwise op).
    fn lt_keep(self, other: Self, value: Self) -> Self;

    /// `lo` where `self < lo`, `hi` where `hi < self`, `self` elsewhere, NaN kept NaN (its bits
    /// may change), for `lo` negative and `hi` positive (the SIMD build orders the lanes' bits
    /// as integers, which holds a float's order only where the sign is known).
    fn clamp(self, lo: Self, hi: Self) -> Self;

    /// ReLU as wasm's `f32x4.pmax(self, 0)` computes it: +0 where `self < 0`, else `self`
    /// (−0 and NaN kept). `zero` must be +0.0 in every lane; one the compiler cannot see is
    /// zero ([`Relu`](crate::activation::Relu)'s) saves the SIMD build an instruction (see
    /// `simd128.rs`).
    fn relu(self, zero: Self) -> Self;

    /// `2^n` per lane, where the lane holds `n + 1.5·2^23` exactly for an integer `n` in
    /// [−126, 128] (what adding `1.5·2^23` to a float rounds it to): the low bits of such a
    /// float are `n`, and shifting them into the exponent field makes `2^n` (+∞ for 128).
    fn pow2_rounded(self) -> Self;

    /// The floats one step of the bits below and above each lane: `[next down, next up]` for
    /// every float but these, where a step gives NaN: below +0, above −0, beyond ±∞ (−0 and
    /// +0, equal in every compare, are not each other's neighbours). A NaN lane gives bits
    /// that may not be NaN.
    fn adjacent(self) -> [Self; 2];

    /// The sum of the lanes, always added in the same order so results are deterministic.
    fn sum_lanes(self) -> f32;
}
