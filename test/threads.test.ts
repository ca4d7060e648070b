/**
 * The threaded back end's passes with 1, 2, 3 and 4 threads (the calling thread and 0–3
 * workers): bit-identical for every thread count, in both layouts, for the training forward
 * (moments, then the scale-shift), the backward (gradient sums, then the gradient input) and
 * the inference forward, plain and with a fused activation (relu, silu; leakyRelu with tiny
 * chunks, for its slope); and equal to the single-threaded SIMD build and to a float64
 * reference within float32 tolerances. Tensors are above the threshold where passes are split
 * (default chunks), and a back end with tiny chunks cuts small ones into many chunks of odd
 * sizes, channel groups included.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Act, type Activation, activate, derivative } from "../ts/activation.js";
import type { Backend, Dims } from "../ts/backend.js";
import { resolveBackend } from "../ts/init.js";
import type { ThreadedBackend } from "../ts/threads/backend-threads.js";
import { planChunks } from "../ts/threads/plan.js";
import { nodeThreads } from "../ts/threads/platform.node.js";
import type { ThreadPlatform } from "../ts/threads/pool.js";
import { startThreads } from "../ts/threads/start.js";
import { distPath, initFromDist } from "./setup-backends.js";

const COUNTS = [1, 2, 3, 4];

interface Outputs {
  mean: Float32Array;
  variance: Float32Array;
  y: Float32Array;
  sumDy: Float32Array;
  sumDyXc: Float32Array;
  dx: Float32Array;
  inference: Float32Array;
}

/** Deterministic data: xorshift, with a per-channel offset (large for some channels). */
function data(n: number, seed: number, scale: number, offset: (i: number) => number) {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = offset(i) + ((s >>> 0) / 2 ** 32 - 0.5) * scale;
  }
  return out;
}

/**
 * Runs the four passes as a training forward, backward and an inference forward would, with
 * `act` fused into the scale-shift passes and the backward ones when given.
 */
function runPasses(
  be: Backend,
  d: Dims,
  xs: Float32Array,
  dys: Float32Array,
  act: Act | null = null,
): Outputs {
  const n = d.outer * d.channels * d.inner;
  const c = d.channels;
  const buf = (values?: ArrayLike<number>) => {
    const b = be.alloc(values === undefined ? c : values.length);
    if (values !== undefined) b.view().set(values);
    return b;
  };
  const x = buf(xs);
  const dy = buf(dys);
  const y = be.alloc(n);
  const dx = be.alloc(n);
  const ws = be.allocWorkspace(c);
  const mean = buf();
  const variance = buf();
  const scale = buf();
  const shift = buf();
  const sumDy = buf();
  const sumDyXc = buf();
  const kDy = buf();
  const kXc = buf();
  const kConst = buf();
  be.moments(x, d, ws, mean, variance);
  const m = mean.view().slice();
  const v = variance.view().slice();
  const count = d.outer * d.inner;
  const invstd = Array.from(v, (vc) => 1 / Math.sqrt(vc + 1e-5));
  scale.view().set(invstd.map((k, i) => k * (1 + 0.1 * i)));
  shift.view().set(invstd.map((_, i) => 0.5 - 0.01 * i));
  be.scaleShift(x, y, d, mean, scale, shift, ws, act);
  const yOut = y.view().slice();
  const fused = act === null ? null : { act, scale, shift };
  be.gradSums(x, dy, d, mean, ws, sumDy, sumDyXc, fused);
  const s0 = sumDy.view().slice();
  const s1 = sumDyXc.view().slice();
  kDy.view().set(invstd.map((k, i) => k * (1 + 0.1 * i)));
  kXc.view().set(invstd.map((k, i) => (-k * k * k * (s1[i] as number)) / count));
  kConst.view().set(invstd.map((k, i) => (-k * (s0[i] as number)) / count));
  be.gradInput(x, dy, dx, d, mean, kDy, kXc, kConst, ws, fused);
  const dxOut = dx.view().slice();
  // Inference: running statistics as constants, in place (y = x).
  const running = buf(Array.from(m, (mc) => mc + 0.25));
  be.scaleShift(x, x, d, running, scale, shift, ws, act);
  const inference = x.view().slice();
  for (const b of [x, dy, y, dx, ws, mean, variance, scale, shift, sumDy, sumDyXc, kDy, kXc]) {
    b.free();
  }
  kConst.free();
  running.free();
  return { mean: m, variance: v, y: yOut, sumDy: s0, sumDyXc: s1, dx: dxOut, inference };
}

