/**
 * Issue 5: the packed package, installed into small Vite, webpack 5 and Rollup apps and a plain
 * import-map page, built, served on localhost and run in headless Chromium. Each page
 * (fixtures/shared/app.js) runs a training forward, backward and inference on every back end
 * init() found; the numbers are checked against a float64 reference here. Without SIMD it must
 * pick the scalar build; where WebAssembly is blocked (CSP) or missing it must fall back to JS
 * and say so, and forcing a wasm back end there must fail with a clear error.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { createServer } from "vite";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type AppName,
  BUNDLERS,
  build,
  launchChromium,
  makeApp,
  openPage,
  pack,
  type Served,
  serve,
  workDir,
} from "./harness.js";
import { MAX_ULPS, reference, ulpsOff } from "./reference.js";

interface Run {
  backend: string;
  y: number[];
  dx: number[];
  dWeight: number[];
  dBias: number[];
  runningMean: number[];
  runningVar: number[];
  numBatchesTracked: number;
  yEval: number[];
  dxEval: number[];
  yEvalTensor: number[];
}

interface Report {
  expect: "wasm" | "js";
  input: { shape: number[]; x: number[]; dy: number[]; x2: number[] };
  params: { weight: number[]; bias: number[]; eps: number; momentum: number };
  hasWebAssembly: boolean;
  retry?: { firstError: string | null };
  init?: { backend: string; available: string[]; reason?: string };
  initAgainSame?: boolean;
  autoBackend?: string;
  runs?: Record<string, Run>;
  forced?: { simd: string | null; scalar: string | null };
  error?: string;
}

const KEYS = [
  "y",
  "dx",
  "dWeight",
  "dBias",
  "runningMean",
  "runningVar",
  "yEval",
  "dxEval",
] as const;

/** Checks one back end's run against the float64 reference; returns the worst error per key. */
function checkRun(report: Report, backend: string): Record<string, number> {
  const run = report.runs?.[backend];
  expect(run, `no run on the ${backend} back end`).toBeDefined();
  if (run === undefined) return {};
  expect(run.backend).toBe(backend);
  const ref = reference({ ...report.input, ...report.params });
  const worst: Record<string, number> = {};
  for (const key of KEYS) {
    worst[key] = ulpsOff(run[key], ref[key], ref.scale[key]);
    expect(
      worst[key],
      `${backend} ${key}: ${worst[key]} ulps off the float64 reference`,
    ).toBeLessThanOrEqual(MAX_ULPS);
  }
  expect(run.numBatchesTracked).toBe(1);
  // The zero-copy path runs the same kernel: the same numbers, bit for bit.
  expect(run.yEvalTensor).toEqual(run.yEval);
  return worst;
}

let browser: Browser | undefined;
let dir: Awaited<ReturnType<typeof workDir>> | undefined;
let hosted = "";
const outputs = new Map<AppName, Promise<string>>();
const servers = new Map<AppName, Promise<Served>>();
const builds: Promise<unknown>[] = [];

let setupError: unknown;

beforeAll(async () => {
  try {
    await setUp();
  } catch (error) {
    // Every test then fails with this error (a failed hook would only mark them skipped).
    setupError = error;
  }
});

beforeEach(() => {
  if (setupError !== undefined) throw setupError;
});

async function setUp() {
  // Chromium first: a machine without it fails here, before any build.
  browser = await launchChromium();
  dir = await workDir();
  const tarball = await pack(dir.dir);
  // The packed .wasm files, as installed: what /hosted/ serves and what the bundles must emit.
  hosted = join(dir.dir, "vite/node_modules/wasm-batchnorm/dist");
  for (const bundler of [...BUNDLERS, "plain"] as const) {
    const out = makeApp(dir.dir, bundler, tarball).then((app) => build(app, bundler));
    outputs.set(bundler, out);
    servers.set(
      bundler,
      out.then((root) => serve(root, hosted)),
    );
    builds.push(out.catch(() => undefined));
  }
  // Installs and builds run in parallel; each test awaits its own app.
  await Promise.all(builds);
}

afterAll(async () => {
  await Promise.all(
    [...servers.values()].map((s) =>
      s.then(
        (x) => x.close(),
        () => undefined,
      ),
    ),
  );
  await browser?.close();
  await dir?.clean();
});

