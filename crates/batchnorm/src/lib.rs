//! Batch-normalization kernels for WebAssembly, behind a raw C ABI.
//!
//! The crate is built twice: with `-C target-feature=+simd128` (four-lane `v128` kernels) and
//! without (the scalar build, for runtimes with no SIMD). Both builds run the one algorithm in
//! `kernels` (`kernels.rs` and `kernels/`); they differ only in the vector type behind it.
//!
//! The exports take pointers into this instance's linear memory and plain sizes. A tensor is
//! `[outer, channels, inner]` (see `kernels::Dims`): channels-first input is
//! `[N, C, spatial]`, channels-last and 2-D input is `[N·spatial, C, 1]`. The TypeScript
//! wrapper owns the memory (it allocates above `__heap_base`), validates every shape, and does
//! the O(C) arithmetic in float64; these functions run the O(N) passes, and in the SIMD builds
//! also the float64 work of a training call's coefficients and running statistics
//! (`channel_math.rs`), which the wrapper then leaves to them.

#![no_std]

mod activation;
#[cfg(target_feature = "simd128")]
mod channel_math;
mod exp;
mod kernels;
mod scalar;
#[cfg(target_feature = "simd128")]
mod simd128;
mod threshold;
mod vector;

use core::slice::{from_raw_parts, from_raw_parts_mut};
use kernels::Workspace;
use kernels::{Dims, GradInput, GradInputAct, GradSumsAct, Moments, ScaleShift, ScaleShiftAct};
use kernels::{GradInputAbove, GradSumsAbove, Storing};

#[cfg(target_feature = "simd128")]
type Lanes = simd128::F32x4;
#[cfg(not(target_feature = "simd128"))]
type Lanes = scalar::F32x1;

/// Bumped whenever an export changes; the wrapper refuses a binary of another version.
/// 2: fused activations (`act`, `slope` on the map and gradient exports; `scale`, `shift` on
/// the gradient ones). 3: `bn_refresh`. 4: the threaded back end's job (`threads.rs`'s `Job`)
/// carries the activation, its slope and six parameters. 5: the SIMD builds' per-channel
/// exports (`bn_forward_coefficients`, `bn_update_running`, `bn_backward_coefficients`).
/// 6: `bn_grad_sums` says whether it left sign thresholds in the workspace, and
/// `bn_grad_input` can take them (`thresholds_ready`). 7: `bn_grad_sums` writes `g` to a
/// `g_out` it is given (returning 2).
const ABI_VERSION: u32 = 7;

/// Runs `$body` with `$a` bound to relu (`$code` 1) or leakyRelu (3, slope `$slope`), the
/// activations whose backward can test the sign of `z` against thresholds
/// (`threshold::sign_thresholds`); [`with_activation!`] builds these two through it.
macro_rules! with_sign_activation {
    ($code:expr, $slope:expr, |$a:ident| $body:expr) => {
        match $code {
            1 => {
                let $a = $crate::activation::Relu::new();
                $body
            }
            3 => {
                let $a = $crate::activation::LeakyRelu($slope);
                $body
            }
            _ => panic!("not a sign activation"),
        }
    };
}

/// Runs `$body` with `$a` bound to the activation numbered `$code` (1 relu, 2 relu6,
/// 3 leakyRelu with slope `$slope`, 4 sigmoid, 5 tanh, 6 silu: `ACTIVATION_CODES` in
/// ts/activation.ts). Any other code is a bug of the wrapper, which checks it, and traps.
macro_rules! with_activation {
    ($code:expr, $slope:expr, |$a:ident| $body:expr) => {
        match $code {
            1 | 3 => with_sign_activation!($code, $slope, |$a| $body),
            2 => {
                let $a = $crate::activation::Relu6;
                $body
            }
            4 => {
                let $a = $crate::activation::Sigmoid;
                $body
            }
            5 => {
                let $a = $crate::activation::Tanh;
                $body
            }
            6 => {
                let $a = $crate::activation::Silu;
                $body
            }
            _ => panic!("unknown activation"),
        }
    };
}

// The chunk runner of the threaded back end (`bn_work`, `bn_slot_bytes`): in every build, used
// through the shared-memory one. Declared after `with_activation!`, which it uses.
mod threads;

#[no_mangle]
pub extern "C" fn bn_abi_version() -> u32 {
    ABI_VERSION
}

/// Floats per vector in this build: 4 for the SIMD build, 1 for the scalar one.
#[no_mangle]
pub extern "C" fn bn_lanes() -> u32 {
    <Lanes as vector::Vector>::LANES as u32
}

