/**
 * The SIMD builds do a training call's per-channel float64 work in wasm (`Backend.channelMath`,
 * crates/batchnorm/src/channel_math.rs) from 32 channels on; every other back end, and smaller
 * modules, run its JavaScript twin in ts/core.ts. Both must give the same values: the same bits
 * for every number, infinities, subnormals and signed zeros included, and NaN where the other
 * gives NaN (neither wasm nor JavaScript promises a NaN's payload, so `Object.is` compares).
 * Each entry point of core.ts runs here twice on the same buffers: with the scratch's stage
 * (the wasm path, whose calls are counted, so that a path that quietly fell back to JavaScript
 * fails) and without it (the JavaScript one). A negative control shows that the comparison sees
 * a single rounding. Module-level results from 32 channels on, against the float64 reference, are in the
 * conformance suite (its cases with 64, 129 and 131 channels).
 */
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { Backend, ChannelMath } from "../ts/backend.js";
import {
  backwardPasses,
  batchCoefficients,
  type ForwardRecord,
  updateRunningStats,
} from "../ts/core.js";
import { resolveBackend } from "../ts/init.js";
import { BufferSet } from "../ts/lifetime.js";
import { allocScratch, type ChannelScratch } from "../ts/scratch.js";
import { Rng } from "./random.js";
import { initFromDist } from "./setup-backends.js";
import { expectSameBits } from "./state.js";

