/**
 * The pure-JS back end's kernels, one by one, against float64 loops written out in full, on
 * the shapes that reach every branch: channels-last (`inner` 1) with 0–3 rows left after the
 * blocks of four, channels-first runs of 1–9 values (the unrolled loop and its tail), one and
 * many channels, the per-call scratch first grown and then reused for fewer channels, and the
 * in-place forms (`y` = `x`, `dx` = `dy`).
 *
 * Tolerances: every kernel sums in float64, so the statistics agree with the float64 reference
 * to ~1e-12 (relative); outputs are float32, within one rounding (6e-8) plus that.
 */
import { describe, expect, it } from "vitest";
import type { Dims } from "../ts/backend.js";
import { jsBackend } from "../ts/backend-js.js";

const SHAPES: Dims[] = [
  ...[4, 5, 6, 7, 1, 2, 3].map((outer) => ({ outer, channels: 3, inner: 1 })),
  { outer: 9, channels: 1, inner: 1 },
  { outer: 13, channels: 70, inner: 1 },
  ...[1, 2, 3, 4, 5, 9].map((inner) => ({ outer: 3, channels: 5, inner })),
  { outer: 2, channels: 1, inner: 17 },
];

function data(n: number, seed: number, offset: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = offset + Math.sin(seed * 12.9898 + i * 78.233) * 3;
  return out;
}

const buf = (a: Float32Array) => {
  const b = jsBackend.alloc(a.length);
  b.view().set(a);
  return b;
};
const channelOf = (i: number, { channels, inner }: Dims) => Math.floor(i / inner) % channels;
const add = (a: Float64Array, i: number, v: number) => {
  a[i] = (a[i] as number) + v;
};

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, rel: number) {
  expect(got.length).toBe(want.length);
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i] as number));
  for (let i = 0; i < want.length; i++) {
    expect(Math.abs((got[i] as number) - (want[i] as number))).toBeLessThanOrEqual(
      rel * (scale || 1),
    );
  }
}

describe("JS back end kernels", () => {
  // Largest channel count first: the shared float64 scratch is then reused, not regrown.
  for (const d of [...SHAPES].sort((a, b) => b.channels - a.channels)) {
    const n = d.outer * d.channels * d.inner;
    const C = d.channels;
    const label = `[${d.outer}, ${d.channels}, ${d.inner}]`;
    const x = data(n, 1, 100);
    const dy = data(n, 2, 0);
    const params = [3, 4, 5, 6].map((s) => data(C, s, 1));
    const [p0, p1, p2, p3] = params as [Float32Array, Float32Array, Float32Array, Float32Array];
    const ws = jsBackend.allocWorkspace(C);

    it(`moments ${label}`, () => {
      const sum = new Float64Array(C);
      const count = n / C;
      for (let i = 0; i < n; i++) add(sum, channelOf(i, d), x[i] as number);
      const mean = sum.map((s) => s / count);
      const sq = new Float64Array(C);
      for (let i = 0; i < n; i++) {
        const c = channelOf(i, d);
        add(sq, c, ((x[i] as number) - (mean[c] as number)) ** 2);
      }
      const m = jsBackend.alloc(C);
      const v = jsBackend.alloc(C);
      jsBackend.moments(buf(x), d, ws, m, v);
      expectClose(m.view(), Float32Array.from(mean), 1e-7);
      expectClose(
        v.view(),
        Float32Array.from(sq, (s) => s / count),
        1e-6,
      );
    });

    it(`scaleShift ${label}, also in place`, () => {
      const want = x.map((v, i) => {
        const c = channelOf(i, d);
        return (v - (p0[c] as number)) * (p1[c] as number) + (p2[c] as number);
      });
      const y = jsBackend.alloc(n);
      jsBackend.scaleShift(buf(x), y, d, buf(p0), buf(p1), buf(p2), ws);
      expectClose(y.view(), want, 1e-7);
      const xy = buf(x);
      jsBackend.scaleShift(xy, xy, d, buf(p0), buf(p1), buf(p2), ws);
      expectClose(xy.view(), want, 1e-7);
    });

    it(`gradSums ${label}`, () => {
      const g = new Float64Array(C);
      const gx = new Float64Array(C);
      for (let i = 0; i < n; i++) {
        const c = channelOf(i, d);
        add(g, c, dy[i] as number);
        add(gx, c, (dy[i] as number) * ((x[i] as number) - (p0[c] as number)));
      }
      const sumDy = jsBackend.alloc(C);
      const sumDyXc = jsBackend.alloc(C);
      jsBackend.gradSums(buf(x), buf(dy), d, buf(p0), ws, sumDy, sumDyXc);
      expectClose(sumDy.view(), Float32Array.from(g), 1e-7);
      expectClose(sumDyXc.view(), Float32Array.from(gx), 1e-7);
    });

    it(`gradInput ${label}, also in place`, () => {
      const want = dy.map((g, i) => {
        const c = channelOf(i, d);
        return (
          (p1[c] as number) * g +
          (p2[c] as number) * ((x[i] as number) - (p0[c] as number)) +
          (p3[c] as number)
        );
      });
      const dx = jsBackend.alloc(n);
      const args = [buf(p0), buf(p1), buf(p2), buf(p3)] as const;
      jsBackend.gradInput(buf(x), buf(dy), dx, d, ...args, ws);
      expectClose(dx.view(), want, 1e-7);
      const dyDx = buf(dy);
      jsBackend.gradInput(buf(x), dyDx, dyDx, d, ...args, ws);
      expectClose(dyDx.view(), want, 1e-7);
    });
  }
});
