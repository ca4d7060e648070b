/**
 * Times the four kernel passes alone (no wrapper, no O(C) work) against the copy, for profiling
 * kernel changes: `node --import tsx bench/kernels.ts [simd|scalar|js] [reps] [filter]`.
 *
 * Each op's bandwidth is followed by its share of the copy's (`%` of `bn_copy` on the same
 * data). `filter` keeps the shapes whose label contains it; `BN_DIST=dir` loads the builds
 * from `dir` instead of `dist/`, so that an old and a new build can be run alternately;
 * `BN_CLOCK=cpu` times with this process's CPU time instead of the wall clock.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import type { Dims, F32Buffer } from "../ts/backend.js";
import { init } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { copyBuffers } from "./lib.js";
import { median } from "./stats.js";

const kind = (process.argv[2] ?? "simd") as "simd" | "scalar" | "js";
const reps = Number(process.argv[3] ?? 15);
const filter = process.argv[4] ?? "";
const dist = process.env.BN_DIST ?? "dist";
// Compile the wasm with V8's optimizing tier from the start. Otherwise each function first runs
// as baseline (Liftoff) code and is recompiled in the background when hot; on a busy machine
// that came late for the largest kernel (moments of [8, 32, 256]: 38 us baseline, 12 us
// optimized), so timings mixed the two tiers.
setFlagsFromString("--no-liftoff");
await init({
  simd: readFileSync(`${dist}/batchnorm-simd.wasm`),
  scalar: readFileSync(`${dist}/batchnorm-scalar.wasm`),
});
const be = resolveBackend(kind);
const copier = resolveBackend("simd");

const allShapes: [string, Dims][] = [
  ["NCHW 8x32x16x16", { outer: 8, channels: 32, inner: 256 }],
  ["NHWC 8x16x16x32", { outer: 2048, channels: 32, inner: 1 }],
  ["2-D 256x1024", { outer: 256, channels: 1024, inner: 1 }],
  ["NCHW 64x256x14x14", { outer: 64, channels: 256, inner: 196 }],
  ["NHWC 64x14x14x256", { outer: 12544, channels: 256, inner: 1 }],
  ["NCHW 32x64x56x56", { outer: 32, channels: 64, inner: 3136 }],
  ["NHWC 32x56x56x64", { outer: 100352, channels: 64, inner: 1 }],
  // Short channels-first runs and small channels-last tensors, all in the cache.
  ["NCL 256x64x10", { outer: 256, channels: 64, inner: 10 }],
  ["NCL 256x64x1", { outer: 256, channels: 64, inner: 1 }],
  ["NCHW 32x256x3x3", { outer: 32, channels: 256, inner: 9 }],
  ["NCHW 32x512x7x7", { outer: 32, channels: 512, inner: 49 }],
  ["2-D 60x100", { outer: 60, channels: 100, inner: 1 }],
  ["2-D 60x1000", { outer: 60, channels: 1000, inner: 1 }],
  ["2-D 2x1000", { outer: 2, channels: 1000, inner: 1 }],
  ["NHWC 16x32x32x3", { outer: 16384, channels: 3, inner: 1 }],
  ["NHWC 4x7x7x1000", { outer: 196, channels: 1000, inner: 1 }],
  // Every run length from 2 to 16 (inner = 1 is the channels-last case above).
  ...Array.from({ length: 15 }, (_, k): [string, Dims] => [
    `inner ${k + 2} 64x64`,
    { outer: 64, channels: 64, inner: k + 2 },
  ]),
];
const shapes = allShapes.filter(([label]) => label.includes(filter));

/**
 * Milliseconds now: wall-clock time, or with `BN_CLOCK=cpu` this process's CPU time, which
 * leaves out the time other processes hold the core (the machine may be shared; memory
 * bandwidth and caches are still shared with them).
 */
const now =
  process.env.BN_CLOCK === "cpu"
    ? () => {
        const u = process.cpuUsage();
        return (u.user + u.system) / 1000;
      }
    : () => performance.now();

const time = (f: () => void, n: number): number => {
  // Untimed calls first, so that V8 has tiered the wasm up from its baseline compiler.
  for (let i = 0; i < 3; i++) f();
  const t: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    f();
    t.push(now() - t0);
  }
  return median(t);
};

for (const [label, d] of shapes) {
  const n = d.outer * d.channels * d.inner;
  const C = d.channels;
  const x = be.alloc(n);
  const dy = be.alloc(n);
  const out = be.alloc(n);
  const xv = x.view();
  const dyv = dy.view();
  for (let i = 0; i < n; i++) {
    xv[i] = Math.sin(i) * 2 + 0.5;
    dyv[i] = Math.cos(i * 1.3);
  }
  const { src, dst, free: freeCopy } = copyBuffers(xv);
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
  // Share of the copy's bandwidth: bytes moved per ms, against the copy's 2 passes.
  const pct = (passes: number, ms: number) => `${Math.round((100 * passes * tc) / (2 * ms))}%`;
  const op = (name: string, passes: number, ms: number) =>
    `${name} ${ms.toFixed(4)} (${gbs(passes, ms)} ${pct(passes, ms)})`;
  console.log(
    `${label.padEnd(20)} copy ${tc.toFixed(4)} ms ${gbs(2, tc)} GB/s | ` +
      [
        op("moments", 1, tm),
        op("scaleShift", 2, ts),
        op("gradSums", 2, tg),
        op("gradInput", 3, ti),
      ].join(" "),
  );
  for (const b of [x, dy, out, ws, ...ch]) b.free();
  freeCopy();
}
