/**
 * Runs the experiment on two threads: each network trains in its own worker (the machine this
 * demo targets has two cores), with the same initial weights and mini-batches as
 * {@link runExperiment} would use in one thread — the results are the same, in half the time.
 *
 * @module
 */
import type { Worker } from "node:worker_threads";
import { abortSyncGroup, createSyncGroup, type SyncGroupHandle } from "../../ts/index.node.js";
import { gradientFloats } from "./data-parallel.js";
import type { EvalPoint, ExperimentResult, NetworkResult, Progress, Settings } from "./train.js";
import { startTsWorker } from "./ts-worker.js";

/** What a worker is given. */
export interface WorkerJob {
  dataDir: string;
  settings: Settings;
  batchNorm: boolean;
  /** Paths of the wasm builds, for `init()`. */
  wasm: { simd: string; scalar: string };
  /** Post a progress message every this many steps. */
  reportEvery: number;
  /** This worker is one data-parallel replica of its network (see data-parallel.ts). */
  replica?: { handle: SyncGroupHandle; rank: number };
}

/** What a worker posts. */
export type WorkerMessage =
  | { type: "step"; step: number; recent: { loss: number; accuracy: number } }
  | { type: "eval"; point: EvalPoint }
  | { type: "done"; result: NetworkResult };

/** Starts `worker.ts` (or another entry of this folder) in a worker thread. */
export function startWorker(job: unknown, file = "./worker.ts"): Worker {
  return startTsWorker(new URL(file, import.meta.url), job);
}

/**
 * Trains both networks in parallel; calls back like {@link runExperiment}. With `replicas` > 1,
 * each network is trained data-parallel by that many workers (synchronized BN, all-reduced
 * gradients), rank 0 reporting.
 */
export async function runExperimentParallel(
  dataDir: string,
  settings: Settings,
  wasm: WorkerJob["wasm"],
  callbacks: {
    onProgress?: (progress: Progress) => void;
    onEval?: (step: number, plain: EvalPoint, bn: EvalPoint) => void;
  } = {},
  replicas = 1,
): Promise<ExperimentResult> {
  const start = performance.now();
  const state = [false, true].map(() => ({
    step: 0,
    recent: { loss: Number.NaN, accuracy: Number.NaN },
    evals: [] as EvalPoint[],
  }));
  const [plainState, bnState] = state as [(typeof state)[0], (typeof state)[0]];
  const workers: Worker[] = [];
  let reported = 0; // evaluations passed on to onEval
  const report = () => {
    const step = Math.min(plainState.step, bnState.step);
    const last = (s: typeof plainState) => s.evals[s.evals.length - 1]?.accuracy ?? Number.NaN;
    callbacks.onProgress?.({
      step,
      steps: settings.steps,
      plain: { ...plainState.recent },
      bn: { ...bnState.recent },
      testAccuracy: { plain: last(plainState), bn: last(bnState) },
      elapsedSeconds: (performance.now() - start) / 1000,
    });
  };
  const run = (batchNorm: boolean) =>
    new Promise<NetworkResult>((resolve, reject) => {
      const s = batchNorm ? bnState : plainState;
      // Replicas wait for each other at most a minute per exchange (rank 0's evaluations and
      // the workers' start-up included), and a worker that dies aborts its group at once.
      const group =
        replicas > 1
          ? createSyncGroup(replicas, {
              maxFloats: gradientFloats(settings.sizes),
              timeoutMs: 60_000,
            })
          : undefined;
      for (let rank = 0; rank < replicas; rank++) {
        const replica = group && { handle: group, rank };
        const worker = startWorker({
          dataDir,
          settings,
          batchNorm,
          wasm,
          reportEvery: 10,
          replica,
        });
        workers.push(worker);
        let done = false;
        worker.on("message", (m: WorkerMessage) => {
          if (m.type === "done") done = true;
          if (rank === 0) onMessage(s, m, resolve);
        });
        const fail = (error: Error) => {
          if (group) abortSyncGroup(group, error);
          reject(error);
        };
        worker.on("error", fail);
        worker.on("exit", (code) => {
          if (done) return;
          const which = batchNorm ? "with" : "without";
          const who = group ? `replica ${rank} of the network` : "the network";
          fail(new Error(`the worker training ${who} ${which} BN exited early (code ${code})`));
        });
      }
    });
  const onMessage = (
    s: typeof plainState,
    m: WorkerMessage,
    resolve: (result: NetworkResult) => void,
  ) => {
    if (m.type === "step") {
      s.step = m.step;
      s.recent = m.recent;
      report();
    } else if (m.type === "eval") {
      s.evals.push(m.point);
      // Both networks' evaluations at the same step, in order, once both have arrived.
      while (reported < Math.min(plainState.evals.length, bnState.evals.length)) {
        const a = plainState.evals[reported] as EvalPoint;
        const b = bnState.evals[reported] as EvalPoint;
        callbacks.onEval?.(a.step, a, b);
        reported++;
      }
    } else {
      resolve(m.result);
    }
  };
  try {
    const [plain, bn] = await Promise.all([run(false), run(true)]);
    report();
    return { settings, plain, bn, wallSeconds: (performance.now() - start) / 1000 };
  } finally {
    for (const w of workers) await w.terminate();
  }
}
