/**
 * `npm run bench`: batch norm on our SIMD, scalar and JS back ends (copy API and zero-copy
 * path) and on TensorFlow.js (wasm and CPU back ends), side by side, in one process.
 *
 * For every shape and op (a "case"), every contestant is first run once and its result compared
 * with the JS back end's (a wrong answer stops the run), then warmed up, then timed in rounds:
 * each round gives every contestant one sample, in turn, so that drift and noise of this shared
 * machine hit all of them alike. A sample is the mean time of `k` back-to-back runs (`k` makes a
 * sample last a few milliseconds). Reported: the median sample and the p10–p90 spread. Next to
 * each time: the effective bandwidth over the bytes the op must move at least, and that of a
 * wasm SIMD copy of the same size timed in the same rounds.
 *
 * Usage: node --expose-gc --import tsx bench/run.ts [--quick] [--no-tfjs] [--filter text]
 *        [--json path] [--svg path]
 * `--filter` keeps the cases whose label contains the text (e.g. "NHWC 32x56", "fwd+bwd") and
 * then writes no files unless `--json`/`--svg` are given; `--quick` writes
 * `bench/results/quick.json` and no chart, and runs TF.js's CPU back end on the small shapes only.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import type { Tensor as TfTensor } from "@tensorflow/tfjs-core";
import type { Backend } from "../ts/backend.js";
import { BatchNorm, init, type Layout, type StateDict } from "../ts/index.node.js";
import { resolveBackend } from "../ts/init.js";
import { renderChart } from "./chart.js";
import { median, quantile, relError } from "./stats.js";
import { loadTfjs, type Tf } from "./tfjs.js";
import type { BenchResults, CaseResult, ContestantResult, Impl, OpId, Path } from "./types.js";

// ---------------------------------------------------------------------------------------------
// What is measured

/** The ops, with the passes of 4·n bytes each must make over memory at least. */
const OPS: readonly { id: OpId; label: string; passes: number }[] = [
  { id: "train", label: "training fwd", passes: 3 }, // read x (moments); read x, write y
  { id: "infer", label: "inference fwd", passes: 2 }, // read x, write y
  { id: "bwd", label: "backward", passes: 5 }, // read x, dy (sums); read x, dy, write dx
  { id: "fwdbwd", label: "fwd+bwd", passes: 8 },
];

interface ShapeSpec {
  /** "2-D" input is [N, C] in either layout: one memory order, one case. */
  kind: Layout | "2-D";
  shape: number[];
}

/** Cache-resident, mid-size (ResNet stage 4), 25 MB (ResNet stage 1), and a dense layer. */
const SHAPES: readonly ShapeSpec[] = [
  { kind: "NCHW", shape: [8, 32, 16, 16] },
  { kind: "NHWC", shape: [8, 16, 16, 32] },
  { kind: "2-D", shape: [256, 1024] },
  { kind: "NCHW", shape: [64, 256, 14, 14] },
  { kind: "NHWC", shape: [64, 14, 14, 256] },
  { kind: "NCHW", shape: [32, 64, 56, 56] },
  { kind: "NHWC", shape: [32, 56, 56, 64] },
];

const shapeLabel = (s: ShapeSpec) => `${s.kind} ${s.shape.join("x")}`;
const EPS = 1e-5;
/** Largest relative error accepted: ours (float32 with float64 statistics) and TF.js (float32). */
const TOLERANCE = { ours: 1e-4, tfjs: 2e-3 };

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const option = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = argv.includes("--quick");
const FILTER = option("--filter");
const WITH_TFJS = !argv.includes("--no-tfjs");
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** A full run updates the results and the chart the README shows; --quick and --filter do not. */
const JSON_OUT =
  option("--json") ??
  (FILTER
    ? undefined
    : join(ROOT, QUICK ? "bench/results/quick.json" : "bench/results/latest.json"));
const SVG_OUT = option("--svg") ?? (FILTER || QUICK ? undefined : join(ROOT, "docs/bench.svg"));

/** Time budgets per case (all contestants together); a slow contestant gets fewer samples. */
const PLAN = QUICK
  ? { warmupMs: 30, maxWarmupMs: 200, sampleMs: 3, caseMs: 600, minRounds: 5, maxRounds: 9 }
  : { warmupMs: 80, maxWarmupMs: 400, sampleMs: 5, caseMs: 2000, minRounds: 9, maxRounds: 25 };
