//! The exports' own host tests: the inference cache's refresh, the workspace's size, and the
//! gradient exports' choice of kernels.

extern crate std;
use std::vec;
use std::vec::Vec;

/// The gradient exports of relu (1) and leakyRelu (3) against the multiplying kernels
/// called directly, bit for bit: through the thresholds where every scale is positive and
/// a channel has `THRESHOLDS_FROM` values or more (and only there: `bn_grad_sums` returns 1
/// and the workspace's thresholds, NaN before, are then all written), through the multiply
/// with a negative scale or shorter channels. `bn_grad_input` gives the same bits whether it
/// takes the thresholds `bn_grad_sums` left (`thresholds_ready`) or finds them again, and
/// takes them indeed: with +∞ written over them, every lane is on the side z ≤ 0 (negative
/// control). Given a `g_out`, `bn_grad_sums` writes `g` there where it does not use
/// thresholds, and `bn_grad_input` without the activation then gives `dx`'s bits from it.
#[test]
fn sign_thresholds_are_used_where_they_apply() {
    use super::*;
    let channels = 3;
    let wave = |n: usize, k: f32| -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + k).sin() * 2.0).collect()
    };
    let from = threshold::THRESHOLDS_FROM;
    for (values, signs, used) in [
        (from, [1.0, 1.0, 1.0], true),
        (from + 40, [1.0, -1.0, 1.0], false),
        (from - 4, [1.0, 1.0, 1.0], false),
    ] {
        let inner = values / 4;
        let dims = Dims { outer: 4, channels, inner };
        let n = dims.len();
        let (x, dy) = (wave(n, 0.0), wave(n, 1.0));
        let mean = [0.1f32, -0.2, 0.0];
        let scale: Vec<f32> = signs.iter().zip([0.7f32, 0.3, 1.9]).map(|(s, v)| s * v).collect();
        let shift = [0.0f32, 0.4, -1.1];
        let (k_dy, k_xc, k_const) =
            ([0.5f32, 1.5, 0.8], [0.2f32, -0.1, 0.05], [0.01f32, 0.0, -0.3]);
        for act in [1u32, 3] {
            let bytes = bn_workspace_bytes(channels);
            let mut ws = vec![u64::MAX; (bytes + 7) / 8];
            let moments = channels * core::mem::size_of::<Moments>();
            let at = moments + Workspace::row_floats(channels).unwrap() * 4;
            let ws_ptr = ws.as_mut_ptr() as *mut u8;
            let (mut s0, mut s1) = (vec![0f32; 3], vec![0f32; 3]);
            // SAFETY: every pointer holds what the export reads or writes.
            let ready = unsafe {
                bn_grad_sums(
                    x.as_ptr(),
                    dy.as_ptr(),
                    4,
                    channels,
                    inner,
                    mean.as_ptr(),
                    ws_ptr,
                    s0.as_mut_ptr(),
                    s1.as_mut_ptr(),
                    act,
                    0.2,
                    scale.as_ptr(),
                    shift.as_ptr(),
                    core::ptr::null_mut(),
                )
            };
            // SAFETY: the workspace holds the thresholds at `at`.
            let thresholds = unsafe { from_raw_parts(ws_ptr.add(at) as *const f32, channels) };
            let thresholds = thresholds.to_vec();
            assert_eq!(ready == 1, used, "act {act}, inner {inner}, {signs:?}");
            assert_eq!(
                thresholds.iter().all(|t| !t.is_nan()),
                used,
                "act {act}, inner {inner}, {signs:?}"
            );
            let grad_input = |thresholds_ready: u32| {
                let mut dx = vec![0f32; n];
                // SAFETY: every pointer holds what the export reads or writes.
                unsafe {
                    bn_grad_input(
                        x.as_ptr(),
                        dy.as_ptr(),
                        dx.as_mut_ptr(),
                        4,
                        channels,
                        inner,
                        mean.as_ptr(),
                        k_dy.as_ptr(),
                        k_xc.as_ptr(),
                        k_const.as_ptr(),
                        ws_ptr,
                        act,
                        0.2,
                        scale.as_ptr(),
                        shift.as_ptr(),
                        thresholds_ready,
                    )
                };
                dx
            };
            // Taken first: finding them again rewrites them.
            let dx_taken = grad_input(ready);
            let dx = grad_input(0);
            let (mut w0, mut w1, mut want) = (vec![0f32; 3], vec![0f32; 3], vec![0f32; n]);
            let mut moments = vec![Moments::default(); channels];
            let mut rows = vec![0f32; Workspace::row_floats(channels).unwrap()];
            let mut own = Workspace { moments: &mut moments, rows: &mut rows, thresholds: &mut [] };
            let p3 = [&mean[..], &scale[..], &shift[..]];
            let p6 = [&mean[..], &k_dy[..], &k_xc[..], &k_const[..], &scale[..], &shift[..]];
            with_activation!(act, 0.2, |a| {
                let (r, none) = (GradSumsAct(a), core::ptr::null_mut());
                // SAFETY: x, dy and want hold n floats; GradSumsAct does not store.
                unsafe {
                    let _ = kernels::reduce_grads_with::<Lanes, _, 3>(
                        r, &x, &dy, dims, p3, &mut own, &mut w0, &mut w1, none,
                    );
                    kernels::map::<Lanes, _, 6>(
                        GradInputAct(a),
                        x.as_ptr(),
                        dy.as_ptr(),
                        want.as_mut_ptr(),
                        dims,
                        p6,
                        &mut own,
                    );
                }
            });
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&s0), bits(&w0), "Σg act {act}, inner {inner}, {signs:?}");
            assert_eq!(bits(&s1), bits(&w1), "Σg·xc act {act}, inner {inner}, {signs:?}");
            assert_eq!(bits(&dx), bits(&want), "dx act {act}, inner {inner}, {signs:?}");
            assert_eq!(bits(&dx_taken), bits(&want), "dx taken act {act}, {signs:?}");
            // Given somewhere to put g, the export writes it where it does not test thresholds
            // (returning 2), and dx from g without the activation is dx's bits.
            let mut g = vec![f32::NAN; n];
            let (mut t0, mut t1) = (vec![0f32; 3], vec![0f32; 3]);
            let (xp, dyp, gp, m) = (x.as_ptr(), dy.as_ptr(), g.as_mut_ptr(), mean.as_ptr());
            let (sp, hp) = (scale.as_ptr(), shift.as_ptr());
            let (t0p, t1p) = (t0.as_mut_ptr(), t1.as_mut_ptr());
            // SAFETY: every pointer holds what the export reads or writes; g is apart.
            let left = unsafe {
                bn_grad_sums(xp, dyp, 4, channels, inner, m, ws_ptr, t0p, t1p, act, 0.2, sp, hp, gp)
            };
            assert_eq!(left, if used { 1 } else { 2 }, "act {act}, inner {inner}, {signs:?}");
            assert_eq!(bits(&t0), bits(&w0), "stored Σg act {act}, inner {inner}, {signs:?}");
            assert_eq!(bits(&t1), bits(&w1), "stored Σg·xc act {act}, inner {inner}");
            assert_eq!(g.iter().all(|v| v.is_nan()), used, "g act {act}, inner {inner}");
            if !used {
                let mut dx_g = vec![0f32; n];
                let (k0, k1, k2) = (k_dy.as_ptr(), k_xc.as_ptr(), k_const.as_ptr());
                let (gp, dxp) = (g.as_ptr(), dx_g.as_mut_ptr());
                // SAFETY: as above, with no activation (scale and shift not read).
                unsafe {
                    bn_grad_input(
                        xp, gp, dxp, 4, channels, inner, m, k0, k1, k2, ws_ptr, 0, 0.0, sp, hp, 0,
                    )
                };
                assert_eq!(bits(&dx_g), bits(&want), "dx from g act {act}, inner {inner}");
            }
            if used {
                // SAFETY: as above; nothing else refers to the thresholds now.
                unsafe { from_raw_parts_mut(ws_ptr.add(at) as *mut f32, channels) }
                    .fill(f32::INFINITY);
                assert_ne!(bits(&grad_input(1)), bits(&want), "act {act}: thresholds not taken");
            }
        }
    }
}