/// Bytes of workspace (8-byte aligned) that the kernels need for `channels` channels.
///
/// Saturates: when the size does not fit in a `usize` (32 bits on wasm32: from about 10.4
/// million channels, at 412 bytes a channel) it returns `usize::MAX`, which no allocation can
/// satisfy, instead of a wrapped-around small size; the caller must refuse it. Through the wasm ABI the result is
/// an `i32`, so JavaScript sees `usize::MAX` as `-1` (or as 4294967295 after `>>> 0`).
#[no_mangle]
pub extern "C" fn bn_workspace_bytes(channels: usize) -> usize {
    Workspace::bytes(channels)
}

/// # Safety
/// `ptr` must be 8-byte aligned, valid for [`bn_workspace_bytes`]`(channels)` bytes and not
/// overlap any tensor or per-channel array of the same call.
unsafe fn workspace<'a>(ptr: *mut u8, channels: usize) -> Workspace<'a> {
    let moments = ptr as *mut Moments;
    let rows = moments.add(channels) as *mut f32;
    // The caller allocated bn_workspace_bytes(channels), which is finite only when this is.
    let row_floats = Workspace::row_floats(channels).unwrap_or(0);
    Workspace {
        moments: from_raw_parts_mut(moments, channels),
        rows: from_raw_parts_mut(rows, row_floats),
        thresholds: from_raw_parts_mut(rows.add(row_floats), channels),
    }
}

/// Per-channel mean and biased variance of `x` (`outer · channels · inner` floats).
///
/// # Safety
/// Sizes are positive; `x` is valid for the tensor, `mean` and `var` for `channels` floats
/// each, `workspace` as in [`bn_workspace_bytes`]; no output overlaps anything else.
#[no_mangle]
pub unsafe extern "C" fn bn_moments(
    x: *const f32,
    outer: usize,
    channels: usize,
    inner: usize,
    workspace_ptr: *mut u8,
    mean: *mut f32,
    var: *mut f32,
) {
    let dims = Dims { outer, channels, inner };
    kernels::moments::<Lanes>(
        from_raw_parts(x, dims.len()),
        dims,
        &mut workspace(workspace_ptr, channels),
        from_raw_parts_mut(mean, channels),
        from_raw_parts_mut(var, channels),
    );
}

/// `y = (x − center[c])·scale[c] + shift[c]` for every element of channel `c`, then the
/// activation numbered `act` (0: none; see `with_activation!`, `slope` for leakyRelu) in the
/// same pass.
///
/// # Safety
/// Sizes are positive; `x` and `y` are valid for the tensor and are either the same pointer
/// or disjoint; `center`, `scale`, `shift` hold `channels` floats; `workspace` as in
/// [`bn_workspace_bytes`] and disjoint from everything else.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bn_scale_shift(
    x: *const f32,
    y: *mut f32,
    outer: usize,
    channels: usize,
    inner: usize,
    center: *const f32,
    scale: *const f32,
    shift: *const f32,
    workspace_ptr: *mut u8,
    act: u32,
    slope: f32,
) {
    let params = [
        from_raw_parts(center, channels),
        from_raw_parts(scale, channels),
        from_raw_parts(shift, channels),
        from_raw_parts(shift, channels),
    ];
    let dims = Dims { outer, channels, inner };
    let mut ws = workspace(workspace_ptr, channels);
    if act == 0 {
        kernels::map::<Lanes, _, 4>(ScaleShift, x, x, y, dims, params, &mut ws);
    } else {
        with_activation!(act, slope, |a| {
            map_out_of_line::<_, 4>(ScaleShiftAct(a), x, x, y, dims, params, &mut ws)
        });
    }
}

