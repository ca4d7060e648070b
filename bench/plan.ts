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
  /** "2-D" input is [N, C] in either layout: one memory order, one case. NCHW with three
   * dimensions is BatchNorm1d's [N, C, L]. */
  kind: Layout | "2-D";
  shape: number[];
  /** A tiny tensor: its times are the fixed cost of a call, shown in µs. */
  perCall?: boolean;
}

/**
 * Where networks live, smallest first: the fixed cost of a call; dense layers (the demo's
 * [60, 100], a classifier's 1000 features at batch 2 and 60); BatchNorm1d on [N, C, L] with
 * L = 1 and 10; cache-resident conv maps; the last stages of a ResNet (7×7 and 3×3 maps, 1000
 * channels-last); mid-size (ResNet stage 4); an RGB input (C = 3) and 25 MB (ResNet stage 1).
 */
export const SHAPES: readonly ShapeSpec[] = [
  { kind: "2-D", shape: [2, 4], perCall: true },
  { kind: "2-D", shape: [2, 1000] },
  { kind: "2-D", shape: [60, 100] },
  { kind: "2-D", shape: [60, 1000] },
  { kind: "2-D", shape: [256, 1024] },
  { kind: "NCHW", shape: [1024, 64, 1] },
  { kind: "NCHW", shape: [256, 64, 10] },
  { kind: "NCHW", shape: [8, 32, 16, 16] },
  { kind: "NHWC", shape: [8, 16, 16, 32] },
  { kind: "NCHW", shape: [32, 256, 3, 3] },
  { kind: "NCHW", shape: [32, 512, 7, 7] },
  { kind: "NHWC", shape: [16, 7, 7, 1000] },
  { kind: "NCHW", shape: [64, 256, 14, 14] },
  { kind: "NHWC", shape: [64, 14, 14, 256] },
  { kind: "NHWC", shape: [32, 56, 56, 3] },
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
        warmupMs: 15,
        maxWarmupMs: 150,
        sampleMs: 2,
        caseMs: 350,
        minRounds: 5,
        maxRounds: 9,
      }
    : {
        quick,
        warmupMs: 60,
        maxWarmupMs: 400,
        sampleMs: 4,
        caseMs: 1500,
        minRounds: 9,
        maxRounds: 25,
      };

/**
 * Samples of a contestant however slow it is: more for those the targets compare (our SIMD and
 * JS back ends, the plain loop, TF.js-wasm, the copy), fewer for the rest (TF.js's CPU back end takes seconds
 * per run on the large shapes).
 */
export function minSamples(impl: Impl, path: Path, quick: boolean): number {
  const compared =
    ((impl === "simd" || impl === "js") && path === "zero-copy") ||
    impl === "plain" ||
    impl === "copy" ||
    impl === "tfjs-wasm";
  return compared ? (quick ? 3 : 5) : quick ? 1 : 2;
}
