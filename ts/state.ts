/**
 * A module's state: its learnable parameters and running statistics, and the state dict with
 * PyTorch's keys that saves and restores them.
 *
 * @module
 */
import { checkChannelValues, show, typeName } from "./errors.js";

/** A module's state, with PyTorch's `state_dict()` keys. Absent keys: see {@link BatchNorm.stateDict}. */
export interface StateDict {
  weight?: Float32Array;
  bias?: Float32Array;
  running_mean?: Float32Array;
  running_var?: Float32Array;
  num_batches_tracked?: number;
}

/** What {@link BatchNorm.loadStateDict} accepts: a {@link StateDict}, or one with wider types. */
export interface StateDictInput {
  weight?: Float32Array | Float64Array | readonly number[];
  bias?: Float32Array | Float64Array | readonly number[];
  running_mean?: Float32Array | Float64Array | readonly number[];
  running_var?: Float32Array | Float64Array | readonly number[];
  num_batches_tracked?: number | bigint;
}

/** The per-channel arrays of a module (those it has) and its batch count. */
export class ModuleState {
  /** γ, per channel (initially 1); `null` without a learnable weight. */
  readonly weight: Float32Array | null;
  /** β, per channel (initially 0); `null` without a learnable bias. */
  readonly bias: Float32Array | null;
  /** Running mean (initially 0); `null` when running statistics are not tracked. */
  readonly runningMean: Float32Array | null;
  /** Running unbiased variance (initially 1); `null` when not tracked. */
  readonly runningVar: Float32Array | null;
  numBatchesTracked = 0;

  constructor(
    channels: number,
    parameters: { hasWeight: boolean; hasBias: boolean },
    trackRunningStats: boolean,
  ) {
    this.weight = parameters.hasWeight ? new Float32Array(channels) : null;
    this.bias = parameters.hasBias ? new Float32Array(channels) : null;
    this.runningMean = trackRunningStats ? new Float32Array(channels) : null;
    this.runningVar = trackRunningStats ? new Float32Array(channels) : null;
    this.resetParameters();
  }

  /** PyTorch's `reset_running_stats()`: mean 0, variance 1, no batches tracked. */
  resetRunningStats(): void {
    this.runningMean?.fill(0);
    this.runningVar?.fill(1);
    this.numBatchesTracked = 0;
  }

  /** Sets the running statistics (which the module tracks) and the batch count. */
  setRunningStats(mean: ArrayLike<number>, variance: ArrayLike<number>, batches: number): void {
    (this.runningMean as Float32Array).set(mean);
    (this.runningVar as Float32Array).set(variance);
    this.numBatchesTracked = batches;
  }

  /** PyTorch's `reset_parameters()`: the running statistics, and weight 1, bias 0. */
  resetParameters(): void {
    this.resetRunningStats();
    this.weight?.fill(1);
    this.bias?.fill(0);
  }

  /** Copies of the arrays, with PyTorch's keys. */
  stateDict(): StateDict {
    const sd: StateDict = {};
    if (this.weight !== null) sd.weight = this.weight.slice();
    if (this.bias !== null) sd.bias = this.bias.slice();
    if (this.runningMean !== null && this.runningVar !== null) {
      sd.running_mean = this.runningMean.slice();
      sd.running_var = this.runningVar.slice();
      sd.num_batches_tracked = this.numBatchesTracked;
    }
    return sd;
  }

  /** Checks everything first and changes nothing unless all of it is valid. */
  load(stateDict: StateDictInput, where: string): void {
    if (typeof stateDict !== "object" || stateDict === null) {
      throw new TypeError(`${where}: stateDict must be an object, got ${show(stateDict)}`);
    }
    const expected = Object.keys(this.stateDict());
    const given = Object.keys(stateDict);
    const missing = expected.filter((k) => !given.includes(k));
    const unexpected = given.filter((k) => !expected.includes(k));
    if (missing.length > 0 || unexpected.length > 0) {
      throw new RangeError(
        `${where}: expected keys [${expected.join(", ")}]` +
          (missing.length > 0 ? `; missing: ${missing.join(", ")}` : "") +
          (unexpected.length > 0 ? `; unexpected: ${unexpected.join(", ")}` : ""),
      );
    }
    const sd = stateDict as Record<string, unknown>;
    const targets = {
      weight: this.weight,
      bias: this.bias,
      running_mean: this.runningMean,
      running_var: this.runningVar,
    };
    const arrays = (Object.keys(targets) as (keyof typeof targets)[])
      .filter((k) => k in sd)
      .map((k) => {
        const target = targets[k] as Float32Array;
        return [target, checkChannelValues(sd[k], target.length, where, k)] as const;
      });
    let tracked = this.numBatchesTracked;
    if ("num_batches_tracked" in sd) tracked = batchCount(sd.num_batches_tracked, where);
    for (const [target, values] of arrays) target.set(values);
    this.numBatchesTracked = tracked;
  }
}

function batchCount(v: unknown, where: string): number {
  const num = typeof v === "bigint" ? Number(v) : v;
  if (typeof num !== "number") {
    throw new TypeError(
      `${where}: num_batches_tracked must be a number or bigint, got ${typeName(v)}`,
    );
  }
  if (!Number.isSafeInteger(num) || num < 0) {
    throw new RangeError(`${where}: num_batches_tracked must be an integer ≥ 0, got ${show(v)}`);
  }
  return num;
}
