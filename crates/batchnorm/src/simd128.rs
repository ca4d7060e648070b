//! The SIMD128 build: four floats per `v128`. Only compiled with `-C target-feature=+simd128`,
//! so every operation below is a single wasm SIMD instruction (`v128.load`, `f32x4.add`, ...).

use crate::vector::Vector;
use core::arch::wasm32::{
    f32x4_add, f32x4_div, f32x4_extract_lane, f32x4_lt, f32x4_mul, f32x4_ne, f32x4_pmin,
    f32x4_splat, f32x4_sub, i32x4_add, i32x4_eq, i32x4_min, i32x4_shl, i32x4_shr, i32x4_splat,
    i32x4_sub, u32x4_min, v128, v128_bitselect, v128_load, v128_or, v128_store,
};

#[derive(Clone, Copy)]
pub(crate) struct F32x4(v128);

impl Vector for F32x4 {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes; v128_load accepts any alignment.
        F32x4(v128_load(p as *const v128))
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable bytes; v128_store accepts any alignment.
        v128_store(p as *mut v128, self.0)
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        F32x4(f32x4_splat(value))
    }

    #[inline(always)]
    fn add(self, other: Self) -> Self {
        F32x4(f32x4_add(self.0, other.0))
    }

    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        F32x4(f32x4_sub(self.0, other.0))
    }

    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        F32x4(f32x4_mul(self.0, other.0))
    }

    #[inline(always)]
    fn div(self, other: Self) -> Self {
        F32x4(f32x4_div(self.0, other.0))
    }

    #[inline(always)]
    fn pmin(self, other: Self) -> Self {
        F32x4(f32x4_pmin(self.0, other.0))
    }

    #[inline(always)]
    fn lt_select(self, other: Self, then: Self, otherwise: Self) -> Self {
        F32x4(v128_bitselect(then.0, otherwise.0, f32x4_lt(self.0, other.0)))
    }

    // `value & mask` written as an unsigned min (the mask is all ones or all zeros): LLVM 14
    // turns an `and` with a compare's mask into `v128.bitselect`, which V8 compiles to three
    // instructions, and leaves `i32x4.min_u` (one `pminud`) alone. ReLU's backward passes ran
    // 1.2× faster (cache-resident tensors).
    #[inline(always)]
    fn lt_keep(self, other: Self, value: Self) -> Self {
        F32x4(u32x4_min(value.0, f32x4_lt(self.0, other.0)))
    }

    // Integer minimums on the bits, one instruction each in V8, where compares with selects
    // became `f32x4.max`/`f32x4.min` (LLVM 14 reads them as min/max against a constant),
    // eight instructions each in V8: the fused sigmoid passes (an `exp` and a division a
    // value) ran 1.15–1.2× faster on tensors in the cache. As u32, a negative float's bits
    // exceed every positive float's and grow with its magnitude, so `min_u` with a negative
    // `lo` clamps from below; as i32, the positive floats are the positive integers in order
    // and the negative ones negative, so `min_s` with a positive `hi` clamps from above. Each
    // moves one sign of NaN too (to `lo` or `hi`): NaN lanes are then set to all ones, a NaN.
    #[inline(always)]
    fn clamp(self, lo: Self, hi: Self) -> Self {
        let clamped = i32x4_min(u32x4_min(self.0, lo.0), hi.0);
        F32x4(v128_or(clamped, f32x4_ne(self.0, self.0)))
    }

    // The kept lanes' mask is `self < 0` inverted, as `mask == zero` (`zero`'s bits are 0):
    // V8 compiles `v128.not` to two instructions, `i32x4.eq` to one. A constant zero would not
    // do: LLVM turns `mask == 0` back into `not`. Then an unsigned min, as in `lt_keep`
    // (`pmax` and `and` became selects). The fused ReLU forward ran 1.02–1.04× faster on
    // tensors in the cache.
    #[inline(always)]
    fn relu(self, zero: Self) -> Self {
        F32x4(u32x4_min(self.0, i32x4_eq(f32x4_lt(self.0, zero.0), zero.0)))
    }

    #[inline(always)]
    fn pow2_rounded(self) -> Self {
        F32x4(i32x4_add(i32x4_shl(self.0, 23), i32x4_splat(0x3f80_0000)))
    }

    #[inline(always)]
    fn adjacent(self) -> [Self; 2] {
        // Up in value is +1 on the bits of a positive float and −1 on a negative one's.
        let up = v128_or(i32x4_shr(self.0, 31), i32x4_splat(1));
        [F32x4(i32x4_sub(self.0, up)), F32x4(i32x4_add(self.0, up))]
    }

    #[inline(always)]
    fn sum_lanes(self) -> f32 {
        let v = self.0;
        (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
            + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
    }
}
