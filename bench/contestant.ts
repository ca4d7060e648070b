/**
 * A contestant (one implementation of one op, ready to run), what it produced, and the check
 * of that against the reference before any timing.
 *
 * @module
 */
import { relError } from "./stats.js";
import type { Impl, OpId, Path } from "./types.js";

/** What an op produced, read back for the correctness check. */
export interface Outputs {
  y?: Float32Array | undefined;
  dx?: Float32Array | undefined;
  dWeight?: Float32Array | undefined;
  dBias?: Float32Array | undefined;
}

export interface Contestant {
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

export const contestantName = (c: { impl: Impl; path: Path }) =>
  c.path === "" ? c.impl : `${c.impl} ${c.path === "zero-copy" ? "0-copy" : "copy-API"}`;

/** The reference results of an op, and the least scale each output's error is measured by. */
export interface Reference {
  outputs: Outputs;
  floors: Partial<Record<keyof Outputs, number>>;
}

/** Compares every output the reference has; returns the largest relative error. */
export function check(got: Outputs, want: Reference, label: string, tolerance: number): number {
  let worst = 0;
  for (const key of ["y", "dx", "dWeight", "dBias"] as const) {
    const w = want.outputs[key];
    if (w === undefined) continue;
    const o = got[key];
    const err = o === undefined ? Number.POSITIVE_INFINITY : relError(o, w, want.floors[key]);
    if (!(err <= tolerance)) {
      throw new Error(
        `${label}: ${key} differs from the JS back end's by ${err.toExponential(2)} ` +
          `(relative to its scale; tolerance ${tolerance}): refusing to time a wrong answer`,
      );
    }
    worst = Math.max(worst, err);
  }
  return worst;
}

/** A module of one implementation, driven the same way whatever it is. */
export interface Runner {
  /** Untimed: training (batch statistics) or inference (running statistics) mode. */
  mode(training: boolean): void;
  forward(): void;
  /** Differentiates the last forward. */
  backward(): void;
  /** The last forward's `y` and/or the last backward's gradients. */
  read(y: boolean, grads: boolean): Outputs;
}

/** The contestant that runs `op` on `runner`; a backward is timed without its forward. */
export function runnerContestant(impl: Impl, path: Path, runner: Runner, op: OpId): Contestant {
  const training = op !== "infer";
  const base = { impl, path, enter: () => runner.mode(training) };
  const c: Contestant =
    op === "train" || op === "infer"
      ? { ...base, run: () => runner.forward() }
      : op === "bwd"
        ? { ...base, prepare: () => runner.forward(), run: () => runner.backward() }
        : {
            ...base,
            run: () => {
              runner.forward();
              runner.backward();
            },
          };
  return {
    ...c,
    outputs: () => {
      c.prepare?.();
      c.run();
      return runner.read(op !== "bwd", op === "bwd" || op === "fwdbwd");
    },
  };
}
