/**
 * A rig: everything the cases of one shape share (inputs, modules, tensors), its contestants
 * per op, and the reference result they must all match.
 *
 * @module
 */
import { type Contestant, type Reference, type Runner, runnerContestant } from "./contestant.js";
import { BatchNorm, copyBuffers, type Layout, resolveBackend, type StateDict } from "./lib.js";
import { moments, plainDims, plainRunner } from "./plain.js";
import { EPS, type ShapeSpec } from "./plan.js";
import { tfjsContestants } from "./rig-tfjs.js";
import type { Tf } from "./tfjs.js";
import type { OpId } from "./types.js";

/** The data of one shape. */
export interface Inputs {
  shape: number[];
  layout: Layout;
  channels: number;
  n: number;
  x: Float32Array;
  dy: Float32Array;
  state: StateDict;
}

export interface Rig {
  n: number;
  /** The contestants of one op, with every module reset to the initial state. */
  contestants(op: OpId): Contestant[];
  /** The JS back end's results, which every contestant must match. */
  reference: Record<OpId, Reference>;
  dispose(): void;
}

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

export function makeInputs(spec: ShapeSpec): Inputs {
  const shape = spec.shape;
  const layout: Layout = spec.kind === "NHWC" ? "NHWC" : "NCHW";
  const channels = (layout === "NCHW" ? shape[1] : shape[shape.length - 1]) as number;
  const n = shape.reduce((a, b) => a * b, 1);
  return {
    shape,
    layout,
    channels,
    n,
    x: normals(n, 1, 0.5, 2),
    dy: normals(n, 2),
    state: {
      weight: normals(channels, 3, 1, 0.2),
      bias: normals(channels, 4, 0, 0.2),
      running_mean: normals(channels, 5, 0.5, 0.2),
      running_var: normals(channels, 6, 4, 0.5).map(Math.abs),
      num_batches_tracked: 0,
    },
  };
}

/** A `BatchNorm` on its own tensors: the zero-copy path. */
function zeroCopyRunner(bn: BatchNorm, input: Inputs): Runner & { dispose(): void } {
  const X = bn.tensor(input.shape);
  const Y = bn.tensor(input.shape);
  const DY = bn.tensor(input.shape);
  const DX = bn.tensor(input.shape);
  X.data.set(input.x);
  DY.data.set(input.dy);
  let grads: { dWeight: Float32Array | null; dBias: Float32Array | null } | undefined;
  return {
    mode: (training) => void bn.train(training),
    forward: () => void bn.forward(X, { out: Y }),
    backward: () => {
      grads = bn.backward(DY, { out: DX });
    },
    read: (y, g) => ({
      ...(y && { y: Y.data.slice() }),
      ...(g && {
        dx: DX.data.slice(),
        dWeight: grads?.dWeight ?? undefined,
        dBias: grads?.dBias ?? undefined,
      }),
    }),
    dispose: () => {
      for (const t of [X, Y, DY, DX]) t.dispose();
    },
  };
}

/** A `BatchNorm` on `Float32Array`s: the copy API (a new output per call). */
function copyApiRunner(bn: BatchNorm, input: Inputs): Runner {
  let y: Float32Array | undefined;
  let grads:
    | { dx: Float32Array; dWeight: Float32Array | null; dBias: Float32Array | null }
    | undefined;
  return {
    mode: (training) => void bn.train(training),
    forward: () => {
      y = bn.forward(input.x, input.shape);
    },
    backward: () => {
      grads = bn.backward(input.dy);
    },
    read: (wantY, g) => ({
      ...(wantY && { y }),
      ...(g && {
        dx: grads?.dx,
        dWeight: grads?.dWeight ?? undefined,
        dBias: grads?.dBias ?? undefined,
      }),
    }),
  };
}

/**
 * The largest term of dx's sum, `|weight·dy| / sd`: what dx's error is measured against. At
 * batch size 2 the terms cancel exactly, and dx is rounding noise on either side.
 */
function dxFloor(input: Inputs): number {
  const d = plainDims(input);
  const mean = new Float64Array(d.channels);
  const variance = new Float64Array(d.channels);
  moments(input.x, d, mean, variance);
  let floor = 0;
  for (let i = 0; i < input.n; i++) {
    const c = Math.floor(i / d.inner) % d.channels;
    const k =
      ((input.state.weight as Float32Array)[c] as number) /
      Math.sqrt((variance[c] as number) + EPS);
    floor = Math.max(floor, Math.abs(k * (input.dy[i] as number)));
  }
  return floor;
}

/** The JS back end's results, in a module of its own. */
function referenceOf(input: Inputs): Record<OpId, Reference> {
  const { channels, layout, shape, state, x, dy } = input;
  const ref = new BatchNorm(channels, { layout, backend: "js" });
  ref.loadStateDict(state);
  const y = ref.forward(x, shape);
  const g = ref.backward(dy);
  const grads = { dx: g.dx, dWeight: g.dWeight ?? undefined, dBias: g.dBias ?? undefined };
  ref.loadStateDict(state); // the training forward moved the running statistics
  ref.eval();
  const infer = ref.forward(x, shape);
  ref.dispose();
  const floors = { dx: dxFloor(input) };
  return {
    train: { outputs: { y }, floors },
    infer: { outputs: { y: infer }, floors },
    bwd: { outputs: grads, floors },
    fwdbwd: { outputs: { y, ...grads }, floors },
  };
}

/** `quick` leaves out TF.js's CPU back end where one of its runs takes seconds. */
export function makeRig(spec: ShapeSpec, tf: Tf | undefined, quick: boolean): Rig {
  const input = makeInputs(spec);
  const { n, channels, layout } = input;
  const disposers: (() => void)[] = [];
  const modules: BatchNorm[] = [];
  const byOp: ((op: OpId) => Contestant[])[] = [];

  // The yardstick: a wasm SIMD copy of n floats (2 passes), through the back end's bn_copy.
  const simd = resolveBackend("simd");
  const { src, dst, free } = copyBuffers(input.x);
  disposers.push(free);
  byOp.push(() => [{ impl: "copy", path: "", run: () => simd.copy(src, dst) }]);

  for (const impl of ["simd", "scalar", "js"] as const) {
    const zero = new BatchNorm(channels, { layout, backend: impl });
    const copy = new BatchNorm(channels, { layout, backend: impl });
    modules.push(zero, copy);
    const zeroRunner = zeroCopyRunner(zero, input);
    const copyRunner = copyApiRunner(copy, input);
    disposers.push(() => {
      zeroRunner.dispose();
      zero.dispose();
      copy.dispose();
    });
    byOp.push((op) => [
      runnerContestant(impl, "zero-copy", zeroRunner, op),
      runnerContestant(impl, "copy API", copyRunner, op),
    ]);
  }

  const plain = plainRunner(input);
  byOp.push((op) => [runnerContestant("plain", "", plain, op)]);

  // TF.js broadcasts per-channel vectors along the last axis: it runs the channels-last shapes.
  if (tf !== undefined && spec.kind !== "NCHW") {
    const t = tfjsContestants(tf, input, quick);
    byOp.push(t.contestants);
    disposers.push(t.dispose);
  }

  return {
    n,
    reference: referenceOf(input),
    contestants(op) {
      for (const bn of modules) bn.loadStateDict(input.state);
      return byOp.flatMap((f) => f(op));
    },
    dispose() {
      for (const d of disposers) d();
    },
  };
}
