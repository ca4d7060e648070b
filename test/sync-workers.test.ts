/**
 * Synchronized batch norm over real `worker_threads` and the SharedArrayBuffer transport: each
 * replica trains on its rows of a batch (replicas hold different batch sizes) and must get what
 * one module gets on the whole batch — and the float64 reference.
 *
 * ## Tolerances
 * As in conformance.test.ts: |v − expected| ≤ TOL·scale with TOL = 1e-5 and the scales of
 * compare.ts's errorScales (the magnitudes of the terms float32 adds: for y, a·(max|x − μ| + |μ|)
 * + |β|; for dx, dWeight, dBias their terms'; runningMean |rm| + √rv; runningVar rv). A replica
 * differs from the whole-batch module only in how the per-channel numbers are put together:
 * float64 merges (exact up to 2⁻⁵³) of the kernels' float32 per-replica results (relative
 * rounding u = 2⁻²⁴ each), so it stays within the same float32 error bound — with one exception,
 * stated and bounded below: the local means are float32, held to ulp(|μ|)/2, and Chan's update
 * squares their differences, so the merged variance can be off by 2·(ulp(|μ|)/2)·|mᵢ − m| per
 * replica (first order), weighted by nᵢ/n. It matters only for a large mean: at
 * x = 10000 + N(0, 1) with 45 and 75 values per channel on two replicas the batch variance is
 * off by up to 5e-5 relative (the whole-batch module's by 1e-7); y's scale holds it already,
 * since its a·|μ| term is the same float32 rounding of the mean (y itself differs by up to
 * 9.8e-4 = ulp(10000)/σ there: the two centres are float32 roundings one ulp apart). runningVar's scale adds
 * that bound over the steps (momentum 0.1: weights 0.09 and 0.1, times n/(n − 1)), and the
 * inference y's adds what it does to y through the running variance, |y − β|·δv/(2·(v + ε)).
 *
 * Negative control: a replica's module without sync (its rows only) misses the whole batch's y by
 * more than 1000·TOL on every case with offset 0.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { startTsWorker } from "../examples/fashion-mnist/ts-worker.js";
import { abortSyncGroup, createSyncGroup } from "../ts/index.node.js";
import { assertClose, errorScales } from "./compare.js";
import { batchStats, channelOf, RefBatchNorm } from "./reference.js";
import { BACKENDS, distPath, initFromDist } from "./setup-backends.js";
import {
  channelsOf,
  parameters,
  type RunResult,
  rowsBefore,
  rowsOf,
  runCase,
  STEPS,
  type SyncCase,
  stepData,
  totalRows,
} from "./sync-cases.js";
import type { ReplicaJob, ReplicaMessage } from "./sync-worker.js";

const TOL = 1e-5;
const MOMENTUM = 0.1;
const EPS = 1e-5;
/** No answer from a worker within this is a failure (workers start tsx and load wasm). */
const ANSWER_MS = 45_000;
const wasm = { simd: distPath("batchnorm-simd.wasm"), scalar: distPath("batchnorm-scalar.wasm") };

type Answer = ReplicaMessage | { type: "exited"; code: number };

/**
 * Runs one replica per rank in worker threads and collects each one's first message. A worker
 * that exits before answering aborts the group (as an application's main thread would).
 */
