/**
 * One replica of test/sync-workers.test.ts, in a worker thread: joins the group and runs its
 * scenario, posting what it got (results, or the error and how long it took to come).
 */
import { parentPort, workerData } from "node:worker_threads";
import { BatchNorm, init, joinSyncGroup, type SyncGroupHandle } from "../ts/index.node.js";
import { rowsBefore, runCase, type SyncCase } from "./sync-cases.js";

export interface ReplicaJob {
  handle: SyncGroupHandle;
  rank: number;
  wasm: { simd: string; scalar: string };
  /** "cases": run every case; the others: rank `bad` fails in that way, the rest train. */
  scenario: "cases" | "throw" | "absent" | "exit";
  cases: SyncCase[];
  bad: number;
}

export type ReplicaMessage =
  | { type: "results"; results: ReturnType<typeof runCase>[] }
  | { type: "error"; name: string; message: string; ms: number }
  | { type: "idle" };

const job = workerData as ReplicaJob;
const post = (m: ReplicaMessage) => parentPort?.postMessage(m);

await init(job.wasm);
const member = joinSyncGroup(job.handle, job.rank);
const c = job.cases[0] as SyncCase;
const start = performance.now();
const report = (error: unknown) => {
  const e = error as Error;
  post({ type: "error", name: e.name, message: e.message, ms: performance.now() - start });
};
if (job.scenario === "cases") {
  try {
    const from = (cs: SyncCase) => rowsBefore(cs, job.rank);
    post({
      type: "results",
      results: job.cases.map((cs) => runCase(cs, from(cs), cs.rows[job.rank] as number, member)),
    });
  } catch (error) {
    member.abort(error);
    report(error);
  }
} else if (job.rank !== job.bad) {
  try {
    runCase(c, rowsBefore(c, job.rank), c.rows[job.rank] as number, member);
    post({ type: "results", results: [] });
  } catch (error) {
    report(error);
  }
} else if (job.scenario === "throw") {
  // Bad input: a shape whose channels do not match. The replica tells the group and stops.
  try {
    new BatchNorm(4, { sync: member }).forward(new Float32Array(6), [2, 3]);
  } catch (error) {
    member.abort(error);
    report(error);
  }
} else if (job.scenario === "exit") {
  process.exit(3);
} else {
  post({ type: "idle" }); // "absent": joined, then never calls allGather
}