/** The first index where two arrays differ in their bits, or -1 (toEqual is slow on large arrays). */
function firstDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

function expectClose(got: Float32Array, want: Float32Array, rel: number, what: string) {
  expect(got.length).toBe(want.length);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i] as number));
  for (let i = 0; i < want.length; i++) {
    worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)));
  }
  expect(worst, what).toBeLessThanOrEqual(rel * (scale + 1e-30));
}

/** NCHW [N, C, S] and the same sizes channels-last [N·S, C, 1]. */
function shapes(n: number, c: number, s: number): [string, Dims][] {
  return [
    [`NCHW [${n}, ${c}, ${s}]`, { outer: n, channels: c, inner: s }],
    [`NHWC [${n}·${s}, ${c}]`, { outer: n * s, channels: c, inner: 1 }],
  ];
}

const module = new WebAssembly.Module(readFileSync(distPath("batchnorm-simd-shared.wasm")));
const pools: ThreadedBackend[] = [];
let single: Backend;

beforeAll(async () => {
  await initFromDist();
  single = resolveBackend("simd");
});
afterAll(() => {
  for (const p of pools) p.close();
});

async function backends(options: { minFloats?: number; chunkFloats?: number }) {
  const made: ThreadedBackend[] = [];
  for (const t of COUNTS) {
    const be = await startThreads(nodeThreads, module, t, options);
    pools.push(be);
    made.push(be);
  }
  return made;
}

const act = (kind: Activation, negativeSlope = 0.01): Act => ({ kind, negativeSlope });

describe.each([
  [
    "default chunks, tensors above the threshold",
    {},
    [...shapes(64, 24, 1024), ...shapes(2048, 64, 9)],
    [null, act("relu"), act("silu")],
  ],
  [
    "tiny chunks: many chunks of odd sizes, channels split into groups",
    { minFloats: 0, chunkFloats: 300 },
    [...shapes(7, 13, 37), ...shapes(5, 9, 700), ...shapes(300, 5, 1), ...shapes(41, 3, 5)],
    [null, act("relu"), act("silu"), act("leakyRelu", 0.2)],
  ],
] as const)("threads, %s", (_, options, cases, acts) => {
  let made: ThreadedBackend[] = [];
  beforeAll(async () => {
    made = await backends(options);
  });

  it("pools have 1, 2, 3 and 4 threads", () => {
    expect(made.map((b) => b.threads)).toEqual(COUNTS);
  });

  it.each(cases as unknown as [string, Dims][])(
    "%s: the same bits for 1–4 threads, close to one thread's build and to float64",
    (_, d) => {
      const n = d.outer * d.channels * d.inner;
      const plan = planChunks(d, made[0]?.chunkFloats);
      expect(plan.chunks).toBeGreaterThan(1);
      const channelOf = (i: number) => Math.floor(i / d.inner) % d.channels;
      // Channel 1 sits at 1000 with a spread of 1: the stable moments matter.
      const xs = data(n, 11 + n, 4, (i) => (channelOf(i) === 1 ? 1000 : channelOf(i) * 0.5));
      const dys = data(n, 5 + d.channels, 2, () => 0.1);
      for (const a of acts as readonly (Act | null)[]) {
        const what = (key: string) => `${key}, ${a?.kind ?? "no activation"}`;
        const results = made.map((be) => runPasses(be, d, xs, dys, a));
        const first = results[0] as Outputs;
        for (const [k, r] of results.entries()) {
          for (const key of Object.keys(first) as (keyof Outputs)[]) {
            const where = firstDifference(r[key], first[key]);
            expect(where, `${what(key)} with ${COUNTS[k]} threads`).toBe(-1);
          }
        }
        // Within float32 rounding of the single-threaded SIMD build (blocks are cut elsewhere).
        const base = runPasses(single, d, xs, dys, a);
        expectClose(first.mean, base.mean, 1e-6, what("mean"));
        expectClose(first.variance, base.variance, 1e-4, what("variance"));
        expectClose(first.y, base.y, 1e-3, what("y"));
        expectClose(first.sumDy, base.sumDy, 1e-5 * Math.sqrt(n), what("Σdy"));
        expectClose(first.sumDyXc, base.sumDyXc, 1e-5 * Math.sqrt(n), what("Σdy·xc"));
        expectClose(first.dx, base.dx, 1e-3, what("dx"));
        expectClose(first.inference, base.inference, 1e-3, what("inference"));
        expectFloat64(d, xs, dys, a, first);
      }
    },
  );
});

