/**
 * Timing one case: every contestant is checked against the reference, warmed up, then sampled
 * in rounds, each round giving every contestant one sample in turn, so that drift and noise of
 * a shared machine hit all of them alike. A sample is the mean time of `k` back-to-back runs
 * (`k` makes a sample last a few milliseconds).
 *
 * @module
 */
import { type Contestant, check, contestantName, type Reference } from "./contestant.js";
import { type Budget, minSamples, TOLERANCE } from "./plan.js";

export const now = () => performance.now();
export const gc = (globalThis as { gc?: () => void }).gc;

/** Bytes in use after the last collection (heap and array buffers). */
let heapAfterGc = 0;
const inUse = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

/**
 * Finishes the garbage of the previous samples (the copy API allocates a new output per call,
 * TF.js new tensors) here, not in background threads that compete with the next sample. Only
 * when there is some (or `always`): a full collection takes about 20 ms here, more than most
 * samples.
 */
export function collect(always = false): void {
  if (gc === undefined || (!always && inUse() < heapAfterGc + 16 * 2 ** 20)) return;
  gc();
  heapAfterGc = inUse();
}

export interface Timed {
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
  if (c.prepare === undefined) {
    // One clock read around all runs: a call of a µs is not drowned in the clock's own cost.
    const t0 = now();
    for (let i = 0; i < k; i++) c.run();
    return (now() - t0) / k;
  }
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
async function warmUp(c: Contestant, plan: Budget): Promise<number> {
  await c.enter?.();
  const start = now();
  let runs = 0;
  let best = Number.POSITIVE_INFINITY;
  while (now() - start < plan.maxWarmupMs && (runs < 3 || now() - start < plan.warmupMs)) {
    best = Math.min(best, sample(c, 1));
    runs++;
  }
  return best;
}

/** Checks, warms up and samples the contestants of one case; `status` hears of each round. */
export async function timeCase(
  contestants: readonly Contestant[],
  reference: Reference,
  label: string,
  plan: Budget,
  status: (text: string) => void,
): Promise<Timed[]> {
  const timed: Timed[] = [];
  for (const c of contestants) {
    await c.enter?.();
    const tol = c.impl.startsWith("tfjs") ? TOLERANCE.tfjs : TOLERANCE.ours;
    const t0 = now();
    const maxErr =
      c.outputs === undefined
        ? null
        : check(c.outputs(), reference, `${label}, ${contestantName(c)}`, tol);
    const checkMs = now() - t0;
    // The check ran the op once; when that took longer than a whole warm-up, it was one,
    // and one more run (now warm; --quick skips it) sizes the samples.
    if (plan.quick && checkMs > 1500) {
      // --quick: a run of seconds (TF.js's CPU back end on the large shapes) is timed once,
      // by the check itself (which also reads the result back).
      timed.push({ c, k: 1, t1: checkMs, samples: [checkMs], quota: 0, maxErr });
      continue;
    }
    const t1 = checkMs <= plan.maxWarmupMs ? await warmUp(c, plan) : sample(c, 1);
    if (t1 > 1500) {
      // A warm run of seconds (TF.js's CPU back end, fwd+bwd on the large shapes): its one
      // sample, rather than a third run.
      timed.push({ c, k: 1, t1, samples: [t1], quota: 0, maxErr });
      continue;
    }
    const k = Math.max(1, Math.round(plan.sampleMs / t1));
    timed.push({ c, k, t1, samples: [], quota: 0, maxErr });
  }
  // Rounds: as many as the budget allows; each contestant may spend an equal share of it.
  const share = plan.caseMs / timed.length;
  const roundMs = timed.reduce((s, t) => s + (t.samples.length > 0 ? 0 : t.k * t.t1), 0);
  const rounds = Math.max(
    plan.minRounds,
    Math.min(plan.maxRounds, Math.floor(plan.caseMs / roundMs)),
  );
  for (const t of timed.filter((t) => t.samples.length === 0)) {
    const affordable = Math.floor(Math.max(share, plan.caseMs / plan.maxRounds) / (t.k * t.t1));
    t.quota = Math.min(rounds, Math.max(minSamples(t.c.impl, t.c.path, plan.quick), affordable));
  }
  collect(true);
  for (let r = 0; r < rounds; r++) {
    status(`round ${r + 1}/${rounds}`);
    for (const t of timed) {
      // Spread a smaller quota evenly over the rounds.
      if (Math.floor(((r + 1) * t.quota) / rounds) === Math.floor((r * t.quota) / rounds)) {
        continue;
      }
      await t.c.enter?.();
      collect();
      t.samples.push(sample(t.c, t.k));
    }
  }
  return timed;
}
