//! `exp` on the SIMD build's clamp of its argument (integer minimums on the bits, emulated by
//! [`Emu4`]) against the one-lane build's compares.

extern crate std;
use super::tests::Emu4;
use crate::scalar::F32x1;
use crate::vector::Vector;
use std::vec::Vec;

/// `exp` with the SIMD build's clamp (integer minimums on the bits, emulated by [`Emu4`])
/// gives the one-lane build's bits, and NaN for NaN, over the floats that matter to it: each
/// side of both clamp bounds, ±0, ±∞, NaNs of either sign and payload, and 10⁶ bit patterns
/// from every part of the range (77 + 1 000 003, whole vectors).
#[test]
fn exp_clamp_on_the_bits_is_the_compare() {
    let mut bits: Vec<u32> = Vec::new();
    for v in [-87.33f32, 89.0, 0.0, f32::INFINITY, f32::MAX, f32::MIN_POSITIVE] {
        for k in 0..=2 {
            for b in [v.to_bits().wrapping_sub(k), v.to_bits() + k] {
                bits.extend([b, b | 0x8000_0000]);
            }
        }
    }
    bits.extend([0x7fc0_0000, 0xffc0_0000, 0x7f80_0001, 0xffff_ffff, 0x8000_0001]);
    let mut state = 0x2545_f491u32;
    bits.extend((0..1_000_003).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    }));
    let (mut out, mut one) = ([0f32; 4], [0f32; 1]);
    for quad in bits.chunks_exact(4) {
        let x: [f32; 4] = core::array::from_fn(|k| f32::from_bits(quad[k]));
        // SAFETY: x and out hold 4 floats, one holds 1.
        unsafe { crate::exp::exp(Emu4::load(x.as_ptr())).store(out.as_mut_ptr()) };
        for (k, &v) in x.iter().enumerate() {
            // SAFETY: as above.
            unsafe { crate::exp::exp(F32x1::splat(v)).store(one.as_mut_ptr()) };
            let same = out[k].to_bits() == one[0].to_bits() || (out[k].is_nan() && v.is_nan());
            assert!(same, "exp({v:e}) [bits {:#x}]: {} against {}", quad[k], out[k], one[0]);
        }
    }
}