/// Per-channel `Σg` and `Σg·(x − mean[c])`, written to `sum_dy` and `sum_dy_xc`: `g = dy` when
/// `act` is 0, else `g = dy·act′(z)` with `z = (x − mean[c])·scale[c] + shift[c]` (the
/// forward's pre-activation, recomputed here).
///
/// Returns 1 when it tested the sign of `z` against thresholds (relu and leakyRelu: see
/// `threshold.rs`), which it then left in the workspace for [`bn_grad_input`]'s
/// `thresholds_ready`. Otherwise, with an activation and a `g_out` (not 0), where that pays
/// ([`bn_writes_g`]), it writes each `g` there and returns 2: [`bn_grad_input`] without an
/// activation, given `g_out` for `dy`, then gives the same `dx` bits as with it, without
/// evaluating `act′` a second time (an `exp` a value for sigmoid, tanh and silu). 0 otherwise.
///
/// # Safety
/// As for [`bn_moments`], with `dy` as long as `x` and `mean` holding `channels` floats; when
/// `act` is not 0, `scale` and `shift` too (otherwise they are not read); `g_out` 0, or valid
/// for writing as many floats as `x` and overlapping none of the other arguments.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bn_grad_sums(
    x: *const f32,
    dy: *const f32,
    outer: usize,
    channels: usize,
    inner: usize,
    mean: *const f32,
    workspace_ptr: *mut u8,
    sum_dy: *mut f32,
    sum_dy_xc: *mut f32,
    act: u32,
    slope: f32,
    scale: *const f32,
    shift: *const f32,
    g_out: *mut f32,
) -> u32 {
    let dims = Dims { outer, channels, inner };
    let (x, dy) = (from_raw_parts(x, dims.len()), from_raw_parts(dy, dims.len()));
    let mean = from_raw_parts(mean, channels);
    let ws = &mut workspace(workspace_ptr, channels);
    let sum_dy = from_raw_parts_mut(sum_dy, channels);
    let sum_dy_xc = from_raw_parts_mut(sum_dy_xc, channels);
    // The kernels' result (whether the float64 sums are in the workspace too) is for the
    // threaded runner only; the return value says whether the thresholds are.
    if act == 0 {
        let _ = kernels::reduce_grads::<Lanes>(x, dy, dims, mean, ws, sum_dy, sum_dy_xc);
        return 0;
    }
    if let Some(theta) = threshold::sign_thresholds::<Lanes>(act, dims, scale, shift, ws, false) {
        let params = [mean, theta];
        let _ = with_sign_activation!(act, slope, |a| {
            grad_sums_out_of_line(GradSumsAbove(a), x, dy, dims, params, ws, sum_dy, sum_dy_xc)
        });
        return 1;
    }
    let params = [mean, from_raw_parts(scale, channels), from_raw_parts(shift, channels)];
    if !g_out.is_null() && bn_writes_g(act, dims.len()) == 1 {
        let _ = with_activation!(act, slope, |a| {
            let r = GradSumsAct(a);
            // SAFETY: the caller's: g_out holds as many floats as x, apart from every input.
            grad_sums_storing(r, x, dy, dims, params, ws, sum_dy, sum_dy_xc, g_out)
        });
        return 2;
    }
    let _ = with_activation!(act, slope, |a| {
        grad_sums_out_of_line(GradSumsAct(a), x, dy, dims, params, ws, sum_dy, sum_dy_xc)
    });
    0
}

/// 1 where [`bn_grad_sums`] with activation `act` (not 0) on `len` floats writes `g` to a
/// `g_out` it is given (unless it tests z's sign against thresholds), else 0: the wrapper asks
/// before giving `dx` a buffer of its own. For sigmoid, tanh and silu always: their
/// derivative, an `exp` and a division a value, costs more than a third stream of memory
/// (fused fwd+bwd 1.2–1.3× faster on 25 MB tensors and in the cache). For relu, relu6 and
/// leakyRelu, tests of z's sign, only on tensors in the cache: relu6's fwd+bwd ran 1.1×
/// faster at [60, 1000], but 1.05–1.2× slower on 25 MB.
#[no_mangle]
pub extern "C" fn bn_writes_g(act: u32, len: usize) -> u32 {
    const SIGMOID: u32 = 4;
    const TANH: u32 = 5;
    const SILU: u32 = 6;
    let exp_based = matches!(act, SIGMOID | TANH | SILU);
    u32::from(exp_based || (act != 0 && len <= kernels::CACHED_FLOATS))
}

/// `dx = k_dy[c]·g + k_xc[c]·(x − mean[c]) + k_const[c]`, with `g` as in [`bn_grad_sums`].
///
/// `thresholds_ready` 1 takes the thresholds from the workspace instead of finding them again
/// (relu and leakyRelu; the other activations ignore it). Give it only where [`bn_grad_sums`]
/// returned 1 for the same `act`, `dims`, `scale`, `shift` and workspace, nothing having
/// written the workspace since: otherwise the gradients are wrong (no memory is misused).
///
/// # Safety
/// As for [`bn_scale_shift`]; `dx` may be the same pointer as `dy` (or `x`) but must not
/// overlap either otherwise; `scale` and `shift` hold `channels` floats when `act` is not 0.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn bn_grad_input(
    x: *const f32,
    dy: *const f32,
    dx: *mut f32,
    outer: usize,
    channels: usize,
    inner: usize,
    mean: *const f32,
    k_dy: *const f32,
    k_xc: *const f32,
    k_const: *const f32,
    workspace_ptr: *mut u8,
    act: u32,
    slope: f32,
    scale: *const f32,
    shift: *const f32,
    thresholds_ready: u32,
) {
    let params = [
        from_raw_parts(mean, channels),
        from_raw_parts(k_dy, channels),
        from_raw_parts(k_xc, channels),
        from_raw_parts(k_const, channels),
    ];
    let dims = Dims { outer, channels, inner };
    let mut ws = workspace(workspace_ptr, channels);
    if act == 0 {
        kernels::map::<Lanes, _, 4>(GradInput, x, dy, dx, dims, params, &mut ws);
    } else if let Some(theta) =
        threshold::sign_thresholds::<Lanes>(act, dims, scale, shift, &mut ws, thresholds_ready == 1)
    {
        let [m, k_dy, k_xc, k_const] = params;
        let params = [m, k_dy, k_xc, k_const, theta];
        with_sign_activation!(act, slope, |a| {
            map_out_of_line::<_, 5>(GradInputAbove(a), x, dy, dx, dims, params, &mut ws)
        });
    } else {
        let [m, k_dy, k_xc, k_const] = params;
        let (scale, shift) = (from_raw_parts(scale, channels), from_raw_parts(shift, channels));
        let params = [m, k_dy, k_xc, k_const, scale, shift];
        with_activation!(act, slope, |a| {
            map_out_of_line::<_, 6>(GradInputAct(a), x, dy, dx, dims, params, &mut ws)
        });
    }
}

