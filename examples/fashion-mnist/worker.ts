/**
 * A worker thread that trains one of the two networks (see `parallel.ts`), reporting progress
 * and evaluations to the main thread as messages.
 *
 * @module
 */
import { parentPort, workerData } from "node:worker_threads";
import { init } from "../../ts/index.node.js";
import { loadFashionMnist } from "./idx.js";
import type { WorkerJob, WorkerMessage } from "./parallel.js";
import { Trainer } from "./train.js";

const job = workerData as WorkerJob;
const post = (message: WorkerMessage) => parentPort?.postMessage(message);

await init(job.wasm);
const data = loadFashionMnist(job.dataDir);
const trainer = new Trainer(data, job.settings, job.batchNorm);
try {
  for (;;) {
    if (trainer.evalDue) post({ type: "eval", point: trainer.evaluate() });
    if (trainer.step === job.settings.steps) break;
    trainer.trainStep();
    if (trainer.step % job.reportEvery === 0) {
      post({ type: "step", step: trainer.step, recent: { ...trainer.recent } });
    }
  }
  post({ type: "done", result: trainer.result });
} finally {
  trainer.dispose();
}
