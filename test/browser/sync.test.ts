/**
 * Synchronized batch norm in headless Chromium: the library (bundled from ts/ by esbuild, with
 * the .wasm builds beside it) on a page served cross-origin isolated (COOP same-origin, COEP
 * require-corp), replicas in module Web Workers over createSyncGroup's SharedArrayBuffer
 * (fixtures/sync/). Each replica's results must be the whole batch's, against the float64
 * reference with the tolerance of test/sync-workers.test.ts; a replica that fails aborts the
 * other at once; the main thread may not join; a page that is not isolated gets the error
 * that says which headers it needs.
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, resolve, sep } from "node:path";
import { build } from "esbuild";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertClose, errorScales } from "../compare.js";
import { channelOf, RefBatchNorm } from "../reference.js";
import { rowsBefore, rowsOf, type SyncCase, stepData } from "../sync-cases.js";
import { launchChromium, openPage, ROOT } from "./harness.js";
import type { Reference } from "./reference.js";

const TOL = 1e-5;
const CASE: SyncCase = {
  name: "browser",
  backend: "simd",
  layout: "NHWC",
  rows: [3, 5],
  rest: [3, 5, 4],
  offset: 10,
  seed: 9,
};
const C = 4;

/** What a replica posts: one training step's results (or its error). */
type Replica = Pick<Reference, "y" | "dx" | "dWeight" | "dBias" | "runningMean" | "runningVar"> & {
  error?: string;
  backend: string;
};

interface Report {
  isolated: boolean;
  error?: string;
  create?: string;
  mainJoin?: string;
  replicas?: Replica[];
  abort?: { error?: string }[];
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
};

let dir = "";
let server: Server | undefined;
let url = "";
let browser: Browser | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sync-page-"));
  await cp(join(ROOT, "test/browser/fixtures/sync"), dir, { recursive: true });
  await mkdir(join(dir, "lib"));
  await build({
    entryPoints: [join(ROOT, "ts/index.browser.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    outfile: join(dir, "lib/index.browser.js"),
    logLevel: "silent",
  });
  for (const kind of ["simd", "scalar"]) {
    await cp(join(ROOT, `dist/batchnorm-${kind}.wasm`), join(dir, `lib/batchnorm-${kind}.wasm`));
  }
  const { x, dy } = stepData(CASE, 0);
  const data = { rows: CASE.rows, rest: CASE.rest, layout: CASE.layout, C, x: [...x], dy: [...dy] };
  await writeFile(join(dir, "data.json"), JSON.stringify(data));
  server = createServer(async (req, res) => {
    const u = new URL(req.url ?? "/", "http://localhost");
    const file = resolve(dir, `.${u.pathname === "/" ? "/index.html" : u.pathname}`);
    const headers: Record<string, string> = { "Cache-Control": "no-store" };
    // Isolation is the page's: "?open" serves it without, to see createSyncGroup refuse.
    if (!u.searchParams.has("open")) {
      headers["Cross-Origin-Opener-Policy"] = "same-origin";
      headers["Cross-Origin-Embedder-Policy"] = "require-corp";
    }
    try {
      if (!file.startsWith(dir + sep)) throw new Error("outside");
      const body = await readFile(file);
      res.writeHead(200, { ...headers, "Content-Type": TYPES[extname(file)] ?? "text/plain" });
      res.end(body);
    } catch {
      res.writeHead(404, headers);
      res.end("not found");
    }
  });
  await new Promise<void>((ok) => server?.listen(0, "127.0.0.1", ok));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await new Promise<void>((ok) => (server ? server.close(() => ok()) : ok()));
  if (dir !== "") await rm(dir, { recursive: true, force: true });
});

describe("synchronized batch norm in Web Workers (headless Chromium)", () => {
  it("replicas on an isolated page get the whole batch's results; a failing one aborts the other", async () => {
    const { report } = await openPage<Report>(browser as Browser, url);
    expect(report.error).toBeUndefined();
    expect(report.isolated).toBe(true);
    expect(report.mainJoin).toMatch(
      /cannot block in Atomics.wait .*join the group from a Web Worker/,
    );

    const { x, dy } = stepData(CASE, 0);
    const shape = [rowsBefore(CASE, CASE.rows.length), ...CASE.rest];
    const chan = channelOf(shape, CASE.layout);
    const ref = new RefBatchNorm(C, { layout: CASE.layout });
    const y = Float32Array.from(ref.forward(x, shape));
    const mean = ref.lastMean as Float64Array;
    const variance = ref.lastVar as Float64Array;
    const g = ref.backward(dy);
    const scales = errorScales(
      x,
      dy,
      { chan, mean, variance, eps: 1e-5, weight: null, bias: null },
      true,
    );
    const part = (a: ArrayLike<number>, r: number) =>
      rowsOf(CASE, Float32Array.from(a), rowsBefore(CASE, r), CASE.rows[r] as number);
    const rm = ref.runningMean as Float64Array;
    const rv = ref.runningVar as Float64Array;
    const meanScale = rm.map((m, k) => Math.abs(m) + Math.sqrt(rv[k] as number));
    (report.replicas ?? []).forEach((got, r) => {
      expect(got.error, `rank ${r}`).toBeUndefined();
      expect(got.backend).toBe("simd");
      assertClose(`rank ${r}: y`, got.y, part(y, r), part(scales.y, r), TOL);
      assertClose(`rank ${r}: dx`, got.dx, part(g.dx, r), part(scales.dx, r), TOL);
      assertClose(`rank ${r}: dWeight`, got.dWeight, g.dWeight, scales.dWeight, TOL);
      assertClose(`rank ${r}: dBias`, got.dBias, g.dBias, scales.dBias, TOL);
      assertClose(`rank ${r}: runningMean`, got.runningMean, rm, meanScale, TOL);
      assertClose(`rank ${r}: runningVar`, got.runningVar, rv, rv, TOL);
    });
    expect(report.replicas).toHaveLength(2);

    const [a0, a1] = report.abort ?? [];
    expect(a1?.error).toMatch(/^RangeError: BatchNorm.forward: /);
    expect(a0?.error).toContain(`rank 1 failed: ${a1?.error}`);
  });

  it("a page that is not cross-origin isolated: createSyncGroup names the headers it needs", async () => {
    const { report } = await openPage<Report>(browser as Browser, `${url}?open`);
    expect(report.isolated).toBe(false);
    expect(report.create).toMatch(
      /^Error: createSyncGroup: SharedArrayBuffer is not available: .*Cross-Origin-Opener-Policy: same-origin .*Cross-Origin-Embedder-Policy: require-corp/,
    );
  });
});
