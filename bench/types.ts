/** The shape of `bench/results/latest.json`. */
import type { FusedRow } from "./fused-rows.js";

export type OpId = "train" | "infer" | "bwd" | "fwdbwd";
/** `plain`: the plain JS loop (`bench/plain.ts`); `js`: the package's pure-JS back end. */
export type Impl = "simd" | "scalar" | "js" | "plain" | "tfjs-wasm" | "tfjs-cpu" | "copy";
export type Path = "zero-copy" | "copy API" | "";

export interface ContestantResult {
  impl: Impl;
  path: Path;
  name: string;
  /** Median over samples of the mean time per run, and the 10th and 90th percentiles. */
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
  /** Minimal bytes of the op (passes · 4 · n) over the median time. */
  gbps: number;
  /** gbps over the same-case wasm SIMD copy's. */
  fractionOfCopy: number;
  /** Median time of the JS back end (zero-copy path) over this one's. */
  speedupVsJs: number;
  /** Median time of the plain JS loop over this one's. */
  speedupVsPlain: number;
  samples: number;
  runsPerSample: number;
  /** Largest error relative to the JS back end's result (scaled by its largest value). */
  maxRelError: number | null;
  /** TF.js backward: fwd+bwd − training fwd, not measured on its own. */
  derived: boolean;
}

export interface CaseResult {
  layout: "NCHW" | "NHWC" | "2-D";
  shape: number[];
  shapeLabel: string;
  /** A tiny tensor whose times are the fixed cost of a call (shown in µs). */
  perCall?: boolean;
  op: OpId;
  opLabel: string;
  n: number;
  /** passes · 4 · n: what the op must read and write at least. */
  bytes: number;
  passes: number;
  /** The wasm SIMD copy of n floats (2 passes), timed in the same rounds. */
  copy: { medianMs: number; gbps: number };
  results: ContestantResult[];
}

export interface BenchResults {
  meta: Record<string, unknown>;
  cases: CaseResult[];
  /** Fused BN+ReLU against plain BN and a separate pass (`fused-rows.ts`); absent with --filter. */
  fused?: FusedRow[];
  targets?: { target: string; value: number; ok: boolean; where: string }[];
}