/**
 * Samples of a contestant however slow it is: more for those the targets compare (our SIMD and
 * JS back ends, TF.js-wasm, the copy), fewer for the rest (TF.js's CPU back end takes seconds
 * per run on the large shapes).
 */
const minSamples = (impl: Impl, path: Path) =>
  (impl === "simd" || impl === "js") && path === "zero-copy"
    ? QUICK
      ? 3
      : 5
    : impl === "copy" || impl === "tfjs-wasm"
      ? QUICK
        ? 3
        : 5
      : QUICK
        ? 1
        : 2;

// ---------------------------------------------------------------------------------------------
// Contestants

/** What an op produced, read back for the correctness check. */
interface Outputs {
  y?: Float32Array | undefined;
  dx?: Float32Array | undefined;
  dWeight?: Float32Array | undefined;
  dBias?: Float32Array | undefined;
}

interface Contestant {
  impl: Impl;
  path: Path;
  /** Untimed, before each sample: select a TF.js back end, set a module's mode. */
  enter?: () => unknown;
  /** Untimed, before each timed run (e.g. the forward that a backward differentiates). */
  prepare?: () => void;
  run: () => void;
  /** Runs the op once more (with `prepare`) and reads its results back. */
  outputs?: () => Outputs;
}

const contestantName = (c: { impl: Impl; path: Path }) =>
  c.path === "" ? c.impl : `${c.impl} ${c.path === "zero-copy" ? "0-copy" : "copy-API"}`;

/** Deterministic normal variates (mulberry32 + Box–Muller). */
function normals(n: number, seed: number, mean = 0, sd = 1): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const a = 2 * Math.PI * uniform();
    out[i] = mean + sd * r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = mean + sd * r * Math.sin(a);
  }
  return out;
}

/** Everything the cases of one shape share: inputs, modules, tensors. */
interface Rig {
  n: number;
  /** The contestants of one op, with every module reset to the initial state. */
  contestants(op: OpId): Contestant[];
  /** The JS back end's results, which every contestant must match. */
  reference: Record<OpId, Outputs>;
  dispose(): void;
}

