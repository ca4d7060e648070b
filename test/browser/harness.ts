/**
 * The browser tests' plumbing: `npm pack` the package, install the tarball into a copy of a
 * fixture app, build it with the bundler installed at the repository root, serve the output on
 * localhost and drive Debian's Chromium with playwright-core.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { basename, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type Browser, chromium } from "playwright-core";

const run = promisify(execFile);

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const FIXTURES = join(ROOT, "test/browser/fixtures");
/**
 * Apps are built under the repository (git-ignored), not in the OS temp folder: their configs
 * import the bundlers and plugins installed at the root, found by walking up to its node_modules.
 */
const APPS = join(ROOT, "test/browser/.apps");

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/**
 * docs/design.md, Toolchain; the network flags keep Chromium from calling home on a closed
 * network.
 */
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-quic",
  "--disable-sync",
];

export type Bundler = "vite" | "webpack" | "rollup";
export const BUNDLERS: readonly Bundler[] = ["vite", "webpack", "rollup"];
/** The fixture apps: one per bundler, and "plain", a page that imports the package unbundled. */
export type AppName = Bundler | "plain";
const BUILD: Record<Bundler, readonly string[]> = {
  vite: ["vite", "build"],
  webpack: ["webpack", "--config", "webpack.config.mjs"],
  rollup: ["rollup", "-c", "rollup.config.mjs"],
};

/** A fresh folder for one test run (several runs may share the work tree), removed by `clean`. */
export async function workDir(): Promise<{ dir: string; clean: () => Promise<void> }> {
  await mkdir(APPS, { recursive: true });
  // Runs that were killed leave their folder: remove those older than an hour.
  for (const name of await readdir(APPS)) {
    const old = join(APPS, name);
    if ((await stat(old)).mtimeMs < Date.now() - 3_600_000) {
      await rm(old, { recursive: true, force: true });
    }
  }
  const dir = await mkdtemp(join(APPS, "run-"));
  return { dir, clean: () => rm(dir, { recursive: true, force: true }) };
}

/** The files `npm pack` would put in the tarball, from its JSON report. */
export async function packFiles(): Promise<string[]> {
  const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: ROOT,
  });
  return (JSON.parse(stdout) as { files: { path: string }[] }[])[0]?.files.map((f) => f.path) ?? [];
}

/** `npm pack` into `dir`; returns the tarball's path. Needs `npm run build` first. */
export async function pack(dir: string): Promise<string> {
  for (const file of [
    "index.browser.js",
    "index.node.js",
    "batchnorm-simd.wasm",
    "batchnorm-scalar.wasm",
  ]) {
    if (!existsSync(join(ROOT, "dist", file))) {
      throw new Error(`dist/${file} is missing: run \`npm run build\` before the browser tests`);
    }
  }
  const { stdout } = await run(
    "npm",
    ["pack", "--json", "--ignore-scripts", "--pack-destination", dir],
    { cwd: ROOT },
  );
  const name = (JSON.parse(stdout) as { filename: string }[])[0]?.filename;
  if (name === undefined) throw new Error(`npm pack printed no tarball: ${stdout}`);
  return join(dir, name);
}

/** A copy of fixtures/<name> with the shared page as src/app.js, and the tarball installed. */
export async function makeApp(dir: string, name: string, tarball: string): Promise<string> {
  const app = join(dir, name);
  await cp(join(FIXTURES, name), app, { recursive: true });
  await mkdir(join(app, "src"), { recursive: true });
  await cp(join(FIXTURES, "shared/app.js"), join(app, "src/app.js"));
  // Only the local tarball, which has no dependencies: nothing is fetched from the registry.
  await run(
    "npm",
    [
      "install",
      "--no-save",
      "--no-package-lock",
      "--no-audit",
      "--no-fund",
      "--ignore-scripts",
      "--offline",
      tarball,
    ],
    { cwd: app },
  );
  return app;
}