/// `kernels::map` in a function of its own for each activation, so that the exports' plain
/// paths stay the functions they were: with the six activations' kernels inlined next to them,
/// the plain scale-shift and gradient passes ran 1.1–2.4× slower.
///
/// # Safety
/// As for `kernels::map`.
#[inline(never)]
unsafe fn map_out_of_line<M: kernels::Map<P>, const P: usize>(
    m: M,
    a: *const f32,
    b: *const f32,
    out: *mut f32,
    dims: Dims,
    params: [&[f32]; P],
    ws: &mut Workspace,
) {
    kernels::map::<Lanes, M, P>(m, a, b, out, dims, params, ws);
}

/// `kernels::reduce_grads_with` out of line, for the reason of [`map_out_of_line`], with a
/// reduction that stores nothing (see [`grad_sums_storing`]).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
#[must_use]
fn grad_sums_out_of_line<R: kernels::Reduce<P>, const P: usize>(
    r: R,
    x: &[f32],
    dy: &[f32],
    dims: Dims,
    params: [&[f32]; P],
    ws: &mut Workspace,
    sum_dy: &mut [f32],
    sum_dy_xc: &mut [f32],
) -> bool {
    assert!(!R::STORES, "a storing reduction goes through grad_sums_storing");
    let none = core::ptr::null_mut();
    // SAFETY: R stores nothing, so `none` is never written.
    unsafe {
        kernels::reduce_grads_with::<Lanes, R, P>(
            r, x, dy, dims, params, ws, sum_dy, sum_dy_xc, none,
        )
    }
}

/// [`grad_sums_out_of_line`] with `Storing(r)`: each `g` also goes to `out`, at its position.
///
/// # Safety
/// `out` is valid for writing `x.len()` floats and overlaps none of the other arguments.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
#[must_use]
unsafe fn grad_sums_storing<R: kernels::Reduce<P>, const P: usize>(
    r: R,
    x: &[f32],
    dy: &[f32],
    dims: Dims,
    params: [&[f32]; P],
    ws: &mut Workspace,
    sum_dy: &mut [f32],
    sum_dy_xc: &mut [f32],
    out: *mut f32,
) -> bool {
    let r = Storing(r);
    kernels::reduce_grads_with::<Lanes, _, P>(r, x, dy, dims, params, ws, sum_dy, sum_dy_xc, out)
}

/// Copies `len` floats through vector registers: the benchmark's bandwidth yardstick.
///
/// # Safety
/// `src` and `dst` are valid for `len` floats and do not overlap.
#[no_mangle]
pub unsafe extern "C" fn bn_copy(src: *const f32, dst: *mut f32, len: usize) {
    kernels::copy::<Lanes>(src, dst, len);
}

/// Returns 1 when `snapshot` holds the bits of `src` (`len` words each); otherwise copies them
/// there and returns 0. A module's inference reuses its coefficients while its weight and
/// running variance keep their bits: comparing here, in vectors, costs a fraction of
/// recomputing `1/sqrt(var + eps)` per channel in float64 (see ts/coefficient-cache.ts).
///
/// # Safety
/// `src` and `snapshot` are valid for `len` words and do not overlap.
#[no_mangle]
pub unsafe extern "C" fn bn_refresh(src: *const u32, snapshot: *mut u32, len: usize) -> u32 {
    let (now, then) = (from_raw_parts(src, len), from_raw_parts(snapshot, len));
    // No early exit: a loop without branches is one the compiler vectorizes.
    let diff = now.iter().zip(then).fold(0, |d, (a, b)| d | (a ^ b));
    if diff == 0 {
        return 1;
    }
    // A copy of words moves bits, NaN payloads included.
    kernels::copy::<Lanes>(src.cast(), snapshot.cast(), len);
    0
}

#[cfg(test)]
mod tests;

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // The wrapper validates every call, so a panic is a bug: trap rather than corrupt memory.
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    loop {}
}
