//! The scalar build: one float per "register". With this, the kernels (`kernels/`) read as the
//! plain reference loops that the SIMD build must match.

use crate::vector::Vector;

#[derive(Clone, Copy)]
pub(crate) struct F32x1(f32);

impl Vector for F32x1 {
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x1(*p)
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self.0;
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        F32x1(value)
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        F32x1(self.0 + other.0)
    }

    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        F32x1(self.0 - other.0)
    }

    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        F32x1(self.0 * other.0)
    }

    #[inline(always)]
    fn div(self, other: Self) -> Self {
        F32x1(self.0 / other.0)
    }

    #[inline(always)]
    fn pmin(self, other: Self) -> Self {
        if other.0 < self.0 {
            other
        } else {
            self
        }
    }

    #[inline(always)]
    fn clamp(self, lo: Self, hi: Self) -> Self {
        self.lt_select(lo, lo, hi.lt_select(self, hi, self))
    }

    #[inline(always)]
    fn lt_select(self, other: Self, then: Self, otherwise: Self) -> Self {
        if self.0 < other.0 {
            then
        } else {
            otherwise
        }
    }

    #[inline(always)]
    fn lt_keep(self, other: Self, value: Self) -> Self {
        if self.0 < other.0 {
            value
        } else {
            F32x1(0.0)
        }
    }

    #[inline(always)]
    fn relu(self, zero: Self) -> Self {
        // An unsigned `min` with the mask, as the SIMD lanes do: written as a select (or an
        // `and`), LLVM 14 makes it `f32.max`, which turns relu(−0) into +0 where the SIMD lanes
        // and the JS back end keep −0. The price, in the scalar build only: its fused ReLU
        // forward ran 1.17–1.23× the time of the `f32.max` one on a 1 MB tensor.
        let keep = u32::from(self.0 < zero.0).wrapping_sub(1);
        F32x1(f32::from_bits(core::cmp::min(self.0.to_bits(), keep)))
    }

    #[inline(always)]
    fn pow2_rounded(self) -> Self {
        F32x1(f32::from_bits((self.0.to_bits() << 23).wrapping_add(0x3f80_0000)))
    }

    #[inline(always)]
    fn adjacent(self) -> [Self; 2] {
        let bits = self.0.to_bits() as i32;
        let up = (bits >> 31) | 1;
        let step = |b: i32| F32x1(f32::from_bits(b as u32));
        [step(bits.wrapping_sub(up)), step(bits.wrapping_add(up))]
    }

    #[inline(always)]
    fn sum_lanes(self) -> f32 {
        self.0
    }
}