async function runGroup(
  size: number,
  job: Omit<ReplicaJob, "handle" | "rank" | "wasm">,
  timeoutMs: number,
): Promise<Answer[]> {
  const handle = createSyncGroup(size, { maxFloats: 256, timeoutMs });
  const entry = new URL("./sync-worker.ts", import.meta.url);
  const workers = Array.from({ length: size }, (_, rank) =>
    startTsWorker(entry, { ...job, handle, rank, wasm } satisfies ReplicaJob),
  );
  const timers: ReturnType<typeof setTimeout>[] = [];
  try {
    return await Promise.all(
      workers.map(
        (w, rank) =>
          new Promise<Answer>((resolve, reject) => {
            timers.push(setTimeout(() => reject(new Error(`rank ${rank}: no answer`)), ANSWER_MS));
            let answered = false;
            w.once("message", (m: ReplicaMessage) => {
              answered = true;
              resolve(m);
            });
            w.once("error", reject);
            w.once("exit", (code) => {
              if (answered) return;
              abortSyncGroup(handle, `worker ${rank} exited with code ${code}`);
              resolve({ type: "exited", code });
            });
          }),
      ),
    );
  } finally {
    for (const t of timers) clearTimeout(t);
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

function makeCases(replicas: number): SyncCase[] {
  const rows = replicas === 2 ? [3, 5] : [2, 1, 4];
  const cases: SyncCase[] = [];
  let seed = replicas * 100;
  for (const backend of BACKENDS) {
    for (const layout of ["NCHW", "NHWC"] as const) {
      for (const offset of [0, 10000]) {
        const rest = layout === "NCHW" ? [4, 3, 5] : [3, 5, 4];
        cases.push({
          name: `${backend} ${layout} offset ${offset}`,
          backend,
          layout,
          rows,
          rest,
          offset,
          seed: seed++,
        });
      }
    }
    // [N, C] with one row on a replica: one value per channel there, more in the whole batch.
    const rows2d = replicas === 2 ? [1, 6] : [1, 1, 5];
    cases.push({
      name: `${backend} [N, C]`,
      backend,
      layout: "NCHW",
      rows: rows2d,
      rest: [6],
      offset: 0,
      seed: seed++,
    });
    // 33 channels: where the SIMD builds do per-channel math in wasm, which a synchronized
    // forward and backward must not use (their statistics and sums are the whole batch's).
    cases.push({
      name: `${backend} [N, 33]`,
      backend,
      layout: "NCHW",
      rows,
      rest: [33],
      offset: 0,
      seed: seed++,
    });
  }
  return cases;
}

/** float32 ulp of v, halved: how far a Float32Array holds v at most. */
const halfUlp = (v: number) => 2 ** (Math.floor(Math.log2(Math.abs(v) || 1)) - 24);

interface Expected {
  ref: RunResult & { scales: ReturnType<typeof errorScales>[]; mergeVar: Float64Array };
  whole: RunResult;
}

/** The whole-batch module, the float64 reference and the error scales of a case. */
function expected(c: SyncCase): Expected {
  const C = channelsOf(c);
  const N = totalRows(c);
  const shape = [N, ...c.rest];
  const chan = channelOf(shape, c.layout);
  const ref = new RefBatchNorm(C, { layout: c.layout, momentum: MOMENTUM, eps: EPS });
  const p = parameters(C);
  ref.weight?.set(p.weight);
  ref.bias?.set(p.bias);
  const out = { y: [], dx: [], dWeight: [], dBias: [], scales: [] } as unknown as Expected["ref"];
  const mergeVar = new Float64Array(C);
  for (let step = 0; step <= STEPS; step++) {
    const { x, dy } = stepData(c, step);
    if (step === STEPS) ref.eval();
    out.y.push(Float32Array.from(ref.forward(x, shape)));
    const mean = ref.lastMean as Float64Array;
    const variance = ref.lastVar as Float64Array;
    out.scales.push(
      errorScales(
        x,
        dy,
        { chan, mean, variance, eps: EPS, weight: p.weight, bias: p.bias },
        step < STEPS,
      ),
    );
    if (step === STEPS) break;
    const g = ref.backward(dy);
    out.dx.push(Float32Array.from(g.dx));
    out.dWeight.push(Float32Array.from(g.dWeight));
    out.dBias.push(Float32Array.from(g.dBias));
    // The merge's bound (see the header): Σᵢ (nᵢ/n)·2·halfUlp(mᵢ)·|mᵢ − m| per channel, weighted
    // into the running variance like the step's batch variance.
    const weightInRunning = MOMENTUM * (1 - MOMENTUM) ** (STEPS - 1 - step) * (N / (N - 1));
    for (let r = 0; r < c.rows.length; r++) {
      const rows = c.rows[r] as number;
      const part = rowsOf(c, x, rowsBefore(c, r), rows);
      const local = batchStats(part, channelOf([rows, ...c.rest], c.layout), C);
      for (let k = 0; k < C; k++) {
        const m = local.mean[k] as number;
        const bound = (rows / N) * 2 * halfUlp(m) * Math.abs(m - (mean[k] as number));
        mergeVar[k] = (mergeVar[k] as number) + weightInRunning * bound;
      }
    }
  }
  out.runningMean = Float32Array.from(ref.runningMean as Float64Array);
  out.runningVar = Float32Array.from(ref.runningVar as Float64Array);
  out.mergeVar = mergeVar;
  return { ref: out, whole: runCase(c, 0, N, null) };
}

/** The inference y's scale plus the running variance's merge bound (see the header). */
function inferenceScale(
  c: SyncCase,
  rank: number,
  e: Expected,
  scale: Float32Array,
  y: Float32Array,
) {
  const { bias } = parameters(channelsOf(c));
  const rv = e.ref.runningVar;
  const chan = channelOf([c.rows[rank] as number, ...c.rest], c.layout);
  return scale.map((v, i) => {
    const k = chan[i] as number;
    const merge = (e.ref.mergeVar[k] as number) / (2 * ((rv[k] as number) + EPS));
    return v + (Math.abs((y[i] as number) - (bias[k] as number)) * merge) / TOL;
  });
}

/** Checks replica `rank`'s results against `want`; returns the worst diff/scale. */
function check(c: SyncCase, rank: number, got: RunResult, want: RunResult, e: Expected): number {
  const from = rowsBefore(c, rank);
  const count = c.rows[rank] as number;
  const part = (a: Float32Array | Float64Array) => rowsOf(c, Float32Array.from(a), from, count);
  const at = `${c.name}, rank ${rank}`;
  let worst = 0;
  const close = (
    what: string,
    a: ArrayLike<number>,
    b: ArrayLike<number>,
    s: ArrayLike<number>,
  ) => {
    worst = Math.max(worst, assertClose(`${at}: ${what}`, a, b, s, TOL));
  };
  for (let s = 0; s <= STEPS; s++) {
    const scales = e.ref.scales[s] as ReturnType<typeof errorScales>;
    const yScale =
      s < STEPS
        ? part(scales.y)
        : inferenceScale(c, rank, e, part(scales.y), got.y[s] as Float32Array);
    close(`y, step ${s}`, got.y[s] as Float32Array, part(want.y[s] as Float32Array), yScale);
    if (s === STEPS) break;
    close(
      `dx, step ${s}`,
      got.dx[s] as Float32Array,
      part(want.dx[s] as Float32Array),
      part(scales.dx),
    );
    close(
      `dWeight, step ${s}`,
      got.dWeight[s] as Float32Array,
      want.dWeight[s] as Float32Array,
      scales.dWeight,
    );
    close(
      `dBias, step ${s}`,
      got.dBias[s] as Float32Array,
      want.dBias[s] as Float32Array,
      scales.dBias,
    );
  }
  const rv = e.ref.runningVar;
  const meanScale = e.ref.runningMean.map((m, k) => Math.abs(m) + Math.sqrt(rv[k] as number));
  const varScale = rv.map((v, k) => v + (e.ref.mergeVar[k] as number) / TOL);
  close("runningMean", got.runningMean, want.runningMean, meanScale);
  close("runningVar", got.runningVar, want.runningVar, varScale);
  return worst;
}

beforeAll(async () => {
  await initFromDist();
});

describe.each([2, 3])("%i replicas in worker threads", (replicas) => {
  it("every replica gets the whole batch's statistics, y, gradients and running statistics", async () => {
    const cases = makeCases(replicas);
    const answers = await runGroup(replicas, { scenario: "cases", cases, bad: -1 }, 30_000);
    const worst = { whole: 0, ref: 0, unsynced: Infinity };
    cases.forEach((c, i) => {
      const e = expected(c);
      for (let rank = 0; rank < replicas; rank++) {
        const a = answers[rank] as Answer;
        if (a.type !== "results") throw new Error(`rank ${rank}: ${JSON.stringify(a)}`);
        const got = a.results[i] as RunResult;
        worst.whole = Math.max(worst.whole, check(c, rank, got, e.whole, e));
        worst.ref = Math.max(worst.ref, check(c, rank, got, e.ref, e));
        if (c.offset !== 0 || c.rest.length === 1) continue;
        // Negative control: without sync the replica normalizes with its own rows' statistics.
        const alone = runCase(c, rowsBefore(c, rank), c.rows[rank] as number, null);
        const scale = rowsOf(
          c,
          Float32Array.from(e.ref.scales[0]?.y ?? []),
          rowsBefore(c, rank),
          c.rows[rank] as number,
        );
        const miss = assertClose(
          "unsynced",
          alone.y[0] as Float32Array,
          rowsOf(c, e.whole.y[0] as Float32Array, rowsBefore(c, rank), c.rows[rank] as number),
          scale,
          Infinity,
        );
        worst.unsynced = Math.min(worst.unsynced, miss);
      }
    });
    expect(worst.unsynced).toBeGreaterThan(1000 * TOL);
    console.log(
      `${replicas} replicas: worst diff/scale vs whole-batch module ${worst.whole.toExponential(2)}, vs float64 reference ${worst.ref.toExponential(2)}; unsynchronized replicas miss by ≥ ${worst.unsynced.toExponential(2)}`,
    );
  });
});

/** The error a replica posted, or a failure saying what it posted instead. */
function errorOf(a: Answer | undefined): { name: string; message: string; ms: number } {
  if (a?.type !== "error") throw new Error(`expected an error, got ${JSON.stringify(a)}`);
  return a;
}

describe("a replica that fails or stops does not hang the others", () => {
  const c2 = makeCases(2)[0] as SyncCase;
  const c3 = makeCases(3)[0] as SyncCase;

  it("bad input: the replica aborts the group and the others fail at once with its message", async () => {
    // A 20 s timeout: only the abort can end the wait in the time the test allows.
    const [a0, a1] = await runGroup(2, { scenario: "throw", cases: [c2], bad: 1 }, 20_000);
    const bad = errorOf(a1);
    expect(bad.name).toBe("RangeError");
    const other = errorOf(a0);
    expect(other.message).toContain(`rank 1 failed: RangeError: ${bad.message}`);
    expect(other.message).not.toMatch(/waited/);
    console.log(`abort: rank 0 failed ${other.ms.toFixed(0)} ms after joining`);
  });

  it("a replica that never arrives: the others fail after timeoutMs, naming it", async () => {
    const answers = await runGroup(3, { scenario: "absent", cases: [c3], bad: 2 }, 1000);
    expect(answers[2]?.type).toBe("idle");
    for (const a of answers.slice(0, 2)) {
      // Rank 2 among the late (rank 1 too if it started more than a second after rank 0).
      expect(errorOf(a).message).toMatch(/waited 1000 ms in allGather #1 for rank\(s\) (1, )?2,/);
    }
    const ms = answers.slice(0, 2).map((a) => errorOf(a).ms.toFixed(0));
    console.log(`timeout 1000 ms: ranks 0 and 1 failed after ${ms.join(" and ")} ms`);
  });

  it("a worker that exits: the main thread aborts the group and the others fail at once", async () => {
    const [a0, a1] = await runGroup(2, { scenario: "exit", cases: [c2], bad: 1 }, 20_000);
    expect(a1).toEqual({ type: "exited", code: 3 });
    const other = errorOf(a0);
    expect(other.message).toContain("aborted by the main thread: worker 1 exited with code 3");
    console.log(`exit: rank 0 failed ${other.ms.toFixed(0)} ms after joining`);
  });
});
