/**
 * Starts a TypeScript module in a worker thread. Workers do not inherit tsx's module hooks, so
 * the worker registers them itself before importing the entry.
 *
 * @module
 */
import { Worker } from "node:worker_threads";

/** A worker running `entry` (a .ts file URL) with `workerData`. */
export function startTsWorker(entry: URL, workerData: unknown): Worker {
  const tsx = import.meta.resolve("tsx/esm/api");
  const code =
    `import(${JSON.stringify(tsx)})` +
    `.then((api) => api.tsImport(${JSON.stringify(entry.href)}, ${JSON.stringify(entry.href)}))` +
    ".catch((error) => { process.exitCode = 1; throw error; });";
  return new Worker(code, { eval: true, workerData });
}