/**
 * The threaded outputs against float64: the statistics, and (from those statistics and the
 * coefficients `runPasses` sets) y = act(z) and Σg with g = dy·act′(z), which a chunk that
 * dropped the activation (or its slope) would miss by far more than float32 rounding.
 */
function expectFloat64(d: Dims, xs: Float32Array, dys: Float32Array, a: Act | null, got: Outputs) {
  const n = d.outer * d.channels * d.inner;
  const channelOf = (i: number) => Math.floor(i / d.inner) % d.channels;
  const count = d.outer * d.inner;
  const mean64 = new Float64Array(d.channels);
  for (let i = 0; i < n; i++) {
    const c = channelOf(i);
    mean64[c] = (mean64[c] as number) + (xs[i] as number) / count;
  }
  const var64 = new Float64Array(d.channels);
  for (let i = 0; i < n; i++) {
    const c = channelOf(i);
    var64[c] = (var64[c] as number) + ((xs[i] as number) - (mean64[c] as number)) ** 2 / count;
  }
  expectClose(got.mean, Float32Array.from(mean64), 1e-6, "mean vs float64");
  expectClose(got.variance, Float32Array.from(var64), 1e-5, "variance vs float64");
  // As runPasses sets them, from the float32 statistics the passes were given.
  const invstd = Array.from(got.variance, (v) => 1 / Math.sqrt(v + 1e-5));
  const scale = Float32Array.from(invstd, (k, c) => k * (1 + 0.1 * c));
  const shift = Float32Array.from(invstd, (_, c) => 0.5 - 0.01 * c);
  const y64 = new Float64Array(n);
  const sumDy64 = new Float64Array(d.channels);
  for (let i = 0; i < n; i++) {
    const c = channelOf(i);
    const z =
      ((xs[i] as number) - (got.mean[c] as number)) * (scale[c] as number) + (shift[c] as number);
    y64[i] = a === null ? z : activate(a, z);
    const g = (dys[i] as number) * (a === null ? 1 : derivative(a, z));
    sumDy64[c] = (sumDy64[c] as number) + g;
  }
  const kind = a?.kind ?? "no activation";
  // Tolerances, relative to the largest value: y is three float32 operations and the
  // activation (within 2.4 ulp by the kernels' bounds), so a few ulps (2⁻²⁴ ≈ 6e-8) of |y|max;
  // Σg sums a channel's values in float32 blocks merged in float64, an error near
  // (block length)·2⁻²⁴ of Σ|g|. 1e-5 is a margin over both that still catches a wrong
  // activation or slope (errors of order the values themselves: dropping silu from the threaded
  // job, or a zero leakyRelu slope, failed 12 and 8 of these tests when tried). A ReLU whose z
  // rounds to the other side of 0 in float32 would move Σg by one dy, more than the tolerance:
  // the inputs are fixed, and none of their z lies within rounding of 0.
  expectClose(got.y, Float32Array.from(y64), 1e-5, `y vs float64, ${kind}`);
  expectClose(got.sumDy, Float32Array.from(sumDy64), 1e-5, `Σg vs float64, ${kind}`);
}

