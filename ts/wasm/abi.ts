/**
 * The raw exports of `crates/batchnorm` (see `crates/batchnorm/src/lib.rs`): pointers are byte
 * offsets into the instance's memory, sizes are element counts.
 *
 * @module
 */

/**
 * Must equal `ABI_VERSION` in `crates/batchnorm/src/lib.rs`. 2: fused activations (`act`,
 * `slope` after the map and gradient exports' arguments; `scale`, `shift` after the gradient
 * ones'). 3: `bn_refresh`. 4: the threaded back end's job (`threads.rs`'s `Job`) carries the
 * activation, its slope and six parameters. 5: the SIMD builds' per-channel exports
 * ({@link ChannelExports}). 6: `bn_grad_sums` returns whether it left sign thresholds in the
 * workspace, and `bn_grad_input` takes them (`thresholdsReady`). 7: `bn_grad_sums` writes `g`
 * to a `gOut` it is given (returning 2) where `bn_writes_g` says.
 */
export const ABI_VERSION = 7;

type Ptr = number;

export interface BatchNormExports {
  readonly memory: WebAssembly.Memory;
  readonly __heap_base: WebAssembly.Global;
  bn_abi_version(): number;
  bn_lanes(): number;
  bn_workspace_bytes(channels: number): number;
  bn_moments(
    x: Ptr,
    outer: number,
    channels: number,
    inner: number,
    ws: Ptr,
    mean: Ptr,
    variance: Ptr,
  ): void;
  bn_scale_shift(
    x: Ptr,
    y: Ptr,
    outer: number,
    channels: number,
    inner: number,
    center: Ptr,
    scale: Ptr,
    shift: Ptr,
    ws: Ptr,
    /** 0: none; else `ACTIVATION_CODES` (ts/activation.ts). */
    act: number,
    slope: number,
  ): void;
  /**
   * Returns 1 when it left sign thresholds in `ws` for `bn_grad_input`'s `thresholdsReady`, 2
   * when it wrote `g` to `gOut` (not 0; apart from `x` and `dy`), 0 otherwise.
   */
  bn_grad_sums(
    x: Ptr,
    dy: Ptr,
    outer: number,
    channels: number,
    inner: number,
    mean: Ptr,
    ws: Ptr,
    sumDy: Ptr,
    sumDyXc: Ptr,
    act: number,
    slope: number,
    /** The forward's scale and shift (read only when `act` is not 0). */
    scale: Ptr,
    shift: Ptr,
    gOut: Ptr,
  ): number;
  bn_grad_input(
    x: Ptr,
    dy: Ptr,
    dx: Ptr,
    outer: number,
    channels: number,
    inner: number,
    mean: Ptr,
    kDy: Ptr,
    kXc: Ptr,
    kConst: Ptr,
    ws: Ptr,
    act: number,
    slope: number,
    scale: Ptr,
    shift: Ptr,
    /** 1 only where `bn_grad_sums` with the same arguments and `ws` returned 1. */
    thresholdsReady: number,
  ): void;
  /** 1 where `bn_grad_sums` with activation `act` on `len` floats writes g to a `gOut`. */
  bn_writes_g(act: number, len: number): number;
  bn_copy(src: Ptr, dst: Ptr, len: number): void;
  /** 1 when `snapshot` holds `src`'s bits (`len` words); else copies them there and gives 0. */
  bn_refresh(src: Ptr, snapshot: Ptr, len: number): number;
}

/**
 * The SIMD builds' per-channel float64 work (`channel_math.rs`); the scalar build has none.
 * A null pointer (0) for `weight` means 1; `invstd` points at float64 values.
 */
export interface ChannelExports {
  bn_forward_coefficients(
    variance: Ptr,
    weight: Ptr,
    eps: number,
    channels: number,
    invstd: Ptr,
    scale: Ptr,
  ): void;
  bn_update_running(
    mean: Ptr,
    variance: Ptr,
    runningMean: Ptr,
    runningVar: Ptr,
    momentum: number,
    unbias: number,
    channels: number,
  ): void;
  bn_backward_coefficients(
    sumDy: Ptr,
    sumDyXc: Ptr,
    invstd: Ptr,
    weight: Ptr,
    n: number,
    channels: number,
    dWeight: Ptr,
    kDy: Ptr,
    kXc: Ptr,
    kConst: Ptr,
  ): void;
}

const CHANNEL_FUNCTIONS = [
  "bn_forward_coefficients",
  "bn_update_running",
  "bn_backward_coefficients",
] as const;

/** The per-channel exports of a checked instance, or null when it has none (the scalar build). */
export function channelExports(instance: WebAssembly.Instance): ChannelExports | null {
  const e = instance.exports as Record<string, unknown>;
  const present = CHANNEL_FUNCTIONS.filter((f) => typeof e[f] === "function").length;
  if (present === 0) return null;
  if (present < CHANNEL_FUNCTIONS.length) {
    throw new TypeError("wasm-batchnorm: a build has some of the per-channel exports but not all");
  }
  return e as unknown as ChannelExports;
}

const FUNCTIONS = [
  "bn_abi_version",
  "bn_lanes",
  "bn_workspace_bytes",
  "bn_moments",
  "bn_scale_shift",
  "bn_grad_sums",
  "bn_grad_input",
  "bn_writes_g",
  "bn_copy",
  "bn_refresh",
] as const;

/** Checks that an instance is a batchnorm build of this ABI version and types its exports. */
export function checkExports(instance: WebAssembly.Instance, name: string): BatchNormExports {
  const e = instance.exports as Record<string, unknown>;
  if (!(e.memory instanceof WebAssembly.Memory) || !(e.__heap_base instanceof WebAssembly.Global)) {
    throw new TypeError(`wasm-batchnorm: ${name} does not export memory and __heap_base`);
  }
  for (const f of FUNCTIONS) {
    if (typeof e[f] !== "function") {
      throw new TypeError(`wasm-batchnorm: ${name} has no export ${f}: not a batchnorm build`);
    }
  }
  const exports = e as unknown as BatchNormExports;
  const version = exports.bn_abi_version();
  if (version !== ABI_VERSION) {
    throw new TypeError(
      `wasm-batchnorm: ${name} has ABI version ${version}, expected ${ABI_VERSION}: ` +
        "the .wasm file and the JavaScript come from different builds",
    );
  }
  return exports;
}