function makeRig(spec: ShapeSpec, tf: Tf | undefined): Rig {
  const shape = spec.shape;
  const layout: Layout = spec.kind === "NHWC" ? "NHWC" : "NCHW";
  const channels = (layout === "NCHW" ? shape[1] : shape[shape.length - 1]) as number;
  const n = shape.reduce((a, b) => a * b, 1);
  const x = normals(n, 1, 0.5, 2);
  const dy = normals(n, 2);
  const state: StateDict = {
    weight: normals(channels, 3, 1, 0.2),
    bias: normals(channels, 4, 0, 0.2),
    running_mean: normals(channels, 5, 0.5, 0.2),
    running_var: normals(channels, 6, 4, 0.5).map(Math.abs),
    num_batches_tracked: 0,
  };
  const disposers: (() => void)[] = [];
  const modules: BatchNorm[] = [];
  const byOp: ((op: OpId) => Contestant[])[] = [];

  // The yardstick: a wasm SIMD copy of n floats (2 passes), through the back end's bn_copy.
  const simd: Backend = resolveBackend("simd");
  const src = simd.alloc(n);
  const dst = simd.alloc(n);
  src.view().set(x);
  disposers.push(() => {
    src.free();
    dst.free();
  });
  byOp.push(() => [{ impl: "copy", path: "", run: () => simd.copy(src, dst) }]);

  for (const impl of ["simd", "scalar", "js"] as const) {
    const zero = new BatchNorm(channels, { layout, backend: impl });
    const copy = new BatchNorm(channels, { layout, backend: impl });
    modules.push(zero, copy);
    const X = zero.tensor(shape);
    const Y = zero.tensor(shape);
    const DY = zero.tensor(shape);
    const DX = zero.tensor(shape);
    X.data.set(x);
    DY.data.set(dy);
    disposers.push(() => {
      for (const t of [X, Y, DY, DX]) t.dispose();
      zero.dispose();
      copy.dispose();
    });

    let zeroGrads: { dWeight: Float32Array | null; dBias: Float32Array | null } | undefined;
    let copyY: Float32Array | undefined;
    let copyGrads:
      | { dx: Float32Array; dWeight: Float32Array | null; dBias: Float32Array | null }
      | undefined;
    const zeroFwd = () => void zero.forward(X, { out: Y });
    const zeroBwd = () => {
      zeroGrads = zero.backward(DY, { out: DX });
    };
    const copyFwd = () => {
      copyY = copy.forward(x, shape);
    };
    const copyBwd = () => {
      copyGrads = copy.backward(dy);
    };
    const zeroOut = (y: boolean, g: boolean): Outputs => ({
      ...(y && { y: Y.data.slice() }),
      ...(g && {
        dx: DX.data.slice(),
        dWeight: zeroGrads?.dWeight ?? undefined,
        dBias: zeroGrads?.dBias ?? undefined,
      }),
    });
    const copyOut = (y: boolean, g: boolean): Outputs => ({
      ...(y && { y: copyY }),
      ...(g && {
        dx: copyGrads?.dx,
        dWeight: copyGrads?.dWeight ?? undefined,
        dBias: copyGrads?.dBias ?? undefined,
      }),
    });
    const checked = (c: Contestant, read: () => Outputs): Contestant => ({
      ...c,
      outputs: () => {
        c.prepare?.();
        c.run();
        return read();
      },
    });
    const zc = { impl, path: "zero-copy" as const };
    const ca = { impl, path: "copy API" as const };
    const mode = (bn: BatchNorm, training: boolean) => () => void bn.train(training);
    byOp.push((op) => {
      switch (op) {
        case "train":
        case "infer": {
          const t = op === "train";
          return [
            checked({ ...zc, enter: mode(zero, t), run: zeroFwd }, () => zeroOut(true, false)),
            checked({ ...ca, enter: mode(copy, t), run: copyFwd }, () => copyOut(true, false)),
          ];
        }
        case "bwd":
          return [
            checked({ ...zc, enter: mode(zero, true), prepare: zeroFwd, run: zeroBwd }, () =>
              zeroOut(false, true),
            ),
            checked({ ...ca, enter: mode(copy, true), prepare: copyFwd, run: copyBwd }, () =>
              copyOut(false, true),
            ),
          ];
        case "fwdbwd": {
          const zeroBoth = () => {
            zeroFwd();
            zeroBwd();
          };
          const copyBoth = () => {
            copyFwd();
            copyBwd();
          };
          return [
            checked({ ...zc, enter: mode(zero, true), run: zeroBoth }, () => zeroOut(true, true)),
            checked({ ...ca, enter: mode(copy, true), run: copyBoth }, () => copyOut(true, true)),
          ];
        }
      }
    });
  }

  // TF.js broadcasts per-channel vectors along the last axis: it runs the channels-last shapes.
  if (tf !== undefined && spec.kind !== "NCHW") {
    for (const name of ["wasm", "cpu"] as const) {
      // --quick leaves out TF.js's CPU back end where one of its runs takes seconds.
      if (QUICK && name === "cpu" && n > 2 ** 20) continue;
      const impl: Impl = name === "wasm" ? "tfjs-wasm" : "tfjs-cpu";
      const enter = () => tf.setBackend(name);
      // Tensors are made while their back end is selected, so they live in its memory.
      tf.setBackend(name);
      const X = tf.tensor(x, shape);
      const DY = tf.tensor(dy, shape);
      const gamma = tf.tensor1d(state.weight as Float32Array);
      const beta = tf.tensor1d(state.bias as Float32Array);
      const mean = tf.tensor1d(state.running_mean as Float32Array);
      const variance = tf.tensor1d(state.running_var as Float32Array);
      disposers.push(() => tf.dispose([X, DY, gamma, beta, mean, variance]));
      const axes = shape.slice(0, -1).map((_, i) => i);
      const trainFwd = (a: TfTensor, g: TfTensor, b: TfTensor): TfTensor => {
        const m = tf.moments(a, axes);
        return tf.batchNorm(a, m.mean, m.variance, b, g, EPS);
      };
      const inferFwd = () => tf.batchNorm(X, mean, variance, beta, gamma, EPS);
      const grads = tf.grads((a: TfTensor, g: TfTensor, b: TfTensor) => trainFwd(a, g, b));
      const read = (t: TfTensor | undefined) => t?.dataSync() as Float32Array | undefined;
      const base = { impl, path: "" as const, enter };
      byOp.push((op) => {
        switch (op) {
          case "train":
            return [
              {
                ...base,
                run: () => tf.tidy(() => void trainFwd(X, gamma, beta)),
                outputs: () => tf.tidy(() => ({ y: read(trainFwd(X, gamma, beta)) })),
              },
            ];
          case "infer":
            return [
              {
                ...base,
                run: () => tf.tidy(() => void inferFwd()),
                outputs: () => tf.tidy(() => ({ y: read(inferFwd()) })),
              },
            ];
          case "bwd":
            // tf.grads records a forward and runs its backward in one call: see fwd+bwd. The
            // backward alone is reported as fwd+bwd minus training fwd (marked derived).
            return [];
          case "fwdbwd":
            return [
              {
                ...base,
                run: () => tf.tidy(() => void grads([X, gamma, beta], DY)),
                outputs: () =>
                  tf.tidy(() => {
                    const [dx, dg, db] = grads([X, gamma, beta], DY);
                    const y = read(trainFwd(X, gamma, beta));
                    return { y, dx: read(dx), dWeight: read(dg), dBias: read(db) };
                  }),
              },
            ];
        }
      });
    }
  }

  // The reference: the JS back end, in a module of its own.
  const ref = new BatchNorm(channels, { layout, backend: "js" });
  ref.loadStateDict(state);
  const y = ref.forward(x, shape);
  const g = ref.backward(dy);
  const grads = { dx: g.dx, dWeight: g.dWeight ?? undefined, dBias: g.dBias ?? undefined };
  ref.loadStateDict(state); // the training forward moved the running statistics
  ref.eval();
  const reference: Record<OpId, Outputs> = {
    train: { y },
    infer: { y: ref.forward(x, shape) },
    bwd: grads,
    fwdbwd: { y, ...grads },
  };
  ref.dispose();

  return {
    n,
    reference,
    contestants(op) {
      for (const bn of modules) bn.loadStateDict(state);
      return byOp.flatMap((f) => f(op));
    },
    dispose() {
      for (const d of disposers) d();
    },
  };
}