describe("the chunk plan", () => {
  it("depends on the shape only, and covers the tensor", () => {
    for (const d of [
      { outer: 1, channels: 3, inner: 1_000_000 },
      { outer: 64, channels: 256, inner: 1 },
      { outer: 2, channels: 1000, inner: 300 },
      { outer: 5, channels: 1, inner: 3 },
    ]) {
      const p = planChunks(d);
      expect(p.groups === 1 || p.rows === 1).toBe(true);
      expect(p.chunks).toBe(Math.ceil(d.outer / p.rows) * p.groups);
      expect(p.group * p.groups).toBeGreaterThanOrEqual(d.channels);
    }
  });
});

describe("threads, non-finite values", () => {
  it("NaN and ±Infinity in some chunks propagate as on one thread", async () => {
    const made = await backends({ minFloats: 0, chunkFloats: 300 });
    for (const [, d] of shapes(60, 6, 7)) {
      const n = d.outer * d.channels * d.inner;
      const channelOf = (i: number) => Math.floor(i / d.inner) % d.channels;
      const xs = data(n, 3, 2, (i) => channelOf(i));
      const at = (c: number, k: number) => {
        let seen = 0;
        for (let i = 0; i < n; i++) if (channelOf(i) === c && seen++ === k) return i;
        return -1;
      };
      // Channel 0: a NaN; 2: +∞ late; 3: −∞ early; 4: +∞ and −∞ in different chunks.
      xs[at(0, 200)] = Number.NaN;
      xs[at(2, 400)] = Number.POSITIVE_INFINITY;
      xs[at(3, 1)] = Number.NEGATIVE_INFINITY;
      xs[at(4, 5)] = Number.POSITIVE_INFINITY;
      xs[at(4, 410)] = Number.NEGATIVE_INFINITY;
      const dys = data(n, 9, 2, () => 0);
      const results = made.map((be) => runPasses(be, d, xs, dys));
      const first = results[0] as Outputs;
      for (const r of results) {
        for (const key of Object.keys(first) as (keyof Outputs)[]) {
          expect(firstDifference(r[key], first[key]), key).toBe(-1);
        }
      }
      const base = runPasses(single, d, xs, dys);
      for (let c = 0; c < d.channels; c++) {
        const m = first.mean[c] as number;
        const v = first.variance[c] as number;
        expect(Number.isNaN(v), `variance ${c}`).toBe(Number.isNaN(base.variance[c] as number));
        if (c === 0 || c === 4) expect(m, `mean ${c}`).toBeNaN();
        else if (c === 2 || c === 3) {
          // NaN or the infinity of the channel's sign, as the kernels' own blocks give.
          expect(Number.isNaN(m) || m === (c === 2 ? Infinity : -Infinity), `mean ${c}`).toBe(true);
        } else expect(Math.abs(m - (base.mean[c] as number))).toBeLessThan(1e-5);
      }
      for (const key of ["y", "dx", "inference"] as const) {
        const nanHere = (a: Float32Array) => Array.from(a, (v) => Number.isNaN(v));
        expect(nanHere(first[key]), key).toEqual(nanHere(base[key]));
      }
    }
  });
});

describe("threads, a worker that never runs", () => {
  it("does not hold up a pass: the calling thread runs every chunk, with the same bits", async () => {
    // A "worker" that says it is ready and then never claims a chunk (as one that the OS does
    // not schedule): the caller waits for chunks, not for workers.
    const absent: ThreadPlatform = {
      cores: () => 2,
      spawn(_source, _data, onMessage) {
        setTimeout(() => onMessage({ ready: true }), 0);
        return { terminate: () => undefined };
      },
    };
    const options = { minFloats: 0, chunkFloats: 300 };
    const lonely = await startThreads(absent, module, 2, options);
    pools.push(lonely);
    const [reference] = await backends(options);
    const [, d] = shapes(7, 13, 37)[0] as [string, Dims];
    const n = d.outer * d.channels * d.inner;
    const xs = data(n, 1, 4, () => 3);
    const dys = data(n, 2, 2, () => 0);
    const got = runPasses(lonely, d, xs, dys);
    const want = runPasses(reference as Backend, d, xs, dys);
    for (const key of Object.keys(want) as (keyof Outputs)[]) {
      expect(firstDifference(got[key], want[key]), key).toBe(-1);
    }
    expect(lonely.threads).toBe(2);
    expect(lonely.stats.callerChunks).toBe(lonely.stats.chunks);
  });
});
