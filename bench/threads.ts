/**
 * Threads against one thread: `node --import tsx bench/threads.ts [reps] [threads]`.
 *
 * For each shape, the training forward (moments, then the scale-shift) and forward+backward
 * (and the gradient sums and gradient input) on the single-threaded SIMD build, on the threaded
 * back end with one thread (the chunked passes alone: their overhead) and with `threads`
 * threads (default: the available cores); and the copy, threaded the same way, as the limit of
 * what more threads give a memory-bound pass. Then the forward at small sizes, where the
 * threshold `MIN_THREADED_FLOATS` is chosen (run with it set to 0 there). Medians in ms.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { setFlagsFromString } from "node:v8";
import type { Backend, Dims, F32Buffer } from "../ts/backend.js";
import { init } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { nodeThreads } from "../ts/threads/platform.node.js";
import { startThreads } from "../ts/threads/start.js";
import { median } from "./stats.js";

const reps = Number(process.argv[2] ?? 15);
const threads = Number(process.argv[3] ?? availableParallelism());
setFlagsFromString("--no-liftoff");
await init({
  simd: readFileSync("dist/batchnorm-simd.wasm"),
  scalar: readFileSync("dist/batchnorm-scalar.wasm"),
});
const module = new WebAssembly.Module(readFileSync("dist/batchnorm-simd-shared.wasm"));
const single = resolveBackend("simd");
const one = await startThreads(nodeThreads, module, 1);
const many = await startThreads(nodeThreads, module, threads);
const oneAlways = await startThreads(nodeThreads, module, 1, { minFloats: 0 });
const manyAlways = await startThreads(nodeThreads, module, threads, { minFloats: 0 });

interface Set {
  x: F32Buffer;
  dy: F32Buffer;
  y: F32Buffer;
  ws: F32Buffer;
  c: F32Buffer[];
}

function setUp(be: Backend, d: Dims): Set {
  const n = d.outer * d.channels * d.inner;
  const x = be.alloc(n);
  const xv = x.view();
  for (let i = 0; i < n; i++) xv[i] = Math.sin(i) * 2 + 1;
  const dy = be.alloc(n);
  dy.view().set(x.view());
  const c = Array.from({ length: 9 }, () => be.alloc(d.channels));
  for (const b of c) b.view().fill(0.5);
  return { x, dy, y: be.alloc(n), ws: be.allocWorkspace(d.channels), c };
}

function free(s: Set) {
  for (const b of [s.x, s.dy, s.y, s.ws, ...s.c]) b.free();
}

type Op = (be: Backend, d: Dims, s: Set) => void;
const forward: Op = (be, d, s) => {
  const [mean, variance, scale, shift] = s.c as [F32Buffer, F32Buffer, F32Buffer, F32Buffer];
  be.moments(s.x, d, s.ws, mean, variance);
  be.scaleShift(s.x, s.y, d, mean, scale, shift, s.ws);
};
const forwardBackward: Op = (be, d, s) => {
  forward(be, d, s);
  const [mean, , , , s0, s1, k0, k1, k2] = s.c as F32Buffer[] as [
    F32Buffer,
    ...F32Buffer[],
  ] as F32Buffer[];
  be.gradSums(s.x, s.dy, d, mean as F32Buffer, s.ws, s0 as F32Buffer, s1 as F32Buffer);
  be.gradInput(
    s.x,
    s.dy,
    s.y,
    d,
    mean as F32Buffer,
    k0 as F32Buffer,
    k1 as F32Buffer,
    k2 as F32Buffer,
    s.ws,
  );
};
const copy: Op = (be, _, s) => be.copy(s.x, s.y);

function time(be: Backend, d: Dims, op: Op, n = reps): number {
  const s = setUp(be, d);
  const times: number[] = [];
  for (let r = 0; r < n + 3; r++) {
    const t0 = performance.now();
    op(be, d, s);
    if (r >= 3) times.push(performance.now() - t0);
  }
  free(s);
  return median(times);
}

const mb = (d: Dims) => (d.outer * d.channels * d.inner * 4) / 2 ** 20;
const shapes: [string, Dims][] = [
  ["NCHW 16x64x40x40 (6.25 MB)", { outer: 16, channels: 64, inner: 1600 }],
  ["NHWC 16x40x40x64 (6.25 MB)", { outer: 25600, channels: 64, inner: 1 }],
  ["NCHW 32x128x28x28 (12.3 MB)", { outer: 32, channels: 128, inner: 784 }],
  ["NHWC 32x28x28x128 (12.3 MB)", { outer: 25088, channels: 128, inner: 1 }],
  ["NCHW 64x64x56x56 (49 MB)", { outer: 64, channels: 64, inner: 3136 }],
  ["NHWC 64x56x56x64 (49 MB)", { outer: 200704, channels: 64, inner: 1 }],
];
console.log(
  `threads: ${many.threads}; reps ${reps}; medians in ms (speed-up vs the single-threaded build)`,
);
console.log("shape | op | single build | 1 thread chunked | N threads | speed-up | copy speed-up");
for (const [label, d] of shapes) {
  const copy1 = time(single, d, copy);
  const copyN = time(many, d, copy);
  for (const [name, op] of [
    ["forward", forward],
    ["fwd+bwd", forwardBackward],
  ] as const) {
    const a = time(single, d, op);
    const b = time(one, d, op);
    const before = many.stats;
    const c = time(many, d, op);
    const after = many.stats;
    const share = (after.callerChunks - before.callerChunks) / (after.chunks - before.chunks);
    console.log(
      `${label} | ${name} | ${a.toFixed(2)} | ${b.toFixed(2)} | ${c.toFixed(2)} | ${(a / c).toFixed(2)}× | ${(copy1 / copyN).toFixed(2)}× | caller ran ${(100 * share).toFixed(0)}% of chunks`,
    );
  }
  void mb;
}
console.log(
  "\nthreshold: training forward, threads on every size (minFloats 0) vs the single build",
);
for (const floats of [1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20]) {
  for (const [layout, d] of [
    ["NCHW", { outer: floats / (32 * 256), channels: 32, inner: 256 }],
    ["NHWC", { outer: floats / 32, channels: 32, inner: 1 }],
  ] as const) {
    const a = time(single, d, forward, 4 * reps);
    const b = time(oneAlways, d, forward, 4 * reps);
    const c = time(manyAlways, d, forward, 4 * reps);
    console.log(
      `${floats} floats ${layout}: single ${(a * 1000).toFixed(0)} us, 1 thread chunked ${(b * 1000).toFixed(0)} us, ${many.threads} threads ${(c * 1000).toFixed(0)} us (${(a / c).toFixed(2)}×)`,
    );
  }
}
for (const b of [one, many, oneAlways, manyAlways]) b.close();