/** Compares every output the reference has; returns the largest relative error. */
function check(got: Outputs, want: Outputs, label: string, tolerance: number): number {
  let worst = 0;
  for (const key of ["y", "dx", "dWeight", "dBias"] as const) {
    const w = want[key];
    if (w === undefined) continue;
    const o = got[key];
    const err = o === undefined ? Number.POSITIVE_INFINITY : relError(o, w);
    if (!(err <= tolerance)) {
      throw new Error(
        `${label}: ${key} differs from the JS back end's by ${err.toExponential(2)} ` +
          `(relative to its largest value; tolerance ${tolerance}): refusing to time a wrong answer`,
      );
    }
    worst = Math.max(worst, err);
  }
  return worst;
}

// ---------------------------------------------------------------------------------------------
// Timing

const now = () => performance.now();
const gc = (globalThis as { gc?: () => void }).gc;

interface Timed {
  c: Contestant;
  /** Runs per sample. */
  k: number;
  /** Estimated ms per run, from the warm-up. */
  t1: number;
  samples: number[];
  /** Samples this contestant takes in this case. */
  quota: number;
  maxErr: number | null;
}

/** Runs `k` times; returns the mean time per run, counting only `run`, not `prepare`. */
function sample(c: Contestant, k: number): number {
  let total = 0;
  for (let i = 0; i < k; i++) {
    c.prepare?.();
    const t0 = now();
    c.run();
    total += now() - t0;
  }
  return total / k;
}

/** Runs `c` for a while (wasm tiers up to optimized code, JS gets compiled); returns the
 * fastest run's time, which sizes the samples. */
