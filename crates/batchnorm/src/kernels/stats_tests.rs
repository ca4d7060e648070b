//! [`moments`] where a block's sampled shift lies far from its values (outliers exactly where
//! the sample looks, or a later block far from the mean so far): each path must notice and sum
//! the block again around its mean. A negative control shows that keeping such a shift loses
//! the accuracy the tests ask for.

extern crate std;
use super::stats::{spread, SHIFT_SAMPLES};
use super::tests::{data, Emu4};
use super::*;
use crate::scalar::F32x1;
use crate::vector::Vector;
use std::vec;
use std::vec::Vec;

/// Values around `centre` with a spread of about 0.01 (`tests.rs`'s data, narrowed).
fn near(n: usize, centre: f32, seed: u32) -> Vec<f32> {
    data(n, seed, 0.0).iter().map(|v| centre + v * 0.01).collect()
}

/// Float64 mean and biased variance of each channel.
fn reference(x: &[f32], dims: Dims) -> Vec<(f64, f64)> {
    let at = |i: usize| i / dims.inner % dims.channels;
    let count = (dims.outer * dims.inner) as f64;
    let mut mean = vec![0f64; dims.channels];
    for (i, &v) in x.iter().enumerate() {
        mean[at(i)] += v as f64 / count;
    }
    let mut var = vec![0f64; dims.channels];
    for (i, &v) in x.iter().enumerate() {
        var[at(i)] += (v as f64 - mean[at(i)]).powi(2) / count;
    }
    mean.into_iter().zip(var).collect()
}

/// [`moments`] of `x`: each channel's mean and biased variance.
fn moments_of<V: Vector>(x: &[f32], dims: Dims) -> (Vec<f32>, Vec<f32>) {
    let c_n = dims.channels;
    let mut stats = vec![Moments::default(); c_n];
    let mut rows = vec![f32::NAN; Workspace::row_floats(c_n).unwrap()];
    let mut thresholds = vec![f32::NAN; c_n];
    let mut ws = Workspace { moments: &mut stats, rows: &mut rows, thresholds: &mut thresholds };
    let (mut m, mut v) = (vec![0f32; c_n], vec![0f32; c_n]);
    moments::<V>(x, dims, &mut ws, &mut m, &mut v);
    (m, v)
}

/// Means within 1e-6 and variances within `tol`, relative.
fn assert_moments<V: Vector>(x: &[f32], dims: Dims, tol: f64, what: &str) {
    let (m, v) = moments_of::<V>(x, dims);
    for (c, &(mean, var)) in reference(x, dims).iter().enumerate() {
        assert!((m[c] as f64 - mean).abs() <= 1e-6 * mean.abs(), "{what}: mean {c}");
        assert!((v[c] as f64 - var).abs() <= tol * var, "{what}: var {c} {} {var}", v[c]);
    }
}

/// Sets the values of channel `c` that a block's shift samples (`SHIFT_SAMPLES` spread over
/// `n` values, the `t`-th at `index(t)`) to `value`.
fn plant(x: &mut [f32], n: usize, index: impl Fn(usize) -> usize, value: f32) {
    for i in 0..SHIFT_SAMPLES {
        x[index(spread(i, n, SHIFT_SAMPLES))] = value;
    }
}

