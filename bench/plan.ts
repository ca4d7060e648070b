/**
 * What the benchmark measures (ops and shapes), how closely results must agree, and the time
 * it may spend on each case.
 *
 * @module
 */
import type { Layout } from "./lib.js";
import type { Impl, OpId, Path } from "./types.js";

export interface OpSpec {
  id: OpId;
  label: string;
  /** Passes of 4·n bytes the op must make over memory at least. */
  passes: number;
}

export const OPS: readonly OpSpec[] = [
  { id: "train", label: "training fwd", passes: 3 }, // read x (moments); read x, write y
  { id: "infer", label: "inference fwd", passes: 2 }, // read x, write y
  { id: "bwd", label: "backward", passes: 5 }, // read x, dy (sums); read x, dy, write dx
  { id: "fwdbwd", label: "fwd+bwd", passes: 8 },
];

export interface ShapeSpec {
  /** "2-D" input is [N, C] in either layout: one memory order, one case. */
  kind: Layout | "2-D";
  shape: number[];
}

/** Cache-resident, mid-size (ResNet stage 4), 25 MB (ResNet stage 1), and a dense layer. */
export const SHAPES: readonly ShapeSpec[] = [
  { kind: "NCHW", shape: [8, 32, 16, 16] },
  { kind: "NHWC", shape: [8, 16, 16, 32] },
  { kind: "2-D", shape: [256, 1024] },
  { kind: "NCHW", shape: [64, 256, 14, 14] },
  { kind: "NHWC", shape: [64, 14, 14, 256] },
  { kind: "NCHW", shape: [32, 64, 56, 56] },
  { kind: "NHWC", shape: [32, 56, 56, 64] },
];

export const shapeLabel = (s: ShapeSpec) => `${s.kind} ${s.shape.join("x")}`;

export const EPS = 1e-5;
/** Largest relative error accepted: ours (float32 with float64 statistics) and TF.js (float32). */
export const TOLERANCE = { ours: 1e-4, tfjs: 2e-3 };

/** Time budgets per case (all contestants together); a slow contestant gets fewer samples. */
export interface Budget {
  quick: boolean;
  warmupMs: number;
  maxWarmupMs: number;
  sampleMs: number;
  caseMs: number;
  minRounds: number;
  maxRounds: number;
}

export const budget = (quick: boolean): Budget =>
  quick
    ? {
        quick,
        warmupMs: 30,
        maxWarmupMs: 200,
        sampleMs: 3,
        caseMs: 600,
        minRounds: 5,
        maxRounds: 9,
      }
    : {
        quick,
        warmupMs: 80,
        maxWarmupMs: 400,
        sampleMs: 5,
        caseMs: 2000,
        minRounds: 9,
        maxRounds: 25,
      };

/**
 * Samples of a contestant however slow it is: more for those the targets compare (our SIMD and
 * JS back ends, TF.js-wasm, the copy), fewer for the rest (TF.js's CPU back end takes seconds
 * per run on the large shapes).
 */
export function minSamples(impl: Impl, path: Path, quick: boolean): number {
  const compared =
    ((impl === "simd" || impl === "js") && path === "zero-copy") ||
    impl === "copy" ||
    impl === "tfjs-wasm";
  return compared ? (quick ? 3 : 5) : quick ? 1 : 2;
}
