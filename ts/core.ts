/**
 * The batch-norm algorithm over a back end's passes, shared by the functional ops and the
 * module: the kernels do the O(N) passes; the O(C) work here is done in float64, straight into
 * the per-channel buffers (no arrays allocated per call but the gradients handed back).
 *
 * @module
 */
import type { Act, Fused } from "./activation.js";
import {
  type Backend,
  type ChannelMath,
  type Dims,
  type F32Buffer,
  perChannel,
} from "./backend.js";
import type { RunningVarEstimator } from "./options.js";
import type { ChannelScratch, ChannelStage } from "./scratch.js";

/** Per-channel affine parameters; `null` is weight 1 and bias 0. */
export interface Affine {
  readonly weight: ArrayLike<number> | null;
  readonly bias: ArrayLike<number> | null;
}

/**
 * Batch Renormalization's per-channel correction (Ioffe 2017): the forward normalizes to
 * `x̂·r + d` instead of `x̂`; both are constants to the backward.
 */
export interface Correction {
  readonly r: Float64Array;
  readonly d: Float64Array;
}

/** Batch statistics of `x` into `s.mean` and `s.variance` (biased), by the stable kernels. */
export function batchMoments(be: Backend, x: F32Buffer, dims: Dims, s: ChannelScratch): void {
  be.moments(x, dims, s.ws, s.mean, s.variance);
}

/**
 * Sets `scale = weight·invstd` and `shift = bias` for a forward centred on `center` (already
 * in place), with `invstd = 1/sqrt(variance + eps)` written to `invstd`; with a renorm
 * `correction`, `scale = weight·invstd·r` and `shift = bias + weight·d` (each rounded once, so
 * r = 1, d = 0 gives plain batch norm's bits).
 */
export function forwardCoefficients(
  s: ChannelScratch,
  affine: Affine,
  variance: ArrayLike<number>,
  eps: number,
  invstd: Float64Array,
  correction: Correction | null = null,
): void {
  const scale = s.scale.view();
  const shift = s.shift.view();
  const { weight, bias } = affine;
  for (let c = 0; c < scale.length; c++) {
    const k = 1 / Math.sqrt((variance[c] as number) + eps);
    invstd[c] = k;
    const kr = correction === null ? k : k * (correction.r[c] as number);
    scale[c] = weight === null ? kr : (weight[c] as number) * kr;
  }
  shiftIsBias(s, bias);
  if (correction === null) return;
  for (let c = 0; c < shift.length; c++) {
    const w = weight === null ? 1 : (weight[c] as number);
    shift[c] = (bias === null ? 0 : (bias[c] as number)) + w * (correction.d[c] as number);
  }
}

/**
 * The scratch's stage when it has one (its back end has {@link ChannelMath} and there are
 * enough channels for it to pay: `scratch.ts`) and the weight, which it reads as float32, is
 * float32 or null (so that it gives the values computed here); else undefined.
 */
function stageFor(s: ChannelScratch, weight: ArrayLike<number> | null): ChannelStage | undefined {
  return weight === null || weight instanceof Float32Array ? s.stage : undefined;
}

/** `values` copied into `buffer` (null stays null: 1 or 0). */
function staged(buffer: F32Buffer, values: ArrayLike<number> | null): F32Buffer | null {
  if (values === null) return null;
  buffer.view().set(values);
  return buffer;
}

/**
 * {@link forwardCoefficients} of the batch variance in `s.variance`, without a correction: by
 * the back end's channel math where it can, else here.
 */
export function batchCoefficients(
  be: Backend,
  s: ChannelScratch,
  affine: Affine,
  eps: number,
  invstd: Float64Array,
): void {
  const stage = stageFor(s, affine.weight);
  if (stage === undefined) {
    forwardCoefficients(s, affine, s.variance.view(), eps, invstd);
    return;
  }
  const math = be.channelMath as ChannelMath;
  const weight = staged(stage.weight, affine.weight);
  math.forwardCoefficients(s.variance, weight, eps, stage.invstd, s.scale);
  invstd.set(math.float64View(stage.invstd));
  shiftIsBias(s, affine.bias);
}

/** `shift = bias` (0 where `bias` is null), copied exactly. */
function shiftIsBias(s: ChannelScratch, bias: ArrayLike<number> | null): void {
  if (bias === null) s.shift.view().fill(0);
  else s.shift.view().set(bias);
}

/**
 * `y = act((x − center)·scale + shift)` with the coefficients in `s`, in one pass (no `act`:
 * the plain affine map).
 */
