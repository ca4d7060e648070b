/**
 * Runs the experiment on two threads: each network trains in its own worker (the machine this
 * demo targets has two cores), with the same initial weights and mini-batches as
 * {@link runExperiment} would use in one thread — the results are the same, in half the time.
 *
 * @module
 */
import { Worker } from "node:worker_threads";
import type { EvalPoint, ExperimentResult, NetworkResult, Progress, Settings } from "./train.js";

/** What a worker is given. */
export interface WorkerJob {
  dataDir: string;
  settings: Settings;
  batchNorm: boolean;
  /** Paths of the wasm builds, for `init()`. */
  wasm: { simd: string; scalar: string };
  /** Post a progress message every this many steps. */
  reportEvery: number;
}

/** What a worker posts. */
export type WorkerMessage =
  | { type: "step"; step: number; recent: { loss: number; accuracy: number } }
  | { type: "eval"; point: EvalPoint }
  | { type: "done"; result: NetworkResult };

/**
 * Starts `worker.ts` (or another entry of this folder) in a worker thread. Workers do not
 * inherit tsx's module hooks, so the worker registers them itself before importing the
 * TypeScript entry.
 */
export function startWorker(job: unknown, file = "./worker.ts"): Worker {
  const entry = new URL(file, import.meta.url).href;
  const tsx = import.meta.resolve("tsx/esm/api");
  const code =
    `import(${JSON.stringify(tsx)})` +
    `.then((api) => api.tsImport(${JSON.stringify(entry)}, ${JSON.stringify(entry)}))` +
    ".catch((error) => { process.exitCode = 1; throw error; });";
  return new Worker(code, { eval: true, workerData: job });
}

/** Trains both networks in parallel; calls back like {@link runExperiment}. */
export async function runExperimentParallel(
  dataDir: string,
  settings: Settings,
  wasm: WorkerJob["wasm"],
  callbacks: {
    onProgress?: (progress: Progress) => void;
    onEval?: (step: number, plain: EvalPoint, bn: EvalPoint) => void;
  } = {},
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
      const worker = startWorker({ dataDir, settings, batchNorm, wasm, reportEvery: 10 });
      workers.push(worker);
      worker.on("message", (m: WorkerMessage) => {
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
      });
      worker.on("error", reject);
      // After "done" this is a no-op; before it, the worker died without saying why.
      worker.on("exit", (code) => {
        const which = batchNorm ? "with" : "without";
        reject(
          new Error(`the worker training the network ${which} BN exited early (code ${code})`),
        );
      });
    });
  try {
    const [plain, bn] = await Promise.all([run(false), run(true)]);
    report();
    return { settings, plain, bn, wallSeconds: (performance.now() - start) / 1000 };
  } finally {
    for (const w of workers) await w.terminate();
  }
}
