/**
 * Fused activations: batch norm + an activation (ReLU by default) in one pass against plain
 * batch norm and against batch norm followed by a separate activation pass over the tensor, on
 * the SIMD build's zero-copy path. Never asserted; the targets (fused ≤ 1.15× plain, and
 * ≥ 1.5× less than BN + a separate pass: the pass a JS user can write, "separate JS"; the SIMD
 * pass is shown too, see the README) are printed after the rows. Run by `npm run bench` after
 * its cases, and alone by `npm run bench:fused` (`bench/fused.ts`).
 *
 * - "plain": `BatchNorm` without activation (training forward; forward + backward).
 * - "fused": `BatchNorm` with the activation (the same passes, the activation inside them;
 *   backward recomputes z from x and the saved coefficients).
 * - "separate": plain `BatchNorm`, then an activation pass in place over y (a wasm SIMD pass:
 *   the back end's `scaleShift` with identity coefficients and the activation, which reads and
 *   writes y once); for backward, an activation-backward pass (reads y and dy, writes
 *   dy·act′: the back end's `gradInput` with k_dy = 1 and the activation) before the plain
 *   backward.
 * - "separate JS": the same with plain JS loops over the same wasm memory, in place, as a user
 *   would write them: for ReLU `y = Math.max(y, 0)`, and `dx = y > 0 ? dy : 0` (before the
 *   plain backward, into dx's tensor); for other activations activation.ts's `activate` and
 *   `derivative` per element.
 *
 * Before timing, each separate contestant's y, and for relu, relu6 and leakyRelu its dx, are
 * checked against the fused module's; a mismatch stops the run. For sigmoid, tanh and silu
 * (`--act`) the separate backward passes take act′ at y, not z (they have only y): their
 * times are the cost of such a pass, their dx not the gradient.
 *
 * The modules have weights and biases away from 1 and 0, as after training: with a fresh
 * module's zero biases the relu backward's thresholds are all +0, filled in at almost no
 * cost, which would hide what finding them costs.
 *
 * @module
 */
import { type Act, activate, derivative } from "../ts/activation.js";
import { BatchNorm, type Dims, type Layout, resolveBackend } from "./lib.js";
import { quantile, relError } from "./stats.js";
import { collect, now } from "./timing.js";

const SHAPES: { layout: Layout; shape: number[] }[] = [
  { layout: "NCHW", shape: [60, 1000] },
  { layout: "NCHW", shape: [8, 32, 16, 16] },
  { layout: "NHWC", shape: [8, 16, 16, 32] },
  { layout: "NCHW", shape: [64, 256, 14, 14] },
  { layout: "NHWC", shape: [64, 14, 14, 256] },
  { layout: "NCHW", shape: [32, 64, 56, 56] },
  { layout: "NHWC", shape: [32, 56, 56, 64] },
];

/** Median and p10–p90 of one contestant's ms per call. */
export interface Timed {
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
}

/** One row: a shape and op, the four contestants, and the ratios of their medians. */
export interface FusedRow {
  shapeLabel: string;
  op: "train fwd" | "fwd+bwd";
  activation: Act["kind"];
  plain: Timed;
  fused: Timed;
  separate: Timed;
  separateJs: Timed;
  fusedOverPlain: number;
  separateOverFused: number;
  separateJsOverFused: number;
}

/**
 * Ms per call of each of `fs`, timed in interleaved rounds (each round runs every function's
 * batch once, so that a change of machine load hits all of them alike, starting one function
 * later than the round before, so that none always runs after the same other), each batch
 * lasting about `sampleMs`, after a warm-up.
 */