async function warmUp(c: Contestant): Promise<number> {
  await c.enter?.();
  const start = now();
  let runs = 0;
  let best = Number.POSITIVE_INFINITY;
  while (now() - start < PLAN.maxWarmupMs && (runs < 3 || now() - start < PLAN.warmupMs)) {
    best = Math.min(best, sample(c, 1));
    runs++;
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Output

const fmtMs = (ms: number) =>
  ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
const pad = (s: string, w: number) => s.padStart(w);
const padR = (s: string, w: number) => s.padEnd(w);

function progress(text: string) {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
}
function progressLine(text: string) {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}\n`);
  else process.stderr.write(`${text}\n`);
}

function printCase(r: CaseResult) {
  const lines = [
    `\n${r.shapeLabel} · ${r.opLabel} · ${(r.n / 1e6).toFixed(2)}M floats, ${(
      r.bytes / 1e6
    ).toFixed(1)} MB moved at least · copy ${fmtMs(r.copy.medianMs)} ms = ${r.copy.gbps.toFixed(
      1,
    )} GB/s`,
    `  ${padR("contestant", 16)}${pad("median ms", 11)}${pad("p10–p90 ms", 18)}${pad("GB/s", 8)}${pad(
      "% copy",
      8,
    )}${pad("× js", 8)}${pad("samples", 9)}`,
  ];
  for (const c of r.results) {
    if (c.impl === "copy") continue;
    const spread = c.derived ? "(derived)" : `${fmtMs(c.p10Ms)}–${fmtMs(c.p90Ms)}`;
    lines.push(
      `  ${padR(c.name, 16)}${pad(fmtMs(c.medianMs), 11)}${pad(spread, 18)}${pad(
        c.gbps.toFixed(1),
        8,
      )}${pad(`${(c.fractionOfCopy * 100).toFixed(0)}%`, 8)}${pad(
        c.speedupVsJs >= 10 ? c.speedupVsJs.toFixed(1) : c.speedupVsJs.toFixed(2),
        8,
      )}${pad(`${c.samples}×${c.runsPerSample}`, 9)}`,
    );
  }
  console.log(lines.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const root = (p: string) => readFileSync(join(ROOT, p));
  await init({
    simd: root("dist/batchnorm-simd.wasm"),
    scalar: root("dist/batchnorm-scalar.wasm"),
  });
  const tf = WITH_TFJS ? await loadTfjs() : undefined;
  if (gc === undefined)
    progressLine("note: run node with --expose-gc to collect garbage between cases");

  const cases = SHAPES.flatMap((spec) => OPS.map((op) => ({ spec, op })));
  const selected = cases.filter(
    ({ spec, op }) => FILTER === undefined || `${shapeLabel(spec)} ${op.label}`.includes(FILTER),
  );
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    memoryGB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    commit: gitCommit(),
    tfjs: tf?.version_core,
    tfjsWasmSimd: tf?.env().getBool("WASM_HAS_SIMD_SUPPORT"),
    command: `node --expose-gc --import tsx bench/run.ts ${argv.join(" ")}`.trim(),
    plan: { ...PLAN, quick: QUICK },
  };
  console.log(
    `wasm-batchnorm benchmark · Node ${meta.node} (V8 ${meta.v8}) · ${meta.cpu}, ${meta.cores} cores · ` +
      `TF.js ${meta.tfjs ?? "skipped"}${QUICK ? " · --quick" : ""}`,
  );

  const results: CaseResult[] = [];
  const started = now();
  let index = 0;
  for (const spec of SHAPES) {
    const mine = selected.filter((s) => s.spec === spec);
    if (mine.length === 0) continue;
    gc?.();
    const rig = makeRig(spec, tf);
    for (const { op } of mine) {
      index++;
      const label = `${shapeLabel(spec)} ${op.label}`;
      const where = () =>
        `[${index}/${selected.length}] ${label}` +
        ` · ${((now() - started) / 1000).toFixed(0)} s elapsed`;
      progress(`${where()} · checking and warming up`);
      if (!process.stderr.isTTY) process.stderr.write(`${where()}\n`);
      gc?.();
      const timed: Timed[] = [];
      for (const c of rig.contestants(op.id)) {
        await c.enter?.();
        const tol = c.impl.startsWith("tfjs") ? TOLERANCE.tfjs : TOLERANCE.ours;
        const t0 = now();
        const maxErr =
          c.outputs === undefined
            ? null
            : check(c.outputs(), rig.reference[op.id], `${label}, ${contestantName(c)}`, tol);
        const checkMs = now() - t0;
        // The check ran the op once; when that took longer than a whole warm-up, it was one,
        // and one more run (now warm; --quick skips it) sizes the samples.
        if (QUICK && checkMs > 1500) {
          // --quick: a run of seconds (TF.js's CPU back end on the large shapes) is timed once,
          // by the check itself (which also reads the result back).
          timed.push({ c, k: 1, t1: checkMs, samples: [checkMs], quota: 0, maxErr });
          continue;
        }
        const t1 = checkMs <= PLAN.maxWarmupMs ? await warmUp(c) : sample(c, 1);
        const k = Math.max(1, Math.round(PLAN.sampleMs / t1));
        timed.push({ c, k, t1, samples: [], quota: 0, maxErr });
      }
      // Rounds: as many as the budget allows; each contestant may spend an equal share of it.
      const share = PLAN.caseMs / timed.length;
      const roundMs = timed.reduce((s, t) => s + (t.samples.length > 0 ? 0 : t.k * t.t1), 0);
      const rounds = Math.max(
        PLAN.minRounds,
        Math.min(PLAN.maxRounds, Math.floor(PLAN.caseMs / roundMs)),
      );
      for (const t of timed.filter((t) => t.samples.length === 0)) {
        const affordable = Math.floor(Math.max(share, PLAN.caseMs / PLAN.maxRounds) / (t.k * t.t1));
        t.quota = Math.min(rounds, Math.max(minSamples(t.c.impl, t.c.path), affordable));
        // A run of seconds (TF.js's CPU back end, fwd+bwd on the large shapes): one sample.
        if (t.t1 > 1500) t.quota = 1;
      }
      gc?.();
      for (let r = 0; r < rounds; r++) {
        progress(`${where()} · round ${r + 1}/${rounds}`);
        for (const t of timed) {
          // Spread a smaller quota evenly over the rounds.
          if (Math.floor(((r + 1) * t.quota) / rounds) === Math.floor((r * t.quota) / rounds)) {
            continue;
          }
          await t.c.enter?.();
          // Finish the garbage of the previous contestant (the copy API allocates a new output
          // per call) here, not in background threads that compete with this sample.
          gc?.();
          t.samples.push(sample(t.c, t.k));
        }
      }
      const result = summarize(spec, op, rig.n, timed);
      results.push(result);
      progress("");
      printCase(result);
    }
    rig.dispose();
  }
  progress("");
  const totalS = (now() - started) / 1000;
  const out: BenchResults = { meta: { ...meta, totalSeconds: Math.round(totalS) }, cases: results };
  printTargets(out);
  console.log(`\ntotal ${totalS.toFixed(0)} s`);
  if (JSON_OUT !== undefined) {
    mkdirSync(dirname(JSON_OUT), { recursive: true });
    writeFileSync(JSON_OUT, `${JSON.stringify(out, null, 1)}\n`);
    console.log(`wrote ${relative(process.cwd(), JSON_OUT)}`);
  }
  if (SVG_OUT !== undefined) {
    mkdirSync(dirname(SVG_OUT), { recursive: true });
    writeFileSync(SVG_OUT, renderChart(out));
    console.log(`wrote ${relative(process.cwd(), SVG_OUT)}`);
  }
}

function summarize(
  spec: ShapeSpec,
  op: (typeof OPS)[number],
  n: number,
  timed: Timed[],
): CaseResult {
  const bytes = op.passes * 4 * n;
  const copyT = timed.find((t) => t.c.impl === "copy") as Timed;
  const copyMs = median(copyT.samples);
  const copyGbps = (8 * n) / copyMs / 1e6;
  const jsT = timed.find((t) => t.c.impl === "js" && t.c.path === "zero-copy") as Timed;
  const jsMs = median(jsT.samples);
  const entry = (impl: Impl, path: Path, med: number, p10: number, p90: number) => {
    const gbps = bytes / med / 1e6;
    return {
      impl,
      path,
      name: contestantName({ impl, path }),
      medianMs: med,
      p10Ms: p10,
      p90Ms: p90,
      gbps,
      fractionOfCopy: gbps / copyGbps,
      speedupVsJs: jsMs / med,
    };
  };
  const list: ContestantResult[] = timed.map((t) => ({
    ...entry(
      t.c.impl,
      t.c.path,
      median(t.samples),
      quantile(t.samples, 0.1),
      quantile(t.samples, 0.9),
    ),
    samples: t.samples.length,
    runsPerSample: t.k,
    maxRelError: t.maxErr,
    derived: false,
  }));
  return {
    layout: spec.kind,
    shape: spec.shape,
    shapeLabel: shapeLabel(spec),
    op: op.id,
    opLabel: op.label,
    n,
    bytes,
    passes: op.passes,
    copy: { medianMs: copyMs, gbps: copyGbps },
    results: list,
  };
}

/** TF.js has no separate backward: it is reported as fwd+bwd − training fwd, per back end. */
function deriveTfjsBackward(cases: CaseResult[]) {
  for (const c of cases) {
    if (c.op !== "bwd") continue;
    const get = (op: OpId) => cases.find((d) => d.shapeLabel === c.shapeLabel && d.op === op);
    const both = get("fwdbwd");
    const fwd = get("train");
    const js = c.results.find((r) => r.impl === "js" && r.path === "zero-copy");
    if (both === undefined || fwd === undefined || js === undefined) continue;
    for (const impl of ["tfjs-wasm", "tfjs-cpu"] as const) {
      const a = both.results.find((r) => r.impl === impl);
      const b = fwd.results.find((r) => r.impl === impl);
      if (a === undefined || b === undefined) continue;
      const ms = a.medianMs - b.medianMs;
      const gbps = c.bytes / ms / 1e6;
      c.results.push({
        impl,
        path: "",
        name: impl,
        medianMs: ms,
        p10Ms: Number.NaN,
        p90Ms: Number.NaN,
        gbps,
        fractionOfCopy: gbps / c.copy.gbps,
        speedupVsJs: js.medianMs / ms,
        samples: 0,
        runsPerSample: 0,
        maxRelError: null,
        derived: true,
      });
    }
  }
}

/** The issue's targets for SIMD on the zero-copy path, as ratios measured in this run. */
function printTargets(out: BenchResults) {
  deriveTfjsBackward(out.cases);
  const lines: string[] = ["\nTargets (SIMD, zero-copy path):"];
  const rows = out.cases.map((c) => {
    const simd = c.results.find((r) => r.impl === "simd" && r.path === "zero-copy");
    const tfw = c.results.find((r) => r.impl === "tfjs-wasm" && !r.derived);
    return { c, simd, tfw };
  });
  const verdicts: { target: string; value: number; ok: boolean; where: string }[] = [];
  for (const { c, simd, tfw } of rows) {
    if (simd === undefined) continue;
    const where = `${c.shapeLabel} ${c.opLabel}`;
    const size = c.shape.join("x");
    const small = ["8x32x16x16", "8x16x16x32", "256x1024"].includes(size);
    const big = ["32x64x56x56", "32x56x56x64"].includes(size);
    if (small)
      verdicts.push({
        target: "≥ 8× js",
        value: simd.speedupVsJs,
        ok: simd.speedupVsJs >= 8,
        where,
      });
    if (big) {
      verdicts.push({
        target: "≥ 5× js",
        value: simd.speedupVsJs,
        ok: simd.speedupVsJs >= 5,
        where,
      });
      verdicts.push({
        target: "≥ 80% copy",
        value: simd.fractionOfCopy,
        ok: simd.fractionOfCopy >= 0.8,
        where,
      });
    }
    if (tfw !== undefined && (c.op === "fwdbwd" || c.op === "infer")) {
      const ratio = tfw.medianMs / simd.medianMs;
      const need = c.op === "fwdbwd" ? 50 : 10;
      verdicts.push({ target: `≥ ${need}× tfjs-wasm`, value: ratio, ok: ratio >= need, where });
    }
  }
  for (const v of verdicts) {
    const value = v.target.includes("%")
      ? `${(v.value * 100).toFixed(0)}%`
      : `${v.value.toFixed(1)}×`;
    lines.push(
      `  ${v.ok ? "met    " : "NOT MET"}  ${padR(v.target, 16)}${pad(value, 8)}   ${v.where}`,
    );
  }
  const failed = verdicts.filter((v) => !v.ok).length;
  lines.push(`  ${verdicts.length - failed} of ${verdicts.length} met`);
  (out as { targets?: unknown }).targets = verdicts;
  console.log(lines.join("\n"));
}

function gitCommit(): string | undefined {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: ROOT,
      encoding: "utf8",
    }).trim();
  } catch {
    return undefined;
  }
}

main().catch((error: unknown) => {
  progress("");
  console.error(error);
  process.exit(1);
});
