/**
 * Fused activations: batch norm + ReLU in one pass against plain batch norm and against batch
 * norm followed by a separate ReLU pass over the tensor, on the SIMD build's zero-copy path.
 * Never asserted; the targets (fused ≤ 1.15× plain, and ≥ 1.5× less than BN + a separate pass)
 * are printed next to the ratios.
 *
 * - "plain": `BatchNorm` without activation (training forward; forward + backward).
 * - "fused": `BatchNorm` with `activation: "relu"` (the same passes, ReLU inside them; backward
 *   recomputes z from x and the saved coefficients).
 * - "separate": plain `BatchNorm`, then a ReLU pass in place over y (a wasm SIMD pass: the
 *   back end's `scaleShift` with identity coefficients and ReLU, which reads and writes y
 *   once); for backward, a ReLU-backward pass (reads y and dy, writes dy·[y > 0]: the back
 *   end's `gradInput` with k_dy = 1 and ReLU) before the plain backward.
 *
 * Usage: node --expose-gc --import tsx bench/fused.ts [--quick] [--act relu]
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Act } from "../ts/activation.js";
import { BatchNorm, type Dims, init, type Layout, resolveBackend } from "./lib.js";
import { median } from "./stats.js";
import { collect, now } from "./timing.js";

const argv = process.argv.slice(2);
const QUICK = argv.includes("--quick");
const ACT = (argv[argv.indexOf("--act") + 1] ?? "relu") as Act["kind"];
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

const SHAPES: { layout: Layout; shape: number[] }[] = [
  { layout: "NCHW", shape: [60, 1000] },
  { layout: "NCHW", shape: [8, 32, 16, 16] },
  { layout: "NHWC", shape: [8, 16, 16, 32] },
  { layout: "NCHW", shape: [64, 256, 14, 14] },
  { layout: "NHWC", shape: [64, 14, 14, 256] },
  { layout: "NCHW", shape: [32, 64, 56, 56] },
  { layout: "NHWC", shape: [32, 56, 56, 64] },
];

/**
 * Median ms per call of each of `fs`, timed in interleaved rounds (each round runs every
 * function's batch once, so that a change of machine load hits all of them alike), each batch
 * lasting about `sampleMs`, after a warm-up.
 */
function timeAll(fs: readonly (() => void)[]): number[] {
  const sampleMs = QUICK ? 3 : 10;
  const rounds = QUICK ? 9 : 31;
  const runs = fs.map((f) => {
    const t0 = now();
    while (now() - t0 < (QUICK ? 30 : 150)) f();
    let n = 1;
    for (;;) {
      const s = now();
      for (let i = 0; i < n; i++) f();
      if (now() - s >= sampleMs) return n;
      n *= 2;
    }
  });
  const samples: number[][] = fs.map(() => []);
  for (let k = 0; k < rounds; k++) {
    fs.forEach((f, j) => {
      const n = runs[j] as number;
      const s = now();
      for (let i = 0; i < n; i++) f();
      samples[j]?.push((now() - s) / n);
    });
  }
  return samples.map(median);
}

async function main() {
  const root = (p: string) => readFileSync(join(ROOT, p));
  await init({
    simd: root("dist/batchnorm-simd.wasm"),
    scalar: root("dist/batchnorm-scalar.wasm"),
  });
  const be = resolveBackend("simd");
  const act: Act = { kind: ACT, negativeSlope: 0.01 };
  console.log(`fused BN+${ACT} vs plain BN vs BN + separate ${ACT} pass · SIMD build, zero-copy`);
  console.log(
    "shape".padEnd(24) +
      "op".padEnd(10) +
      "plain ms".padStart(10) +
      "fused ms".padStart(10) +
      "separate".padStart(10) +
      "fused/plain".padStart(13) +
      "separate/fused".padStart(16),
  );
  for (const { layout, shape } of SHAPES) {
    collect(true);
    const C = (layout === "NCHW" ? shape[1] : shape[shape.length - 1]) as number;
    const n = shape.reduce((a, b) => a * b, 1);
    const plain = new BatchNorm(C, { layout, backend: "simd" });
    const fused = new BatchNorm(C, { layout, backend: "simd", activation: ACT });
    const [X, Y, DY, DX] = [0, 1, 2, 3].map(() => plain.tensor(shape)) as [
      ReturnType<BatchNorm["tensor"]>,
      ReturnType<BatchNorm["tensor"]>,
      ReturnType<BatchNorm["tensor"]>,
      ReturnType<BatchNorm["tensor"]>,
    ];
    const xs = X.data;
    for (let i = 0; i < n; i++) xs[i] = Math.sin(i * 0.37) * 2 + 0.3;
    const dys = DY.data;
    for (let i = 0; i < n; i++) dys[i] = Math.cos(i * 0.11);
    // The separate pass: identity coefficients (y = act((y − 0)·1 + 0)) over y, in place.
    const dims: Dims =
      layout === "NCHW"
        ? { outer: shape[0] as number, channels: C, inner: n / (C * (shape[0] as number)) }
        : { outer: n / C, channels: C, inner: 1 };
    const zero = be.alloc(C);
    const one = be.alloc(C);
    one.view().fill(1);
    const ws = be.allocWorkspace(C);
    const fused3 = { act, scale: one, shift: zero };
    const separatePass = () => be.scaleShift(Y.buffer, Y.buffer, dims, zero, one, zero, ws, act);
    // dz = dy·act′(y) (for ReLU, act′(z) = [y > 0]), in place over dx's tensor.
    const separateBack = () =>
      be.gradInput(Y.buffer, DY.buffer, DX.buffer, dims, zero, one, zero, zero, ws, fused3);

    const [trainPlain, trainFused, trainSep] = timeAll([
      () => plain.forward(X, { out: Y }),
      () => fused.forward(X, { out: Y }),
      () => {
        plain.forward(X, { out: Y });
        separatePass();
      },
    ]) as [number, number, number];
    const [fbPlain, fbFused, fbSep] = timeAll([
      () => {
        plain.forward(X, { out: Y });
        plain.backward(DY, { out: DX });
      },
      () => {
        fused.forward(X, { out: Y });
        fused.backward(DY, { out: DX });
      },
      () => {
        plain.forward(X, { out: Y });
        separatePass();
        separateBack();
        plain.backward(DX, { out: DX });
      },
    ]) as [number, number, number];
    const label = `${layout} ${shape.join("x")}`;
    for (const [op, p, f, s] of [
      ["train fwd", trainPlain, trainFused, trainSep],
      ["fwd+bwd", fbPlain, fbFused, fbSep],
    ] as const) {
      console.log(
        label.padEnd(24) +
          op.padEnd(10) +
          p.toFixed(4).padStart(10) +
          f.toFixed(4).padStart(10) +
          s.toFixed(4).padStart(10) +
          `${(f / p).toFixed(2)}×`.padStart(13) +
          `${(s / f).toFixed(2)}×`.padStart(16),
      );
    }
    for (const t of [X, Y, DY, DX]) t.dispose();
    for (const b of [zero, one, ws]) b.free();
    plain.dispose();
    fused.dispose();
  }
  console.log("targets (not asserted): fused/plain ≤ 1.15×, separate/fused ≥ 1.5×");
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
