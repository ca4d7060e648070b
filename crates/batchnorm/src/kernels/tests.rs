//! The kernels against plain float64 loops, on the host, for every path: runs of 1 to 40
//! floats, channel counts that do and do not divide the vector width, row counts that leave
//! rows after the last whole super-row, and tensors past the cache and block sizes. Besides
//! the one-lane build, a four-lane vector emulated in scalar code exercises the super-rows
//! and vector tails of the SIMD build.

extern crate std;
use super::*;
use crate::activation::Activation;
use crate::scalar::F32x1;
use crate::vector::Vector;
use std::vec;
use std::vec::Vec;

#[derive(Clone, Copy)]
pub(super) struct Emu4([f32; 4]);

impl Vector for Emu4 {
    const LANES: usize = 4;
    unsafe fn load(p: *const f32) -> Self {
        Emu4(core::array::from_fn(|k| *p.add(k)))
    }
    unsafe fn store(self, p: *mut f32) {
        for (k, v) in self.0.iter().enumerate() {
            *p.add(k) = *v;
        }
    }
    fn splat(value: f32) -> Self {
        Emu4([value; 4])
    }
    fn add(self, o: Self) -> Self {
        Emu4(core::array::from_fn(|k| self.0[k] + o.0[k]))
    }
    fn sub(self, o: Self) -> Self {
        Emu4(core::array::from_fn(|k| self.0[k] - o.0[k]))
    }
    fn mul(self, o: Self) -> Self {
        Emu4(core::array::from_fn(|k| self.0[k] * o.0[k]))
    }
    fn div(self, o: Self) -> Self {
        Emu4(core::array::from_fn(|k| self.0[k] / o.0[k]))
    }
    fn pmin(self, o: Self) -> Self {
        Emu4(core::array::from_fn(|k| if o.0[k] < self.0[k] { o.0[k] } else { self.0[k] }))
    }
    fn lt_select(self, o: Self, then: Self, otherwise: Self) -> Self {
        Emu4(core::array::from_fn(|k| if self.0[k] < o.0[k] { then.0[k] } else { otherwise.0[k] }))
    }
    fn lt_keep(self, o: Self, value: Self) -> Self {
        Emu4(core::array::from_fn(|k| if self.0[k] < o.0[k] { value.0[k] } else { 0.0 }))
    }
    fn relu(self, zero: Self) -> Self {
        Emu4(core::array::from_fn(|k| if self.0[k] < zero.0[k] { 0.0 } else { self.0[k] }))
    }
    fn clamp(self, lo: Self, hi: Self) -> Self {
        // The SIMD build's integer minimums on the bits (simd128.rs), lane by lane.
        Emu4(core::array::from_fn(|k| {
            let below = self.0[k].to_bits().min(lo.0[k].to_bits());
            let both = (below as i32).min(hi.0[k].to_bits() as i32) as u32;
            f32::from_bits(if self.0[k].is_nan() { u32::MAX } else { both })
        }))
    }
    fn pow2_rounded(self) -> Self {
        Emu4(self.0.map(|v| f32::from_bits((v.to_bits() << 23).wrapping_add(0x3f80_0000))))
    }
    fn adjacent(self) -> [Self; 2] {
        let each = self.0.map(|v| F32x1::splat(v).adjacent());
        [0, 1].map(|j| Emu4(core::array::from_fn(|k| each[k][j].sum_lanes())))
    }
    fn sum_lanes(self) -> f32 {
        (self.0[0] + self.0[1]) + (self.0[2] + self.0[3])
    }
}

pub(super) fn data(n: usize, seed: u32, offset: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            offset + (s as f32 / u32::MAX as f32 - 0.5) * 4.0
        })
        .collect()
}

fn channel(dims: Dims, i: usize) -> usize {
    i / dims.inner % dims.channels
}