export function applyForward(
  be: Backend,
  x: F32Buffer,
  y: F32Buffer,
  dims: Dims,
  center: F32Buffer,
  s: ChannelScratch,
  act: Act | null = null,
): void {
  if (act === null) be.scaleShift(x, y, dims, center, s.scale, s.shift, s.ws);
  else be.scaleShift(x, y, dims, center, s.scale, s.shift, s.ws, act);
}

/** What a forward with batch statistics measured: each channel's mean and biased variance. */
export interface BatchMoments {
  readonly mean: ArrayLike<number>;
  readonly variance: ArrayLike<number>;
  /** Values per channel they are over. */
  readonly count: number;
  /** Whether `mean` and `variance` are the scratch's own `mean` and `variance` buffers. */
  readonly inScratch: boolean;
}

/**
 * `running = (1 − m)·running + m·batch`, with the unbiased variance `var·n/(n − 1)` of the
 * batch's `n` values per channel (PyTorch's rule), or the biased `var` itself (Keras's,
 * ONNX's): by the back end's channel math where it can (the batch's statistics in the
 * scratch, which has a stage), else here.
 */
export function updateRunningStats(
  be: Backend,
  s: ChannelScratch,
  running: { mean: Float32Array; variance: Float32Array },
  batch: BatchMoments,
  m: number,
  estimator: RunningVarEstimator,
): void {
  const unbias = estimator === "unbiased" ? batch.count / (batch.count - 1) : 1;
  const stage = batch.inScratch ? stageFor(s, null) : undefined;
  if (stage === undefined) {
    const { mean, variance } = batch;
    for (let c = 0; c < running.mean.length; c++) {
      running.mean[c] = (1 - m) * (running.mean[c] as number) + m * (mean[c] as number);
      running.variance[c] =
        (1 - m) * (running.variance[c] as number) + m * (variance[c] as number) * unbias;
    }
    return;
  }
  const math = be.channelMath as ChannelMath;
  stage.runningMean.view().set(running.mean);
  stage.runningVar.view().set(running.variance);
  math.updateRunning(s.mean, s.variance, stage.runningMean, stage.runningVar, m, unbias);
  running.mean.set(stage.runningMean.view());
  running.variance.set(stage.runningVar.view());
}

/** What a backward needs of its forward. */
export interface ForwardRecord {
  readonly dims: Dims;
  /** The per-channel centre the forward used (batch or running mean). */
  readonly center: F32Buffer;
  /** 1/sqrt(var + eps) of the forward, per channel. */
  readonly invstd: Float64Array;
  /** The weight the forward used, or `null` for 1. */
  readonly weight: ArrayLike<number> | null;
  /** Batch statistics (the gradient flows through them) or running statistics (constants). */
  readonly batchStats: boolean;
  /** The renorm correction the forward applied (constants), if any. */
  readonly correction?: Correction | null;
  /**
   * The activation fused after the normalization, if any. Backward then recomputes its input
   * `z = (x − center)·scale + shift` from `x` and the forward's `scale` and `shift`, which must
   * still be in the scratch's `scale` and `shift` buffers.
   */
  readonly act?: Act | null;
}

/** Gradients of the parameters (always computed; the module drops them when not affine). */
export interface ParamGradients {
  dWeight: Float32Array;
  dBias: Float32Array;
}

/** The per-channel sums of a backward and the count they are over. */
export interface GradSums {
  readonly sumDy: ArrayLike<number>;
  readonly sumDyXc: ArrayLike<number>;
  readonly n: number;
}

/** The tensors of a backward: its input, the upstream gradient, and `dx` (may be `dy` or `x`). */
export interface BackwardBuffers {
  readonly x: F32Buffer;
  readonly dy: F32Buffer;
  readonly dx: F32Buffer;
}

/**
 * The backward passes: `dBias = Σdy`, `dWeight = Σdy·x̂`, and `dx` into `dx` (which may be `dy`
 * or `x`), either through the batch statistics,
 * `dx = weight·invstd/n · (n·dy − Σdy − x̂·Σ(dy·x̂))`, or with them constant, `dx = dy·weight·invstd`.
 * `reduce` turns this batch's sums into the whole batch's when replicas share statistics
 * (synchronized BN, `sync.ts`); then `n`, the sums and the parameters' gradients are the whole
 * batch's. With a renorm correction (r, d constants) the weight is in effect `weight·r` for
 * `dx`, and `dWeight = Σdy·(x̂·r + d)`. With a fused activation every `dy` above is
 * `g = dy·act′(z)`, computed inside the same two passes from `x` and the forward's coefficients
 * (no mask saved, no extra pass): in both, or in the first, which then writes it into `dx` for
 * the second (where the back end does: {@link Fused.gradOut}).
 */
