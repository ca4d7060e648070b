/**
 * Node: workers are `worker_threads` running the pool's worker source (`eval: true`), unref'd
 * so that an idle pool does not keep the process alive.
 *
 * @module
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { ThreadPlatform } from "./pool.js";

export const nodeThreads: ThreadPlatform = {
  cores: () => availableParallelism(),
  spawn(source, data, onMessage, onError) {
    const worker = new Worker(source, { eval: true, workerData: data });
    worker.on("message", onMessage);
    worker.on("error", onError);
    // After the listeners, which would ref it again.
    worker.unref();
    return { terminate: () => void worker.terminate() };
  },
};