fn check<V: Vector>(dims: Dims) {
    let n = dims.len();
    let c_n = dims.channels;
    let x = data(n, 1 + n as u32, 3.0);
    let dy = data(n, 7 + c_n as u32, 0.0);
    // float64 references
    let count = (dims.outer * dims.inner) as f64;
    let mut mean = vec![0f64; c_n];
    for (i, &v) in x.iter().enumerate() {
        mean[channel(dims, i)] += v as f64 / count;
    }
    let mut var = vec![0f64; c_n];
    let (mut g0, mut g1) = (vec![0f64; c_n], vec![0f64; c_n]);
    for (i, (&v, &d)) in x.iter().zip(&dy).enumerate() {
        let c = channel(dims, i);
        var[c] += (v as f64 - mean[c]).powi(2) / count;
        g0[c] += d as f64;
        g1[c] += d as f64 * (v as f64 - mean[c]);
    }
    let mut moments_buf = vec![Moments::default(); c_n];
    let mut rows = vec![f32::NAN; Workspace::row_floats(c_n).unwrap()];
    let mut thresholds = vec![f32::NAN; c_n];
    let mut ws =
        Workspace { moments: &mut moments_buf, rows: &mut rows, thresholds: &mut thresholds };
    let (mut m, mut v) = (vec![0f32; c_n], vec![0f32; c_n]);
    moments::<V>(&x, dims, &mut ws, &mut m, &mut v);
    for c in 0..c_n {
        assert!((m[c] as f64 - mean[c]).abs() < 1e-5, "mean {c} {dims:?}");
        let tol = 1e-5 * var[c] + 1e-9;
        assert!((v[c] as f64 - var[c]).abs() <= tol, "var {c} {dims:?}");
    }
    let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let (mut s0, mut s1) = (vec![0f32; c_n], vec![0f32; c_n]);
    // The threaded back end merges the float64 sums it is told are in the workspace.
    if reduce_grads::<V>(&x, &dy, dims, &mean32, &mut ws, &mut s0, &mut s1) {
        for (c, m) in ws.moments.iter().enumerate() {
            assert_eq!((m.mean as f32, m.m2 as f32), (s0[c], s1[c]), "float64 sums {c} {dims:?}");
        }
    }
    let scale = (n as f64).sqrt() * 1e-5 * 4.0;
    for c in 0..c_n {
        assert!((s0[c] as f64 - g0[c]).abs() < scale, "Σdy {c} {dims:?}");
        assert!((s1[c] as f64 - g1[c]).abs() < scale * 4.0, "Σdy·xc {c} {dims:?}");
    }
    let p: [Vec<f32>; 4] = core::array::from_fn(|k| data(c_n, 40 + k as u32, 0.5));
    let params = [&p[0][..], &p[1][..], &p[2][..], &p[3][..]];
    let mut y = vec![0f32; n];
    let mut in_place = x.clone();
    // SAFETY: every buffer holds n floats; the second call maps in place.
    unsafe {
        map::<V, _, 4>(ScaleShift, x.as_ptr(), x.as_ptr(), y.as_mut_ptr(), dims, params, &mut ws);
        let ptr = in_place.as_mut_ptr();
        map::<V, _, 4>(ScaleShift, ptr, ptr, ptr, dims, params, &mut ws);
    }
    for i in 0..n {
        let c = channel(dims, i);
        let want = (x[i] - p[0][c]) * p[1][c] + p[2][c];
        assert_eq!(y[i], want, "y[{i}] {dims:?}");
        assert_eq!(in_place[i], want, "in-place y[{i}] {dims:?}");
    }
    // SAFETY: as above.
    unsafe {
        map::<V, _, 4>(GradInput, x.as_ptr(), dy.as_ptr(), y.as_mut_ptr(), dims, params, &mut ws);
    }
    for i in 0..n {
        let c = channel(dims, i);
        let want = dy[i] * p[1][c] + (x[i] - p[0][c]) * p[2][c] + p[3][c];
        assert_eq!(y[i], want, "dx[{i}] {dims:?}");
    }
    check_activations::<V>(dims, &x, &dy, &mut ws);
    check_sign_thresholds::<V>(dims, &dy, &mut ws);
}