#[test]
fn refresh_compares_bits_and_copies() {
    use super::bn_refresh;
    let nan_a = f32::from_bits(0x7fc0_0001).to_bits();
    let src = [1u32, 0x8000_0000, nan_a, 7, 9];
    let mut snapshot = [1u32, 0, nan_a, 7, 9];
    // -0 against +0 differs in bits, and is copied.
    assert_eq!(unsafe { bn_refresh(src.as_ptr(), snapshot.as_mut_ptr(), 5) }, 0);
    assert_eq!(snapshot, src);
    assert_eq!(unsafe { bn_refresh(src.as_ptr(), snapshot.as_mut_ptr(), 5) }, 1);
    assert_eq!(unsafe { bn_refresh(src.as_ptr(), snapshot.as_mut_ptr(), 0) }, 1);
}

#[test]
fn workspace_bytes_saturate() {
    use super::bn_workspace_bytes as bytes;
    // Float64 moments (24 bytes), 6 scratch rows of 16 floats per channel (64 at least)
    // and 16 more, and a threshold.
    let per_channel = 24 + 6 * 16 * 4 + 4;
    assert_eq!(bytes(1), 24 + 6 * (64 + 16) * 4 + 4);
    assert_eq!(bytes(1000), 1000 * per_channel + 384);
    let largest = (usize::MAX - 384) / per_channel;
    assert_eq!(bytes(largest), largest * per_channel + 384);
    assert_eq!(bytes(largest + 1), usize::MAX);
    assert_eq!(bytes(usize::MAX / 16 + 1), usize::MAX);
    assert_eq!(bytes(usize::MAX), usize::MAX);
}