describe.each([...BUNDLERS, "plain"] as const)("%s app", (bundler) => {
  const server = () => servers.get(bundler) as Promise<Served>;
  const bundled = bundler !== "plain";

  // "plain": <script type="module"> with an import map, no bundler, served as it is.
  if (bundled)
    it("builds, emitting the three .wasm files unchanged as assets", async () => {
      const out = (await outputs.get(bundler)) as string;
      const files = await readdir(out, { recursive: true });
      const wasm = files.filter((f) => f.endsWith(".wasm"));
      expect(wasm).toHaveLength(3);
      const builds = ["batchnorm-simd.wasm", "batchnorm-scalar.wasm", "batchnorm-simd-shared.wasm"];
      const shipped = await Promise.all(builds.map((f) => readFile(join(hosted, f))));
      const emitted = await Promise.all(wasm.map((f) => readFile(join(out, f))));
      for (const bytes of shipped) expect(emitted.some((e) => e.equals(bytes))).toBe(true);
      // The exports map gave the bundler the browser entry, not the Node one (which reads files).
      const js = files.filter((f) => f.endsWith(".js"));
      expect(js.length).toBeGreaterThan(0);
      for (const f of js)
        expect(await readFile(join(out, f), "utf8")).not.toMatch(/node:fs|readFile/);
    });

  it("runs training forward, backward and inference on the SIMD and scalar builds", async () => {
    const s = await server();
    const first = s.requests.length;
    const { report, status, errors } = await openPage<Report>(
      browser as Browser,
      `${s.url}/index.html?retry=1`,
    );
    expect(report.error, errors.join("\n")).toBeUndefined();
    // A failed init() (a missing file) is not cached: the next call loads the real builds.
    expect(report.retry?.firstError).toMatch(/HTTP 404/);
    expect(report.init).toEqual({ backend: "simd", available: ["simd", "scalar", "js"] });
    expect(report.initAgainSame).toBe(true);
    expect(report.autoBackend).toBe("simd");
    expect(status).toBe("wasm-batchnorm: running on the simd back end");
    const worst = Object.fromEntries(["simd", "scalar", "js"].map((b) => [b, checkRun(report, b)]));
    console.info(`${bundler}: worst error in float32 ulps of scale`, JSON.stringify(worst));
    // The bundle fetched both builds from the addresses the bundler wrote (files it emitted),
    // served as application/wasm; the retry's missing file was a 404.
    const out = (await outputs.get(bundler)) as string;
    const emitted = (await readdir(out, { recursive: true })).filter((f) => f.endsWith(".wasm"));
    const fetched = s.requests.slice(first).filter((r) => r.path.endsWith(".wasm"));
    expect(fetched.filter((r) => r.status === 404).map((r) => r.path)).toEqual([
      "/no-such-file.wasm",
    ]);
    const ok = fetched.filter((r) => r.status === 200);
    expect(new Set(ok.map((r) => r.type))).toEqual(new Set(["application/wasm"]));
    expect(new Set(ok.map((r) => r.path.slice(1))).size).toBe(2);
    expect(ok.map((r) => r.path.slice(1)).every((p) => emitted.includes(p))).toBe(true);
  });

  it("picks the scalar build where the runtime has no WebAssembly SIMD", async () => {
    const s = await server();
    const first = s.requests.length;
    const { report, status, errors } = await openPage<Report>(
      browser as Browser,
      `${s.url}/index.html`,
      { noSimd: true },
    );
    expect(report.error, errors.join("\n")).toBeUndefined();
    expect(report.init).toEqual({
      backend: "scalar",
      available: ["scalar", "js"],
      reason: "this runtime has no WebAssembly SIMD",
    });
    expect(report.autoBackend).toBe("scalar");
    expect(status).toBe("wasm-batchnorm: running on the scalar back end");
    checkRun(report, "scalar");
    checkRun(report, "js");
    expect(report.forced?.simd).toMatch(
      /backend "simd" is not available here \(this runtime has no WebAssembly SIMD\)/,
    );
    // Only the scalar build was downloaded.
    const wasm = s.requests.slice(first).filter((r) => r.path.endsWith(".wasm"));
    expect(wasm).toHaveLength(1);
    const out = (await outputs.get(bundler)) as string;
    const fetched = await readFile(join(out, wasm[0]?.path ?? ""));
    expect(fetched.equals(await readFile(join(hosted, "batchnorm-scalar.wasm")))).toBe(true);
  });

  // (The plain page's inline import map would need a CSP hash of its own: bundled apps only.)
  if (bundled) {
    it("runs on wasm under a CSP that allows 'wasm-unsafe-eval'", async () => {
      const s = await server();
      const { report, errors } = await openPage<Report>(
        browser as Browser,
        `${s.url}/index.html?csp=wasm`,
      );
      expect(report.error, errors.join("\n")).toBeUndefined();
      expect(report.init).toEqual({ backend: "simd", available: ["simd", "scalar", "js"] });
      checkRun(report, "simd");
      checkRun(report, "scalar");
    });
  }

  if (bundled)
    it("falls back to JS under a CSP without 'wasm-unsafe-eval', and says so", async () => {
      const s = await server();
      const { report, status } = await openPage<Report>(
        browser as Browser,
        `${s.url}/index.html?csp=1&expect=js`,
      );
      expect(report.error).toBeUndefined();
      expect(report.hasWebAssembly).toBe(true);
      expect(report.init?.backend).toBe("js");
      expect(report.init?.available).toEqual(["js"]);
      expect(report.init?.reason).toMatch(
        /^WebAssembly is blocked here \(a Content-Security-Policy needs 'wasm-unsafe-eval' in script-src to allow it\): .*(unsafe-eval|Refused)/,
      );
      expect(status).toMatch(
        /^WebAssembly unavailable: running on the JS back end \(WebAssembly is blocked/,
      );
      expect(report.autoBackend).toBe("js");
      checkRun(report, "js");
      expect(report.forced?.simd).toMatch(
        /^Error: wasm-batchnorm: backend "simd" is not available here \(WebAssembly is blocked here/,
      );
      expect(report.forced?.scalar).toMatch(/backend "scalar" is not available here/);
    });

  it("falls back to JS where WebAssembly does not exist, and says so", async () => {
    const s = await server();
    const { report, status } = await openPage<Report>(
      browser as Browser,
      `${s.url}/index.html?expect=js`,
      { deleteWebAssembly: true },
    );
    expect(report.error).toBeUndefined();
    expect(report.hasWebAssembly).toBe(false);
    expect(report.init).toEqual({
      backend: "js",
      available: ["js"],
      reason: "WebAssembly is not available in this runtime",
    });
    expect(status).toBe(
      "WebAssembly unavailable: running on the JS back end (WebAssembly is not available in this runtime)",
    );
    checkRun(report, "js");
    expect(report.forced?.simd).toBe(
      'Error: wasm-batchnorm: backend "simd" is not available here (WebAssembly is not available in this runtime); available: js',
    );
  });
});

describe("the Vite dev server", () => {
  /** The Vite app, served by `vite` (dev) with its config or with `config` instead. */
  async function devRun(config: "fixture" | "none") {
    const app = join(dir?.dir ?? "", "vite");
    await outputs.get("vite");
    const server = await createServer({
      root: app,
      configFile: config === "fixture" ? join(app, "vite.config.js") : false,
      cacheDir: join(app, `.vite-${config}`),
      logLevel: "silent",
      server: { host: "127.0.0.1", port: 0, hmr: false },
    });
    try {
      await server.listen();
      const url = server.resolvedUrls?.local[0] ?? "";
      return await openPage<Report>(browser as Browser, `${url}index.html`);
    } finally {
      await server.close();
    }
  }

  it('works with the fixture\'s optimizeDeps: { exclude: ["wasm-batchnorm"] }', async () => {
    const { report, errors } = await devRun("fixture");
    expect(report.error, errors.join("\n")).toBeUndefined();
    expect(report.init?.backend).toBe("simd");
    checkRun(report, "simd");
    checkRun(report, "scalar");
  });

  it("without it, pre-bundling loses the .wasm files and init() says what to do", async () => {
    const { report } = await devRun("none");
    expect(report.error).toMatch(
      /is not a WebAssembly file \(it starts with "<!do"\).*optimizeDeps: \{ exclude: \["wasm-batchnorm"\] \}/,
    );
  });
});

describe("init() sources, in the Vite app", () => {
  it.each([
    ["a path string", "string"],
    ["a URL", "url"],
    ["bytes", "bytes"],
    ["a Response", "response"],
    ["a WebAssembly.Module", "module"],
  ])("loads both builds hosted elsewhere, given as %s", async (_, source) => {
    const s = await (servers.get("vite") as Promise<Served>);
    const { report, errors } = await openPage<Report>(
      browser as Browser,
      `${s.url}/index.html?source=${source}`,
    );
    expect(report.error, errors.join("\n")).toBeUndefined();
    expect(report.init).toEqual({ backend: "simd", available: ["simd", "scalar", "js"] });
    checkRun(report, "simd");
    checkRun(report, "scalar");
  });
});