/** Builds the app with the root's bundler; returns the folder to serve ("plain": the app). */
export async function build(app: string, bundler: AppName): Promise<string> {
  if (bundler === "plain") return app;
  const [bin = "", ...args] = BUILD[bundler];
  try {
    await run(join(ROOT, "node_modules/.bin", bin), args, {
      cwd: app,
      env: { ...process.env, NODE_ENV: "production" },
    });
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${bundler} build failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
  return join(app, "dist");
}

const MIME: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
};

export interface Served {
  url: string;
  /** Every request, in order: path, status and Content-Type. */
  requests: { path: string; status: number; type: string }[];
  close: () => Promise<void>;
}

/**
 * A static server for `root` on 127.0.0.1 (port 0: any free port). `/hosted/*.wasm` serves the
 * package's .wasm files from `hosted`, as a CDN would for users who host them elsewhere. A page
 * requested with `?csp=1` gets a Content-Security-Policy without 'wasm-unsafe-eval', with
 * `?csp=wasm` one with it; one requested with `?coi=1` is cross-origin isolated (COOP and COEP).
 */
export async function serve(root: string, hosted: string): Promise<Served> {
  const requests: Served["requests"] = [];
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = decodeURIComponent(url.pathname);
    let file = path.startsWith("/hosted/")
      ? join(hosted, basename(path))
      : resolve(root, `.${path.endsWith("/") ? `${path}index.html` : path}`);
    if (!path.startsWith("/hosted/") && !file.startsWith(root + sep)) file = "";
    let status = 200;
    let type = MIME[extname(file)] ?? "application/octet-stream";
    let body: Buffer | string;
    try {
      if (file === "" || !(await stat(file)).isFile()) throw new Error("not found");
      body = await readFile(file);
    } catch {
      status = 404;
      type = "text/plain";
      body = "not found";
    }
    const csp = url.searchParams.get("csp");
    if (csp === "1") res.setHeader("Content-Security-Policy", "script-src 'self'");
    if (csp === "wasm") {
      res.setHeader("Content-Security-Policy", "script-src 'self' 'wasm-unsafe-eval'");
    }
    if (url.searchParams.get("coi") === "1") {
      // Cross-origin isolation, which gives a page (and its workers) SharedArrayBuffer.
      res.setHeader("Cross-Origin-Opener-Policy", "same-origin");
      res.setHeader("Cross-Origin-Embedder-Policy", "require-corp");
    }
    res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store" });
    res.end(body);
    requests.push({ path, status, type });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}

/** Headless Debian Chromium with a new empty profile; fails (never skips) when it is missing. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM}: run \`bash scripts/setup.sh --browser\` ` +
        "(apt-get install chromium), or set CHROMIUM_PATH",
    );
  }
  // launch() gives every browser a new temporary --user-data-dir and removes it on close.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
}

export interface PageRun<R> {
  report: R;
  status: string;
  /** Uncaught errors and console errors of the page. */
  errors: string[];
}

/** Opens `url`, waits for the page's report on `window.__wbn` and returns it with the status line. */
export async function openPage<R>(
  browser: Browser,
  url: string,
  options: { deleteWebAssembly?: boolean; noSimd?: boolean } = {},
): Promise<PageRun<R>> {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()}`);
    });
    if (options.deleteWebAssembly) {
      await page.addInitScript(() => {
        // The point: a runtime without the global, as some locked-down embedders have.
        delete (globalThis as { WebAssembly?: unknown }).WebAssembly;
      });
    }
    if (options.noSimd) {
      await page.addInitScript(() => {
        // A runtime without WebAssembly SIMD: the probe module does not validate.
        WebAssembly.validate = () => false;
      });
    }
    await page.goto(url);
    try {
      await page.waitForFunction(() => "__wbn" in window, null, { timeout: 30_000 });
    } catch (error) {
      throw new Error(`the page at ${url} never reported: ${errors.join("\n")}\n${error}`);
    }
    const report = (await page.evaluate(
      () => (window as unknown as { __wbn: unknown }).__wbn,
    )) as R;
    const status = (await page.textContent("#status")) ?? "";
    return { report, status, errors };
  } finally {
    await context.close();
  }
}