export function backwardPasses(
  be: Backend,
  f: ForwardRecord,
  { x, dy, dx }: BackwardBuffers,
  s: ChannelScratch,
  reduce?: ((local: GradSums) => GradSums) | null,
): ParamGradients {
  const { dims } = f;
  let fused: Fused | null = null;
  // The second pass's dy: dx's memory where the first pass wrote g = dy·act′(z) there.
  let upstream = dy;
  const { act } = f;
  if (!act) be.gradSums(x, dy, dims, f.center, s.ws, s.sumDy, s.sumDyXc);
  else {
    const { scale, shift } = s;
    const left = be.gradSums(x, dy, dims, f.center, s.ws, s.sumDy, s.sumDyXc, {
      act,
      scale,
      shift,
      gradOut: dx,
    });
    // gradInput takes what gradSums left in s.ws or dx, if anything: nothing below uses
    // either before it (reduce, with a sync module's allGather hook, works on its own
    // arrays). Written out, not spread from gradSums' object: with `...` the fused backward
    // at [8, 32, 16, 16] took about 6 µs a call more (70 → 76).
    if (left === "g") upstream = dx;
    else fused = { act, scale, shift, thresholdsReady: left === "thresholds" };
  }
  const local = { sumDy: s.sumDy.view(), sumDyXc: s.sumDyXc.view(), n: perChannel(dims) };
  const sums = reduce ? reduce(local) : local;
  const plain = !reduce && !f.correction && f.batchStats;
  const stage = plain ? stageFor(s, f.weight) : undefined;
  const grads =
    stage === undefined
      ? gradientCoefficients(f, s, sums)
      : gradientCoefficientsByChannelMath(be.channelMath as ChannelMath, f, s, stage, sums.n);
  if (f.batchStats || act) {
    if (!f.batchStats) {
      // dx = kDy·g: the statistics are constants; g needs z (or gradSums wrote it), so the
      // gradient map, kXc·xc being 0 (NaN for an infinite x, on every back end alike).
      s.kXc.view().fill(0);
      s.kConst.view().fill(0);
    }
    if (fused === null) be.gradInput(x, upstream, dx, dims, f.center, s.kDy, s.kXc, s.kConst, s.ws);
    else be.gradInput(x, dy, dx, dims, f.center, s.kDy, s.kXc, s.kConst, s.ws, fused);
  } else {
    s.kXc.view().fill(0);
    be.scaleShift(dy, dx, dims, s.kXc, s.kDy, s.kXc, s.ws);
  }
  return grads;
}

/**
 * The parameters' gradients, and `kDy` (with batch statistics `kXc` and `kConst` too) in `s`,
 * from the sums of the gradient pass.
 */
function gradientCoefficients(f: ForwardRecord, s: ChannelScratch, sums: GradSums): ParamGradients {
  const { invstd, weight } = f;
  const { sumDy, sumDyXc, n } = sums;
  const kDy = s.kDy.view();
  const C = kDy.length;
  const dWeight = new Float32Array(C);
  const correction = f.correction ?? null;
  for (let c = 0; c < C; c++) {
    const k = invstd[c] as number;
    if (correction === null) {
      dWeight[c] = k * (sumDyXc[c] as number);
      kDy[c] = weight === null ? k : (weight[c] as number) * k;
    } else {
      const kr = k * (correction.r[c] as number);
      dWeight[c] = kr * (sumDyXc[c] as number) + (correction.d[c] as number) * (sumDy[c] as number);
      kDy[c] = weight === null ? kr : (weight[c] as number) * kr;
    }
  }
  const dBias = new Float32Array(sumDy);
  if (!f.batchStats) return { dWeight, dBias };
  const kXc = s.kXc.view();
  const kConst = s.kConst.view();
  for (let c = 0; c < C; c++) {
    const k = invstd[c] as number;
    const a = kDy[c] as number;
    kXc[c] = (-a * k * k * (sumDyXc[c] as number)) / n;
    kConst[c] = (-a * (dBias[c] as number)) / n;
  }
  return { dWeight, dBias };
}

/**
 * {@link gradientCoefficients} through batch statistics of `n` values, without a correction,
 * by the back end's channel math from the sums in `s`.
 */
function gradientCoefficientsByChannelMath(
  math: ChannelMath,
  f: ForwardRecord,
  s: ChannelScratch,
  stage: ChannelStage,
  n: number,
): ParamGradients {
  math.float64View(stage.invstd).set(f.invstd);
  const weight = staged(stage.weight, f.weight);
  const { sumDy, sumDyXc, kDy, kXc, kConst } = s;
  math.backwardCoefficients(
    sumDy,
    sumDyXc,
    stage.invstd,
    weight,
    n,
    stage.dWeight,
    kDy,
    kXc,
    kConst,
  );
  return { dWeight: stage.dWeight.view().slice(), dBias: sumDy.view().slice() };
}
