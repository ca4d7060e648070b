/**
 * A worker thread that trains one network of the small-batch experiment (see
 * `small-batch-run.ts`), posting each evaluation and then the result.
 *
 * @module
 */
import { parentPort, workerData } from "node:worker_threads";
import { init } from "../../ts/index.node.js";
import { loadFashionMnist } from "./idx.js";
import { trainNetwork } from "./small-batch.js";
import type { SmallBatchJob, SmallBatchMessage } from "./small-batch-run.js";

const job = workerData as SmallBatchJob;
const post = (message: SmallBatchMessage) => parentPort?.postMessage(message);

await init(job.wasm);
const result = trainNetwork(loadFashionMnist(job.dataDir), job.settings, job.spec, (e) =>
  post({ type: "eval", id: job.spec.id, point: e }),
);
post({ type: "done", result });
