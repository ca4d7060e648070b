/**
 * Synchronized-BN test cases, shared by the test (main thread: the whole-batch module and the
 * float64 reference) and its workers (one replica each): the data of every step comes from a
 * seed, so each side makes the same whole batch and a replica takes its rows.
 */
import type { BackendKind, BatchNormSync, Layout } from "../ts/index.node.js";
import { BatchNorm } from "../ts/index.node.js";
import { Rng } from "./random.js";

export interface SyncCase {
  name: string;
  backend: BackendKind;
  layout: Layout;
  /** Batch rows (N) of each replica, in rank order: they may differ. */
  rows: number[];
  /** The shape after N: `[C, ...spatial]` for NCHW, `[...spatial, C]` for NHWC. */
  rest: number[];
  /** Added to every x: 10000 is the large-mean case. */
  offset: number;
  seed: number;
}

/** Training steps (forward + backward) before the inference forward. */
export const STEPS = 2;

export const channelsOf = (c: SyncCase): number =>
  (c.layout === "NCHW" ? c.rest[0] : c.rest[c.rest.length - 1]) as number;

export const rowsBefore = (c: SyncCase, rank: number): number =>
  c.rows.slice(0, rank).reduce((a, b) => a + b, 0);

export const totalRows = (c: SyncCase): number => rowsBefore(c, c.rows.length);

const rowSize = (c: SyncCase): number => c.rest.reduce((a, b) => a * b, 1);

/** The whole batch's x and dy at `step` (step STEPS is the inference forward's input). */
export function stepData(c: SyncCase, step: number): { x: Float32Array; dy: Float32Array } {
  const rng = new Rng(c.seed * 31 + step);
  const n = totalRows(c) * rowSize(c);
  // Per-channel spread 0.5 to 2 and a per-step shift, so statistics differ by channel and step.
  const C = channelsOf(c);
  const inner = c.layout === "NCHW" ? rowSize(c) / C : 1;
  const x = Float32Array.from({ length: n }, (_, i) => {
    const ch = Math.floor(i / inner) % C;
    return c.offset + 0.3 * step + (0.5 + (1.5 * ch) / C) * rng.normal();
  });
  return { x, dy: rng.normals(n) };
}

/** Rows `[from, from + count)` of a whole-batch array. */
export function rowsOf(c: SyncCase, whole: Float32Array, from: number, count: number) {
  const size = rowSize(c);
  return whole.slice(from * size, (from + count) * size);
}

/** What a module gave in a run of {@link runCase}. */
export interface RunResult {
  /** y of each training step, then of the inference forward. */
  y: Float32Array[];
  dx: Float32Array[];
  dWeight: Float32Array[];
  dBias: Float32Array[];
  runningMean: Float32Array;
  runningVar: Float32Array;
}

/** Deterministic affine parameters (not 1 and 0, so that they are exercised). */
export function parameters(C: number): { weight: Float32Array; bias: Float32Array } {
  return {
    weight: Float32Array.from({ length: C }, (_, c) => 0.5 + c / C),
    bias: Float32Array.from({ length: C }, (_, c) => 0.1 * c - 0.2),
  };
}

/**
 * Runs STEPS training steps and an inference forward on rows `[from, from + count)` of each
 * step's batch: a replica's part (with `sync`) or the whole batch (`from` 0, all rows, no sync).
 */
export function runCase(
  c: SyncCase,
  from: number,
  count: number,
  sync: BatchNormSync | null,
): RunResult {
  const C = channelsOf(c);
  const bn = new BatchNorm(C, { layout: c.layout, backend: c.backend, sync });
  const p = parameters(C);
  bn.weight?.set(p.weight);
  bn.bias?.set(p.bias);
  const shape = [count, ...c.rest];
  const y: Float32Array[] = [];
  const dx: Float32Array[] = [];
  const dWeight: Float32Array[] = [];
  const dBias: Float32Array[] = [];
  try {
    for (let step = 0; step <= STEPS; step++) {
      const { x, dy } = stepData(c, step);
      if (step === STEPS) bn.eval();
      y.push(bn.forward(rowsOf(c, x, from, count), shape));
      if (step === STEPS) break;
      const g = bn.backward(rowsOf(c, dy, from, count));
      dx.push(g.dx);
      dWeight.push(g.dWeight as Float32Array);
      dBias.push(g.dBias as Float32Array);
    }
    const runningMean = (bn.runningMean as Float32Array).slice();
    const runningVar = (bn.runningVar as Float32Array).slice();
    return { y, dx, dWeight, dBias, runningMean, runningVar };
  } finally {
    bn.dispose();
  }
}
