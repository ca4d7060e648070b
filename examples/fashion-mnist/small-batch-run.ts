/**
 * Runs the small-batch experiment's networks: in this thread one after the other, or in a pool
 * of worker threads, one network per worker at a time. Every network draws its own initial
 * weights and batches from the seed, so the results are the same either way.
 *
 * @module
 */
import type { ImageSet } from "./idx.js";
import { startWorker } from "./parallel.js";
import {
  NETWORKS,
  type NetworkSpec,
  type SmallBatchEval,
  type SmallBatchNetworkResult,
  type SmallBatchSettings,
  trainNetwork,
} from "./small-batch.js";

/** What a worker is given. */
export interface SmallBatchJob {
  dataDir: string;
  settings: SmallBatchSettings;
  spec: NetworkSpec;
  wasm: { simd: string; scalar: string };
}

/** What a worker posts. */
export type SmallBatchMessage =
  | { type: "eval"; id: string; point: SmallBatchEval }
  | { type: "done"; result: SmallBatchNetworkResult };

export interface SmallBatchResult {
  settings: SmallBatchSettings;
  networks: SmallBatchNetworkResult[];
  /** Wall-clock time of the whole run, in seconds. */
  wallSeconds: number;
}

type OnEval = (id: string, e: SmallBatchEval) => void;

/** All networks in this thread (needs `init()` to have run). */
export function runSmallBatch(
  data: { train: ImageSet; test: ImageSet },
  settings: SmallBatchSettings,
  onEval?: OnEval,
  specs: readonly NetworkSpec[] = NETWORKS,
): SmallBatchResult {
  const start = performance.now();
  const networks = specs.map((spec) =>
    trainNetwork(data, settings, spec, (e) => onEval?.(spec.id, e)),
  );
  return { settings, networks, wallSeconds: (performance.now() - start) / 1000 };
}

/** All networks in `threads` worker threads; the results in the order of `specs`. */
export async function runSmallBatchParallel(
  job: Omit<SmallBatchJob, "spec">,
  threads: number,
  onEval?: OnEval,
  specs: readonly NetworkSpec[] = NETWORKS,
): Promise<SmallBatchResult> {
  const start = performance.now();
  const results: SmallBatchNetworkResult[] = [];
  let next = 0;
  const lane = async () => {
    while (next < specs.length) {
      const i = next++;
      results[i] = await runOne({ ...job, spec: specs[i] as NetworkSpec }, onEval);
    }
  };
  await Promise.all(Array.from({ length: Math.min(threads, specs.length) }, lane));
  return {
    settings: job.settings,
    networks: results,
    wallSeconds: (performance.now() - start) / 1000,
  };
}

function runOne(job: SmallBatchJob, onEval?: OnEval): Promise<SmallBatchNetworkResult> {
  return new Promise((resolve, reject) => {
    const worker = startWorker(job, "./small-batch-worker.ts");
    let done = false;
    worker.on("message", (m: SmallBatchMessage) => {
      if (m.type === "eval") onEval?.(m.id, m.point);
      else {
        done = true;
        resolve(m.result);
        void worker.terminate();
      }
    });
    worker.on("error", reject);
    worker.on("exit", (code) => {
      if (!done)
        reject(new Error(`the worker training ${job.spec.id} exited early (code ${code})`));
    });
  });
}
