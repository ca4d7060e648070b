/**
 * Setup file of Vitest's "threads" project: after each suite, checks that its passes really
 * ran chunked on the threaded back end, and that the workers ran some of the chunks.
 */
import { afterAll, expect } from "vitest";
import { resolveBackend } from "../ts/init.js";
import type { ThreadedBackend } from "../ts/threads/backend-threads.js";

afterAll(() => {
  const backend = resolveBackend("simd") as ThreadedBackend;
  const { passes, chunks, callerChunks } = backend.stats;
  expect(backend.threads).toBeGreaterThan(1);
  console.log(
    `threads: ${passes} passes, ${chunks} chunks, the calling thread ran ${callerChunks}`,
  );
  // Each of the three suites runs hundreds of passes over tensors of 16+ floats, cut into
  // 16-float chunks: far more than 20 passes and 2 chunks a pass, unless the threaded back end
  // was bypassed (a pass run whole counts no chunks) or chunking was off.
  expect(passes, "passes run on the pool").toBeGreaterThan(20);
  expect(chunks, "chunks").toBeGreaterThan(2 * passes);
  expect(callerChunks, "chunks the calling thread ran").toBeLessThan(chunks);
});