/// The thresholds of vectors of every kind, four lanes and one, in groups of four channels:
/// all shifts nonzero (the quotient's), all zero with scales above 1/2 (+0), mixed (one by
/// one), extreme (a huge and a subnormal scale, a product that overflows), NaN and infinite
/// shifts, and a tail of three channels. Each θ must be the largest float whose product
/// passes: `fl(θ·s) ≤ t` and not so for the next float up (NaN for a NaN t).
#[test]
fn thresholds_of_every_kind_of_vector() {
    use crate::threshold::{from_key, key, positive_thresholds};
    let tiny = f32::from_bits(1);
    let (inf, max) = (f32::INFINITY, f32::MAX);
    let groups: [([f32; 4], [f32; 4]); 5] = [
        ([0.7, 1.9, 0.3, 1e-3], [0.1, -2.5, 1e-3, 7.0]),
        ([0.7, 0.51, 3.0, 1.2], [0.0; 4]),
        ([0.3, 0.5, 0.7, 2.0], [0.0, 0.0, -0.0, 0.4]),
        ([1e30, tiny, 2.0, 1e-30], [1e20, -1e-40, -max, 3.0]),
        ([0.7, 0.7, 0.9, 1.0], [f32::NAN, inf, -inf, 0.5]),
    ];
    let mut scale: Vec<f32> = groups.iter().flat_map(|g| g.0).collect();
    let mut shift: Vec<f32> = groups.iter().flat_map(|g| g.1).collect();
    scale.extend([1.0, 0.6, 0.9]);
    shift.extend([0.0, -0.3, 0.2]);
    let check = |theta: &[f32], lanes: usize| {
        for (c, ((&s, &b), &th)) in scale.iter().zip(&shift).zip(theta).enumerate() {
            let (t, at) =
                (-b, std::format!("{lanes} lanes, channel {c}: s {s:e}, shift {b:e}, θ {th:e}"));
            if t.is_nan() {
                assert!(th.is_nan(), "{at}");
                continue;
            }
            assert!(th * s <= t, "{at}: does not pass");
            if th != f32::INFINITY {
                assert!(t < from_key(key(th) + 1) * s, "{at}: not the largest");
            }
        }
    };
    let mut theta = vec![f32::NAN; scale.len()];
    assert!(positive_thresholds::<Emu4>(&scale, &shift, &mut theta));
    check(&theta, 4);
    theta.fill(f32::NAN);
    assert!(positive_thresholds::<F32x1>(&scale, &shift, &mut theta));
    check(&theta, 1);
}

/// The sign-threshold passes ([`GradSumsAbove`], [`GradInputAbove`]) bit for bit against the
/// passes that form `(x − mean)·scale` ([`GradSumsAct`], [`GradInputAct`]), on data packed
/// around each channel's kink (x within 20 floats of `mean − shift/scale`; in odd channels
/// every third value elsewhere). Even channels have mean 0, so that `x − mean` is exact and
/// steps through every float near θ: with thresholds one float up or down, the map and the
/// sums differ (checked where a channel has 200 values or more, enough to reach θ's
/// neighbours).
fn check_sign_thresholds<V: Vector>(dims: Dims, dy: &[f32], ws: &mut Workspace) {
    use crate::activation::{LeakyRelu, Relu, SignActivation};
    use crate::threshold::{from_key, key, positive_thresholds};
    let (n, c_n) = (dims.len(), dims.channels);
    let p: [Vec<f32>; 5] = core::array::from_fn(|k| data(c_n, 80 + k as u32, 0.0));
    let [mean, k_dy, k_xc, k_const, shift] = &p;
    let mean: Vec<f32> = mean.iter().enumerate().map(|(c, &m)| m * (c % 2) as f32).collect();
    // Zero shifts: channel 0's with a scale under 1/2 (θ a subnormal: x − mean = x steps
    // through the subnormals), and channels 4 to 7's with scales above (θ = +0, a whole
    // vector of them at once with four lanes). The other channels' θ are quotients (with four
    // lanes, channels 1 to 3 share channel 0's vector and are found one by one).
    let mut scale: Vec<f32> = data(c_n, 90, 0.0).iter().map(|s| s.abs() + 0.05).collect();
    let mut shift = shift.clone();
    (shift[0], scale[0]) = (0.0, 0.3);
    for c in 4..c_n.min(8) {
        (shift[c], scale[c]) = (0.0, scale[c].max(0.6));
    }
    let other = data(n, 91, 0.0);
    let x: Vec<f32> = (0..n)
        .map(|i| {
            let c = channel(dims, i);
            let kink = mean[c] - shift[c] / scale[c];
            let ulps = (i % 41) as i32 - 20;
            if c % 2 == 1 && i % 3 == 2 {
                other[i]
            } else {
                from_key(key(kink).wrapping_add(ulps as u32))
            }
        })
        .collect();
    let mut theta = vec![0f32; c_n];
    assert!(positive_thresholds::<V>(&scale, &shift, &mut theta));
    // The next float up or down in value: past −0 from +0 (and back), which compare equal.
    let moved = |by: i32| -> Vec<f32> {
        let step = |t: f32| from_key(key(t).wrapping_add(by as u32));
        theta.iter().map(|&t| if step(t) == t { step(step(t)) } else { step(t) }).collect()
    };
    let (up, down) = (moved(1), moved(-1));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    /// dx, Σg and Σg·xc, by the threshold passes with thresholds `t`, or by the multiplying
    /// ones when `t` is `None`.
    fn passes<V: Vector, A: SignActivation>(
        act: A,
        dims: Dims,
        (x, dy): (&[f32], &[f32]),
        p: [&[f32]; 6],
        t: Option<&[f32]>,
        ws: &mut Workspace,
    ) -> [Vec<f32>; 3] {
        let (n, c_n) = (dims.len(), dims.channels);
        let [mean, k_dy, k_xc, k_const, scale, shift] = p;
        let (mut dx, mut s0, mut s1) = (vec![0f32; n], vec![0f32; c_n], vec![0f32; c_n]);
        let (xp, dyp, out) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        // SAFETY: x, dy and dx hold n floats.
        unsafe {
            if let Some(t) = t {
                let above = [mean, k_dy, k_xc, k_const, t];
                map::<V, _, 5>(GradInputAbove(act), xp, dyp, out, dims, above, ws);
                let r = GradSumsAbove(act);
                let (sums, none) = ([mean, t], core::ptr::null_mut());
                let _ =
                    reduce_grads_with::<V, _, 2>(r, x, dy, dims, sums, ws, &mut s0, &mut s1, none);
            } else {
                map::<V, _, 6>(GradInputAct(act), xp, dyp, out, dims, p, ws);
                let ps = [mean, scale, shift];
                let (r, none) = (GradSumsAct(act), core::ptr::null_mut());
                let _ =
                    reduce_grads_with::<V, _, 3>(r, x, dy, dims, ps, ws, &mut s0, &mut s1, none);
            }
        }
        [dx, s0, s1]
    }
    let p = [&mean[..], &k_dy[..], &k_xc[..], &k_const[..], &scale[..], &shift[..]];
    let reach = dims.outer * dims.inner >= 200;
    for act in [None, Some(0.1f32)] {
        let run = |t: Option<&[f32]>, ws: &mut Workspace| match act {
            None => passes::<V, _>(Relu::new(), dims, (&x, dy), p, t, ws),
            Some(slope) => passes::<V, _>(LeakyRelu(slope), dims, (&x, dy), p, t, ws),
        };
        let want = run(None, ws);
        let got = run(Some(&theta), ws);
        for (k, name) in ["dx", "Σg", "Σg·xc"].iter().enumerate() {
            assert_eq!(bits(&got[k]), bits(&want[k]), "sign {name}, slope {act:?}, {dims:?}");
        }
        for (off, way) in [(&up, "up"), (&down, "down")] {
            let moved = run(Some(off), ws);
            if reach {
                for (k, name) in ["dx", "Σg"].iter().enumerate() {
                    let seen = bits(&moved[k]) != bits(&want[k]);
                    assert!(seen, "θ one float {way} unseen in {name}, slope {act:?}, {dims:?}");
                }
            }
        }
    }
}