fn far_samples<V: Vector>() {
    // Outliers where the sample looks, 8 among hundreds or thousands of values, so that a
    // kept shift would cost several bits: the error of Σd² grows n/8 times (see the negative
    // control). The other paths are held to `check`'s 1e-5, which a kept shift misses there
    // (2·10⁻⁴ and 3·10⁻⁴ measured).
    //
    // Rows of 128 channels, one super-row a row, one block: outliers in two channels or in
    // every channel (the block is swept again either way). With 256 values a channel a
    // kept shift costs 5·10⁻⁶ (measured), within 1e-5, so these are held to 2·10⁻⁶: every
    // channel here is within 5·10⁻⁷ when summed around its mean.
    let dims = Dims { outer: 256, channels: 128, inner: 1 };
    for channels in [&[5, 77][..], &(0..128).collect::<Vec<_>>()[..]] {
        let mut x = near(dims.len(), 1000.0, 3);
        for &c in channels {
            plant(&mut x, 256, |row| row * 128 + c, 1000.5);
        }
        assert_moments::<V>(&x, dims, 2e-6, "rows");
    }
    // A band of whole planes (runs of 32): the sample of channel 1 walks its runs.
    let dims = Dims { outer: BLOCK / 32, channels: 3, inner: 32 };
    let mut x = near(dims.len(), -500.0, 5);
    plant(&mut x, BLOCK, |t| t / 32 * 96 + 32 + t % 32, -499.5);
    assert_moments::<V>(&x, dims, 1e-5, "band");
    // Runs longer than a block: the first block of channel 2.
    let dims = Dims { outer: 2, channels: 3, inner: 5000 };
    let mut x = near(dims.len(), 2000.0, 7);
    plant(&mut x, BLOCK, |t| 2 * 5000 + t, 2001.0);
    assert_moments::<V>(&x, dims, 1e-5, "long runs");
    // A later row block far from the mean so far (data sorted by value): 3000 rows of 64
    // channels are two blocks of rows.
    let dims = Dims { outer: 3000, channels: 64, inner: 1 };
    let mut x = near(dims.len(), 100.0, 9);
    for v in &mut x[2048 * 64..] {
        *v += 1.0;
    }
    assert_moments::<V>(&x, dims, 1e-5, "later block");
}

#[test]
fn far_shifts_are_summed_again() {
    far_samples::<F32x1>();
    far_samples::<Emu4>();
}

/// Negative control: the long-runs block above, summed in float32 around its sampled shift
/// and kept, misses the variance by more than the 1e-5 the kernels are held to.
#[test]
fn a_far_shift_kept_would_miss() {
    let mut x = near(BLOCK, 2000.0, 7);
    plant(&mut x, BLOCK, |t| t, 2001.0);
    let shift = (0..SHIFT_SAMPLES).map(|i| x[spread(i, BLOCK, SHIFT_SAMPLES)]).sum::<f32>()
        / SHIFT_SAMPLES as f32;
    let (mut d, mut d2) = (0f32, 0f32);
    for &v in &x {
        d += v - shift;
        d2 += (v - shift) * (v - shift);
    }
    let n = BLOCK as f64;
    let kept = (d2 as f64 - (d as f64).powi(2) / n) / n;
    let dims = Dims { outer: 1, channels: 1, inner: BLOCK };
    let (_, var) = reference(&x, dims)[0];
    assert!((kept - var).abs() > 1e-5 * var, "kept {kept} var {var}");
}

/// Values so large that a float32 sum of a few overflows, on every path (rows, with the whole
/// block summed or sampled; a band of planes; runs longer than a block): a constant channel
/// keeps its value as its mean and a variance of 0 (a shift from an overflowed sum made both
/// NaN), and channels spread by 10⁻⁵ about such a value get their mean, within 1e-6, and the
/// variance float32 rounds theirs to, +∞. (Deviations so wide that their sum overflows too,
/// beyond about f32::MAX over a block's count, still give NaN.)
fn huge_values<V: Vector>() {
    let shapes = [
        (Dims { outer: 64, channels: 2, inner: 1 }, "rows, whole block"),
        (Dims { outer: 3000, channels: 5, inner: 1 }, "rows, sampled"),
        (Dims { outer: 40, channels: 3, inner: 32 }, "band"),
        (Dims { outer: 2, channels: 2, inner: 5000 }, "long runs"),
    ];
    for (dims, path) in shapes {
        for v in [6e36f32, 1e38, -3e38, f32::MAX] {
            let (m, var) = moments_of::<V>(&vec![v; dims.len()], dims);
            for c in 0..dims.channels {
                assert_eq!((m[c], var[c]), (v, 0.0), "{path}: constant {v}, channel {c}");
            }
        }
        let x: Vec<f32> =
            data(dims.len(), 11, 0.0).iter().map(|d| 1e38 * (1.0 + 1e-5 * d)).collect();
        let (m, var) = moments_of::<V>(&x, dims);
        for (c, &(mean, _)) in reference(&x, dims).iter().enumerate() {
            assert!((m[c] as f64 - mean).abs() <= 1e-6 * mean.abs(), "{path}: mean {c} {}", m[c]);
            assert_eq!(var[c], f32::INFINITY, "{path}: variance {c}");
        }
    }
}

#[test]
fn huge_values_keep_their_mean() {
    huge_values::<F32x1>();
    huge_values::<Emu4>();
}
