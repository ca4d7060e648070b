/**
 * Threads in headless Chromium, from the packed package in a plain import-map page: on a
 * cross-origin-isolated page a module worker runs `init({ threads: 2 })` with two threads and
 * matches the main thread's single-threaded results; the main thread itself may not block, so
 * it falls back and says so (and `requireThreads` rejects). On a page that is not isolated,
 * neither has SharedArrayBuffer and both fall back with that reason.
 */
import { cp } from "node:fs/promises";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  launchChromium,
  makeApp,
  openPage,
  pack,
  ROOT,
  type Served,
  serve,
  workDir,
} from "./harness.js";

interface Side {
  threads?: number;
  reason?: string;
  error?: string;
  yOff?: number;
  dxOff?: number;
}
interface Report {
  isolated: boolean;
  strict?: { threads?: number; error?: string };
  main?: Side;
  worker?: Side;
  error?: string;
}

let browser: Browser | undefined;
let dir: Awaited<ReturnType<typeof workDir>> | undefined;
let server: Served | undefined;

beforeAll(async () => {
  browser = await launchChromium();
  dir = await workDir();
  const tarball = await pack(dir.dir);
  const app = await makeApp(dir.dir, "plain", tarball);
  const fixture = join(ROOT, "test/browser/fixtures/threads");
  await cp(join(fixture, "threads.html"), join(app, "threads.html"));
  for (const f of ["threads.js", "threads-worker.js", "data.js"]) {
    await cp(join(fixture, f), join(app, "src", f));
  }
  server = await serve(app, join(app, "node_modules/wasm-batchnorm/dist"));
});

afterAll(async () => {
  await server?.close();
  await browser?.close();
  await dir?.clean();
});

describe("threads in Chromium", () => {
  it("an isolated page's worker runs two threads, as exact as one; its main thread falls back", async () => {
    const { report, errors } = await openPage<Report>(
      browser as Browser,
      `${server?.url}/threads.html?coi=1`,
    );
    expect(errors).toEqual([]);
    expect(report.error).toBeUndefined();
    expect(report.isolated).toBe(true);
    expect(report.worker?.error).toBeUndefined();
    expect(report.worker?.threads).toBe(2);
    expect(report.worker?.reason).toBeUndefined();
    // Float32 rounding of sums cut at other places (the worker's chunks).
    expect(report.worker?.yOff).toBeLessThan(1e-5);
    expect(report.worker?.dxOff).toBeLessThan(1e-5);
    expect(report.main?.threads).toBe(1);
    expect(report.main?.reason).toMatch(/may not block in Atomics\.wait .*in a worker/);
    expect(report.strict?.error).toMatch(/2 threads were required, but threads cannot run here/);
  });

  it("a page that is not isolated falls back on both threads, and says why", async () => {
    const { report, errors } = await openPage<Report>(
      browser as Browser,
      `${server?.url}/threads.html`,
    );
    expect(errors).toEqual([]);
    expect(report.error).toBeUndefined();
    expect(report.isolated).toBe(false);
    for (const side of [report.main, report.worker]) {
      expect(side?.threads).toBe(1);
      expect(side?.reason).toMatch(
        /not cross-origin isolated .*Cross-Origin-Embedder-Policy: require-corp/,
      );
    }
    expect(report.worker?.yOff).toBe(0);
  });
});