/// `bn_writes_g`: sigmoid, tanh and silu write `g` at any size; relu, relu6 and leakyRelu
/// only on tensors in the cache (2^18 floats), and relu and leakyRelu only where no
/// thresholds apply (a negative scale here). `bn_grad_sums` returns 2 exactly there, and
/// `dx` from that `g` without the activation is `dx`'s bits with it; elsewhere `g_out` is
/// left alone.
#[test]
fn g_is_written_where_it_pays() {
    use super::*;
    assert_eq!(bn_writes_g(0, 8), 0);
    for (inner, cached) in [(1usize << 16, true), ((1 << 16) + 1, false)] {
        let dims = Dims { outer: 4, channels: 1, inner };
        let n = dims.len();
        let wave =
            |k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * 0.37 + k).sin() * 2.0).collect() };
        let (x, dy) = (wave(0.0), wave(1.0));
        let (mean, shift, k) = ([0.25f32], [-0.1f32], [0.5f32, 0.2, 0.01]);
        for act in 1u32..=6 {
            let exp_based = act >= 4;
            assert_eq!(bn_writes_g(act, n) == 1, exp_based || cached, "act {act}, {n} floats");
            for scale in [[2f32], [-2f32]] {
                let thresholds = (act == 1 || act == 3) && scale[0] > 0.0;
                let written = !thresholds && (exp_based || cached);
                let mut ws = vec![0u64; (bn_workspace_bytes(1) + 7) / 8];
                let w = ws.as_mut_ptr() as *mut u8;
                let (mut s0, mut s1, mut g) = ([0f32], [0f32], vec![f32::NAN; n]);
                let (m, sp, hp) = (mean.as_ptr(), scale.as_ptr(), shift.as_ptr());
                let (xp, dyp, gp) = (x.as_ptr(), dy.as_ptr(), g.as_mut_ptr());
                // SAFETY: every pointer holds what the export reads or writes; g is apart.
                let left = unsafe {
                    let (p0, p1) = (s0.as_mut_ptr(), s1.as_mut_ptr());
                    bn_grad_sums(xp, dyp, 4, 1, inner, m, w, p0, p1, act, 0.2, sp, hp, gp)
                };
                let want = if thresholds {
                    1
                } else if written {
                    2
                } else {
                    0
                };
                assert_eq!(left, want, "act {act}, scale {scale:?}, {n} floats");
                assert_eq!(g.iter().all(|v| v.is_nan()), !written, "act {act}, {scale:?}, {n}");
                if written {
                    let (mut with_act, mut from_g) = (vec![0f32; n], vec![0f32; n]);
                    let (k0, k1, k2) =
                        (&k[0] as *const f32, &k[1] as *const f32, &k[2] as *const f32);
                    // SAFETY: as above.
                    unsafe {
                        let (wp, fp) = (with_act.as_mut_ptr(), from_g.as_mut_ptr());
                        bn_grad_input(
                            xp, dyp, wp, 4, 1, inner, m, k0, k1, k2, w, act, 0.2, sp, hp, 0,
                        );
                        bn_grad_input(
                            xp,
                            g.as_ptr(),
                            fp,
                            4,
                            1,
                            inner,
                            m,
                            k0,
                            k1,
                            k2,
                            w,
                            0,
                            0.0,
                            sp,
                            hp,
                            0,
                        );
                    }
                    let same =
                        with_act.iter().zip(&from_g).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "dx from g, act {act}, scale {scale:?}, {n} floats");
                }
            }
        }
    }
}
