//! The few vector operations the kernels need. The algorithm in `kernels.rs` is written once
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

    /// The sum of the lanes, always added in the same order so results are deterministic.
    fn sum_lanes(self) -> f32;
}
