/**
 * Times the four kernel passes alone (no wrapper, no O(C) work) against the copy, for profiling
 * kernel changes: `node --import tsx bench/kernels.ts [simd|scalar|js] [reps]`.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import type { Dims, F32Buffer } from "../ts/backend.js";
import { init } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { median } from "./stats.js";

const kind = (process.argv[2] ?? "simd") as "simd" | "scalar" | "js";
const reps = Number(process.argv[3] ?? 15);
await init({
  simd: readFileSync("dist/batchnorm-simd.wasm"),
  scalar: readFileSync("dist/batchnorm-scalar.wasm"),
});
const be = resolveBackend(kind);
const copier = resolveBackend("simd");

const shapes: [string, Dims][] = [
  ["NCHW 8x32x16x16", { outer: 8, channels: 32, inner: 256 }],
  ["NHWC 8x16x16x32", { outer: 2048, channels: 32, inner: 1 }],
  ["2-D 256x1024", { outer: 256, channels: 1024, inner: 1 }],
  ["NCHW 64x256x14x14", { outer: 64, channels: 256, inner: 196 }],
  ["NHWC 64x14x14x256", { outer: 12544, channels: 256, inner: 1 }],
  ["NCHW 32x64x56x56", { outer: 32, channels: 64, inner: 3136 }],
  ["NHWC 32x56x56x64", { outer: 100352, channels: 64, inner: 1 }],
];

const time = (f: () => void, n: number): number => {
  const t: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    f();
    t.push(performance.now() - t0);
  }
  return median(t);
};

for (const [label, d] of shapes) {
  const n = d.outer * d.channels * d.inner;
  const C = d.channels;
  const x = be.alloc(n);
  const dy = be.alloc(n);
  const out = be.alloc(n);
  const src = copier.alloc(n);
  const dst = copier.alloc(n);
  const xv = x.view();
  const dyv = dy.view();
  for (let i = 0; i < n; i++) {
    xv[i] = Math.sin(i) * 2 + 0.5;
    dyv[i] = Math.cos(i * 1.3);
  }
  const ch: F32Buffer[] = Array.from({ length: 6 }, () => be.alloc(C));
  for (const b of ch) b.view().fill(0.7);
  const [mean, variance, k1, k2, k3, s2] = ch as [
    F32Buffer,
    F32Buffer,
    F32Buffer,
    F32Buffer,
    F32Buffer,
    F32Buffer,
  ];
  const ws = be.allocWorkspace(C);
  // Small sizes: many runs per timing so the call overhead does not dominate.
  const inner = Math.max(1, Math.round(2e6 / n));
  const loop = (f: () => void) => () => {
    for (let i = 0; i < inner; i++) f();
  };
  const per = (ms: number) => ms / inner;
  const tm = per(
    time(
      loop(() => be.moments(x, d, ws, mean, variance)),
      reps,
    ),
  );
  const ts = per(
    time(
      loop(() => be.scaleShift(x, out, d, mean, k1, k2, ws)),
      reps,
    ),
  );
  const tg = per(
    time(
      loop(() => be.gradSums(x, dy, d, mean, ws, k3, s2)),
      reps,
    ),
  );
  const ti = per(
    time(
      loop(() => be.gradInput(x, dy, out, d, mean, k1, k2, k3, ws)),
      reps,
    ),
  );
  const tc = per(
    time(
      loop(() => copier.copy(src, dst)),
      reps,
    ),
  );
  const gbs = (passes: number, ms: number) => ((passes * 4 * n) / ms / 1e6).toFixed(1);
  console.log(
    `${label.padEnd(20)} copy ${tc.toFixed(3)} ms ${gbs(2, tc)} GB/s | moments ${tm.toFixed(3)} (${gbs(1, tm)}) ` +
      `scaleShift ${ts.toFixed(3)} (${gbs(2, ts)}) gradSums ${tg.toFixed(3)} (${gbs(2, tg)}) ` +
      `gradInput ${ti.toFixed(3)} (${gbs(3, ti)})`,
  );
  for (const b of [x, dy, out, src, dst, ws, ...ch]) b.free();
}