function timeAll(fs: readonly (() => void)[], quick: boolean): Timed[] {
  const sampleMs = quick ? 3 : 10;
  const rounds = quick ? 9 : 31;
  const runs = fs.map((f) => {
    const t0 = now();
    while (now() - t0 < (quick ? 30 : 150)) f();
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
    for (let i = 0; i < fs.length; i++) {
      const j = (i + k) % fs.length;
      const [f, n] = [fs[j] as () => void, runs[j] as number];
      const s = now();
      for (let r = 0; r < n; r++) f();
      samples[j]?.push((now() - s) / n);
    }
  }
  return samples.map((v) => ({
    medianMs: quantile(v, 0.5),
    p10Ms: quantile(v, 0.1),
    p90Ms: quantile(v, 0.9),
  }));
}

type Tensor = ReturnType<BatchNorm["tensor"]>;

/**
 * Throws unless each separate pipeline (plain BN, then `pass`; for backward, `back`, then the
 * plain backward) gives the fused module's y, and for relu, relu6 and leakyRelu its dx: the
 * contestants must do the same work. 1e-4 of the largest value: the same float32 operations
 * give y (exactly but for −0 against +0), and dx differs only by the order of float32
 * additions over at most 10⁵ values a channel (about 10⁻⁵ at worst in these tensors), where a
 * wrong derivative is off by the size of dx itself.
 */
function checkSeparate(
  kind: Act["kind"],
  t: { plain: BatchNorm; fused: BatchNorm; X: Tensor; Y: Tensor; DY: Tensor; DX: Tensor },
  pipelines: readonly (readonly [string, () => void, () => void])[],
): void {
  t.fused.forward(t.X, { out: t.Y });
  t.fused.backward(t.DY, { out: t.DX });
  const want = { y: t.Y.data.slice(), dx: t.DX.data.slice() };
  const tolerance = 1e-4;
  for (const [name, pass, back] of pipelines) {
    t.plain.forward(t.X, { out: t.Y });
    pass();
    const errors: [string, number][] = [["y", relError(t.Y.data, want.y)]];
    if (kind === "relu" || kind === "relu6" || kind === "leakyRelu") {
      back();
      t.plain.backward(t.DX, { out: t.DX });
      errors.push(["dx", relError(t.DX.data, want.dx)]);
    }
    for (const [what, err] of errors) {
      if (!(err <= tolerance)) {
        throw new Error(`fused rows: ${name}'s ${what} is off the fused module's by ${err}`);
      }
    }
  }
}

const ms = (t: Timed) => `${t.medianMs.toFixed(4)} (${t.p10Ms.toFixed(4)}–${t.p90Ms.toFixed(4)})`;

/**
 * Times the fused activation `kind` against plain batch norm and a separate pass on every
 * shape, printing each row with `print` as it is measured. Needs `init()` done.
 */
export function benchFused(
  kind: Act["kind"],
  quick: boolean,
  print: (line: string) => void,
): FusedRow[] {
  const be = resolveBackend("simd");
  const act: Act = { kind, negativeSlope: 0.01 };
  print(`fused BN+${kind} vs plain BN vs BN + separate ${kind} pass · SIMD build, zero-copy`);
  print("ms per call: median (p10–p90)");
  const rows: FusedRow[] = [];
  for (const { layout, shape } of SHAPES) {
    collect(true);
    const C = (layout === "NCHW" ? shape[1] : shape[shape.length - 1]) as number;
    const n = shape.reduce((a, b) => a * b, 1);
    const plain = new BatchNorm(C, { layout, backend: "simd" });
    const fused = new BatchNorm(C, { layout, backend: "simd", activation: kind });
    for (const m of [plain, fused]) {
      for (let c = 0; c < C; c++) {
        (m.weight as Float32Array)[c] = 1 + 0.2 * Math.cos(1.3 * c);
        (m.bias as Float32Array)[c] = 0.5 * Math.sin(c);
      }
    }
    const [X, Y, DY, DX] = [0, 1, 2, 3].map(() => plain.tensor(shape)) as [
      Tensor,
      Tensor,
      Tensor,
      Tensor,
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
    // The views are taken per call: a memory growth detaches old ones.
    const separateJsPass =
      kind === "relu"
        ? () => {
            const y = Y.data;
            for (let i = 0; i < n; i++) y[i] = Math.max(y[i] as number, 0);
          }
        : () => {
            const y = Y.data;
            for (let i = 0; i < n; i++) y[i] = activate(act, y[i] as number);
          };
    const separateJsBack =
      kind === "relu"
        ? () => {
            const [y, dy, dx] = [Y.data, DY.data, DX.data];
            for (let i = 0; i < n; i++) dx[i] = (y[i] as number) > 0 ? (dy[i] as number) : 0;
          }
        : () => {
            const [y, dy, dx] = [Y.data, DY.data, DX.data];
            for (let i = 0; i < n; i++) {
              dx[i] = (dy[i] as number) * derivative(act, y[i] as number);
            }
          };
    checkSeparate(kind, { plain, fused, X, Y, DY, DX }, [
      ["separate", separatePass, separateBack],
      ["separate JS", separateJsPass, separateJsBack],
    ]);

    const [trainPlain, trainFused, trainSep, trainSepJs] = timeAll(
      [
        () => plain.forward(X, { out: Y }),
        () => fused.forward(X, { out: Y }),
        () => {
          plain.forward(X, { out: Y });
          separatePass();
        },
        () => {
          plain.forward(X, { out: Y });
          separateJsPass();
        },
      ],
      quick,
    ) as [Timed, Timed, Timed, Timed];
    const [fbPlain, fbFused, fbSep, fbSepJs] = timeAll(
      [
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
        () => {
          plain.forward(X, { out: Y });
          separateJsPass();
          separateJsBack();
          plain.backward(DX, { out: DX });
        },
      ],
      quick,
    ) as [Timed, Timed, Timed, Timed];
    const label = `${layout} ${shape.join("x")}`;
    for (const [op, plainT, fusedT, separate, separateJs] of [
      ["train fwd", trainPlain, trainFused, trainSep, trainSepJs],
      ["fwd+bwd", fbPlain, fbFused, fbSep, fbSepJs],
    ] as const) {
      const row: FusedRow = {
        shapeLabel: label,
        op,
        activation: kind,
        plain: plainT,
        fused: fusedT,
        separate,
        separateJs,
        fusedOverPlain: fusedT.medianMs / plainT.medianMs,
        separateOverFused: separate.medianMs / fusedT.medianMs,
        separateJsOverFused: separateJs.medianMs / fusedT.medianMs,
      };
      rows.push(row);
      print(
        `${label} ${op}: plain ${ms(plainT)}, fused ${ms(fusedT)}, separate ${ms(separate)}, ` +
          `separate JS ${ms(separateJs)}; fused/plain ${row.fusedOverPlain.toFixed(2)}×, ` +
          `separate/fused ${row.separateOverFused.toFixed(2)}×, ` +
          `separate JS/fused ${row.separateJsOverFused.toFixed(2)}×`,
      );
    }
    for (const t of [X, Y, DY, DX]) t.dispose();
    for (const b of [zero, one, ws]) b.free();
    plain.dispose();
    fused.dispose();
  }
  print("targets (not asserted): fused/plain ≤ 1.15×, separate JS/fused ≥ 1.5× (the SIMD pass's");
  print("separate/fused is shown for the record: in the cache, 1.5× there needs a free fusion)");
  return rows;
}