beforeAll(async () => {
  await initFromDist();
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** Channel counts: the smallest that uses the wasm path, odd ones (a last lone channel), many. */
const CHANNELS = [32, 33, 131, 1000];

/** The same scratch without its stage: core.ts then runs its JavaScript twin. */
const withoutStage = (s: ChannelScratch): ChannelScratch => ({ ...s, stage: undefined });

/**
 * Values of every kind the arithmetic can meet: magnitudes from 1e-30 to 1e30 of both signs,
 * ±0, subnormals, ±∞ and NaN (`positive`: the non-negative ones, NaN and +∞, as a variance is).
 */
function awkward(rng: Rng, n: number, positive = false): Float32Array {
  const specials = [0, -0, 1e-40, -1e-40, Infinity, -Infinity, Number.NaN, 1, -1];
  const a = Float32Array.from({ length: n }, (_, i) =>
    i % 7 === 3
      ? (specials[i % specials.length] as number)
      : rng.normal() * 10 ** Math.round(rng.range(-30, 30)),
  );
  return positive ? a.map((v) => (Number.isNaN(v) || v > 0 ? v : -v)) : a;
}

function scratchOf(be: Backend, channels: number): ChannelScratch {
  const s = allocScratch(new BufferSet(be), channels, "channel-math.test", "channels");
  expect(s.stage, "the SIMD build stages its per-channel work").toBeDefined();
  return s;
}

/** Counts the calls of the SIMD build's `method` from now on (restored after each test). */
function counted(method: keyof ChannelMath) {
  return vi.spyOn(resolveBackend("simd").channelMath as ChannelMath, method);
}

describe("which back ends have per-channel math", () => {
  it("the SIMD build has it; the scalar build and the JS back end leave it to JavaScript", () => {
    expect(resolveBackend("simd").channelMath).toBeDefined();
    expect(resolveBackend("scalar").channelMath).toBeUndefined();
    expect(resolveBackend("js").channelMath).toBeUndefined();
  });
});

describe.each(CHANNELS)("per-channel math in wasm, %i channels, against core.ts", (C) => {
  const be = () => resolveBackend("simd");

  it("gives the forward's coefficients bit for bit, with and without weight and bias", () => {
    const rng = new Rng(C);
    const s = scratchOf(be(), C);
    const calls = counted("forwardCoefficients");
    for (const [weight, bias] of [
      [awkward(rng, C), awkward(rng, C)],
      [null, null],
      [awkward(rng, C), null],
    ] as const) {
      for (const eps of [1e-5, 1e-3, 0]) {
        s.variance.view().set(awkward(rng, C, true));
        const affine = { weight, bias };
        const inWasm = new Float64Array(C);
        batchCoefficients(be(), s, affine, eps, inWasm);
        expect(calls).toHaveBeenCalledTimes(1);
        const [scale, shift] = [s.scale.view().slice(), s.shift.view().slice()];
        const inJs = new Float64Array(C);
        batchCoefficients(be(), withoutStage(s), affine, eps, inJs);
        expect(calls, "without a stage, JavaScript").toHaveBeenCalledTimes(1);
        calls.mockClear();
        const what = `weight ${weight ? "given" : "null"}, bias ${bias ? "given" : "null"}, eps ${eps}`;
        expectSameBits(`${what}: invstd`, inWasm, inJs);
        expectSameBits(`${what}: scale`, scale, s.scale.view());
        expectSameBits(`${what}: shift`, shift, s.shift.view());
      }
    }
  });

  it("updates the running statistics bit for bit, with either variance estimator", () => {
    const rng = new Rng(C + 1);
    const s = scratchOf(be(), C);
    const calls = counted("updateRunning");
    for (const estimator of ["unbiased", "biased"] as const) {
      for (const [momentum, n] of [
        [0.1, 2],
        [0.37, 1000],
        [1, 7],
      ] as const) {
        s.mean.view().set(awkward(rng, C));
        s.variance.view().set(awkward(rng, C, true));
        const inWasm = { mean: awkward(rng, C), variance: awkward(rng, C, true) };
        const inJs = { mean: inWasm.mean.slice(), variance: inWasm.variance.slice() };
        const batch = { mean: s.mean.view(), variance: s.variance.view(), count: n };
        updateRunningStats(be(), s, inWasm, { ...batch, inScratch: true }, momentum, estimator);
        expect(calls).toHaveBeenCalledTimes(1);
        // Statistics that are not the scratch's (ghost batches' averages, a synchronized
        // batch's) are JavaScript's, whatever the scratch has.
        updateRunningStats(be(), s, inJs, { ...batch, inScratch: false }, momentum, estimator);
        expect(calls, "statistics outside the scratch: JavaScript").toHaveBeenCalledTimes(1);
        calls.mockClear();
        const what = `${estimator}, momentum ${momentum}, n ${n}`;
        expectSameBits(`${what}: running mean`, inWasm.mean, inJs.mean);
        expectSameBits(`${what}: running var`, inWasm.variance, inJs.variance);
      }
    }
  });

  it("gives the backward's gradients bit for bit, plain and with a fused activation", () => {
    const rng = new Rng(C + 2);
    const s = scratchOf(be(), C);
    const dims = { outer: 3, channels: C, inner: 5 };
    const n = dims.outer * dims.channels * dims.inner;
    const buffers = new BufferSet(be());
    const [x, dy, dx] = [buffers.alloc(n), buffers.alloc(n), buffers.alloc(n)];
    x.view().set(Float32Array.from({ length: n }, () => rng.normal() * 3 + 1));
    dy.view().set(Float32Array.from({ length: n }, () => rng.normal()));
    s.mean.view().set(Float32Array.from({ length: C }, () => rng.normal()));
    s.scale.view().set(Float32Array.from({ length: C }, () => rng.normal()));
    s.shift.view().set(Float32Array.from({ length: C }, () => rng.normal()));
    const invstd = Float64Array.from(awkward(rng, C, true));
    const calls = counted("backwardCoefficients");
    for (const weight of [awkward(rng, C), null]) {
      for (const act of [null, { kind: "relu", negativeSlope: 0 } as const]) {
        const f: ForwardRecord = { dims, center: s.mean, invstd, weight, batchStats: true, act };
        const io = { x, dy, dx };
        const inWasm = backwardPasses(be(), f, io, s);
        expect(calls).toHaveBeenCalledTimes(1);
        const dxWasm = dx.view().slice();
        const inJs = backwardPasses(be(), f, io, withoutStage(s));
        expect(calls, "without a stage, JavaScript").toHaveBeenCalledTimes(1);
        calls.mockClear();
        const what = `weight ${weight ? "given" : "null"}, ${act ? "relu" : "no activation"}`;
        expectSameBits(`${what}: dWeight`, inWasm.dWeight, inJs.dWeight);
        expectSameBits(`${what}: dBias`, inWasm.dBias, inJs.dBias);
        expectSameBits(`${what}: dx`, dxWasm, dx.view());
      }
    }
  });
});

describe("what the per-channel math in wasm does not do", () => {
  it("leaves a renorm correction, a synchronized reduction and a backward through running statistics to JavaScript", () => {
    const be = resolveBackend("simd");
    const C = 33;
    const s = scratchOf(be, C);
    const dims = { outer: 2, channels: C, inner: 3 };
    const buffers = new BufferSet(be);
    const n = 2 * C * 3;
    const [x, dy, dx] = [buffers.alloc(n), buffers.alloc(n), buffers.alloc(n)];
    x.view().fill(1.5);
    dy.view().fill(0.25);
    const calls = counted("backwardCoefficients");
    const invstd = new Float64Array(C).fill(2);
    const plain: ForwardRecord = { dims, center: s.mean, invstd, weight: null, batchStats: true };
    const correction = { r: new Float64Array(C).fill(1.1), d: new Float64Array(C).fill(0.1) };
    backwardPasses(be, { ...plain, correction }, { x, dy, dx }, s);
    backwardPasses(be, plain, { x, dy, dx }, s, (sums) => sums);
    backwardPasses(be, { ...plain, batchStats: false }, { x, dy, dx }, s);
    expect(calls).not.toHaveBeenCalled();
    // The control: the plain backward does use it.
    backwardPasses(be, plain, { x, dy, dx }, s);
    expect(calls).toHaveBeenCalledTimes(1);
  });

  it("leaves a weight that is not a Float32Array to JavaScript (it would read it as float32)", () => {
    const be = resolveBackend("simd");
    const C = 40;
    const s = scratchOf(be, C);
    const calls = counted("forwardCoefficients");
    s.variance.view().fill(0.5);
    const weight = Float64Array.from({ length: C }, (_, c) => 1 + c * 1e-9);
    batchCoefficients(be, s, { weight, bias: null }, 1e-5, new Float64Array(C));
    expect(calls).not.toHaveBeenCalled();
  });
});

describe("the bit-for-bit comparison (negative control)", () => {
  it("sees one rounding's difference: eps one ulp larger changes invstd and scale", () => {
    const be = resolveBackend("simd");
    const C = 129;
    const rng = new Rng(5);
    const s = scratchOf(be, C);
    // Variances near eps, where a change of eps by one ulp moves the square root.
    s.variance.view().set(Float32Array.from({ length: C }, () => rng.range(0, 1e-5)));
    const affine = { weight: awkward(rng, C), bias: null };
    const eps = 1e-5;
    const inWasm = new Float64Array(C);
    batchCoefficients(be, s, affine, eps, inWasm);
    const inJs = new Float64Array(C);
    const nextEps = eps * (1 + Number.EPSILON);
    batchCoefficients(be, withoutStage(s), affine, nextEps, inJs);
    expect(() => expectSameBits("invstd", inWasm, inJs)).toThrow(/invstd\[\d+\]/);
  });
});