/// One lane of `act` (the scalar build's arithmetic, which every lane of every build does).
fn lane<A: Activation>(act: A, z: f32, dy: f32) -> (f32, f32) {
    let z1 = F32x1::splat(z);
    let (mut y, mut g) = (0f32, 0f32);
    // SAFETY: y and g are one float each.
    unsafe {
        act.apply(z1).store(&mut y);
        act.grad(z1, F32x1::splat(dy)).store(&mut g);
    }
    (y, g)
}

/// The fused-activation passes on every path: the maps bit for bit against one lane
/// elementwise (the same operations in the same order), the sums against float64.
fn check_activations<V: Vector>(dims: Dims, x: &[f32], dy: &[f32], ws: &mut Workspace) {
    use super::Storing;
    use crate::activation::{LeakyRelu, Relu, Relu6, Silu};
    fn one<V: Vector, A: Activation>(
        act: A,
        dims: Dims,
        x: &[f32],
        dy: &[f32],
        ws: &mut Workspace,
    ) {
        let (n, c_n) = (dims.len(), dims.channels);
        let p: [Vec<f32>; 6] = core::array::from_fn(|k| data(c_n, 60 + k as u32, 0.5));
        let [mean, k_dy, k_xc, k_const, scale, shift] = &p;
        let mut y = vec![0f32; n];
        let fwd = [&mean[..], &scale[..], &shift[..], &shift[..]];
        let bwd = [&mean[..], &k_dy[..], &k_xc[..], &k_const[..], &scale[..], &shift[..]];
        // SAFETY: every buffer holds n floats.
        unsafe {
            map::<V, _, 4>(
                ScaleShiftAct(act),
                x.as_ptr(),
                x.as_ptr(),
                y.as_mut_ptr(),
                dims,
                fwd,
                ws,
            );
        }
        for i in 0..n {
            let c = channel(dims, i);
            let z = (x[i] - mean[c]) * scale[c] + shift[c];
            assert_eq!(y[i], lane(act, z, 0.0).0, "act y[{i}] {dims:?}");
        }
        // SAFETY: as above.
        unsafe {
            map::<V, _, 6>(
                GradInputAct(act),
                x.as_ptr(),
                dy.as_ptr(),
                y.as_mut_ptr(),
                dims,
                bwd,
                ws,
            );
        }
        let (mut g0, mut g1, mut gabs) = (vec![0f64; c_n], vec![0f64; c_n], vec![0f64; c_n]);
        for i in 0..n {
            let c = channel(dims, i);
            let xc = x[i] - mean[c];
            let g = lane(act, xc * scale[c] + shift[c], dy[i]).1;
            let want = g * k_dy[c] + xc * k_xc[c] + k_const[c];
            assert_eq!(y[i], want, "act dx[{i}] {dims:?}");
            g0[c] += g as f64;
            g1[c] += g as f64 * xc as f64;
            gabs[c] += (g as f64).abs() * (1.0 + xc.abs() as f64);
        }
        let (mut s0, mut s1) = (vec![0f32; c_n], vec![0f32; c_n]);
        let params = [&mean[..], &scale[..], &shift[..]];
        let none = core::ptr::null_mut();
        // SAFETY: GradSumsAct does not store.
        let _ = unsafe {
            reduce_grads_with::<V, _, 3>(
                GradSumsAct(act),
                x,
                dy,
                dims,
                params,
                ws,
                &mut s0,
                &mut s1,
                none,
            )
        };
        for c in 0..c_n {
            // Float32 sums of the same terms: a few roundings of the sum of their sizes.
            let tol = 1e-6 * gabs[c] + 1e-12;
            assert!((s0[c] as f64 - g0[c]).abs() <= tol, "act Σg {c} {dims:?}");
            assert!((s1[c] as f64 - g1[c]).abs() <= tol, "act Σg·xc {c} {dims:?}");
        }
        // Storing g as it goes: the same sums, bit for bit, and every g where it belongs.
        let (mut t0, mut t1, mut g) = (vec![0f32; c_n], vec![0f32; c_n], vec![f32::NAN; n]);
        let r = Storing(GradSumsAct(act));
        // SAFETY: g holds n floats, apart from x and dy.
        let _ = unsafe {
            reduce_grads_with::<V, _, 3>(
                r,
                x,
                dy,
                dims,
                params,
                ws,
                &mut t0,
                &mut t1,
                g.as_mut_ptr(),
            )
        };
        assert!(s0.iter().zip(&t0).all(|(a, b)| a.to_bits() == b.to_bits()), "stored Σg {dims:?}");
        assert!(
            s1.iter().zip(&t1).all(|(a, b)| a.to_bits() == b.to_bits()),
            "stored Σg·xc {dims:?}"
        );
        for i in 0..n {
            let c = channel(dims, i);
            let want = lane(act, (x[i] - mean[c]) * scale[c] + shift[c], dy[i]).1;
            assert_eq!(g[i].to_bits(), want.to_bits(), "stored g[{i}] {dims:?}");
        }
    }
    one::<V, _>(Relu::new(), dims, x, dy, ws);
    one::<V, _>(Relu6, dims, x, dy, ws);
    one::<V, _>(LeakyRelu(0.1), dims, x, dy, ws);
    one::<V, _>(Silu, dims, x, dy, ws);
}

fn shapes() -> Vec<Dims> {
    let mut out = Vec::new();
    for inner in [1, 2, 3, 4, 5, 7, 8, 10, 15, 16, 17, 33] {
        for channels in [1, 2, 3, 5, 8, 64] {
            for outer in [1, 2, 3, 5, 9, 70] {
                out.push(Dims { outer, channels, inner });
            }
        }
    }
    // Past the cache, several statistics blocks, runs longer than BLOCK.
    out.push(Dims { outer: 5000, channels: 3, inner: 1 });
    out.push(Dims { outer: 300, channels: 1000, inner: 1 });
    out.push(Dims { outer: 3000, channels: 7, inner: 3 });
    out.push(Dims { outer: 70, channels: 30, inner: 150 });
    out.push(Dims { outer: 3, channels: 2, inner: 9000 });
    out
}

#[test]
fn one_lane() {
    for dims in shapes() {
        check::<F32x1>(dims);
    }
}

#[test]
fn four_lanes() {
    for dims in shapes() {
        check::<Emu4>(dims);
    }
}
