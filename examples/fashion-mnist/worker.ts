/**
 * A worker thread that trains one of the two networks (see `parallel.ts`), reporting progress
 * and evaluations to the main thread as messages.
 *
 * @module
 */
import { parentPort, workerData } from "node:worker_threads";
import { init, joinSyncGroup } from "../../ts/index.node.js";
import { loadFashionMnist } from "./idx.js";
import type { WorkerJob, WorkerMessage } from "./parallel.js";
import { Trainer } from "./train.js";

const job = workerData as WorkerJob;
const post = (message: WorkerMessage) => parentPort?.postMessage(message);

await init(job.wasm);
const data = loadFashionMnist(job.dataDir);
// A data-parallel replica: every replica trains the same network; rank 0 evaluates and reports.
const replica = job.replica && joinSyncGroup(job.replica.handle, job.replica.rank);
const reports = (replica?.rank ?? 0) === 0;
const trainer = new Trainer(data, job.settings, job.batchNorm, replica);
try {
  for (;;) {
    if (trainer.evalDue && reports) post({ type: "eval", point: trainer.evaluate() });
    if (trainer.step === job.settings.steps) break;
    trainer.trainStep();
    if (trainer.step % job.reportEvery === 0 && reports) {
      post({ type: "step", step: trainer.step, recent: { ...trainer.recent } });
    }
  }
  post({ type: "done", result: trainer.result });
} catch (error) {
  replica?.abort(error); // the other replicas fail at once instead of waiting for this one
  throw error;
} finally {
  trainer.dispose();
}
