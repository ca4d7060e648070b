/**
 * What `npm pack` ships, and the packed package used from Node the way a user installs it:
 * the exports map's `node` entry, init() reading the .wasm files from disk, init()'s other
 * sources, a retry after a failed init(), and the published types in a strict TS consumer.
 */
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeApp, pack, packFiles, ROOT, workDir } from "./harness.js";

const run = promisify(execFile);

describe("npm pack", () => {
  it("holds the dist JS, its .d.ts, the three .wasm builds, README and package.json, nothing else", async () => {
    const files = await packFiles();
    const stray = files.filter(
      (f) =>
        !/^(README\.md|LICENSE(\.md)?|package\.json)$/.test(f) &&
        !/^dist\/[\w/.-]+(\.js|\.d\.ts)$/.test(f) &&
        !/^dist\/batchnorm-(simd|scalar|simd-shared)\.wasm$/.test(f),
    );
    expect(stray).toEqual([]);
    expect(
      files.filter((f) => /\.map$|(^|\/)(test|ts|crates|target|scripts|examples)\//.test(f)),
    ).toEqual([]);
    const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8"));
    const entry = pkg.exports["."];
    // Conditions in order: types first, specific ones next, default last.
    expect(Object.keys(entry)).toEqual(["types", "node", "browser", "default"]);
    for (const target of [...Object.values(entry), pkg.types] as string[]) {
      expect(files).toContain(target.replace(/^\.\//, ""));
    }
    expect(files).toEqual(
      expect.arrayContaining([
        "README.md",
        "package.json",
        "dist/batchnorm-simd.wasm",
        "dist/batchnorm-scalar.wasm",
        "dist/batchnorm-simd-shared.wasm",
      ]),
    );
  });
});

describe("the packed package in a Node app", () => {
  let dir: Awaited<ReturnType<typeof workDir>> | undefined;
  let app = "";

  beforeAll(async () => {
    dir = await workDir();
    const tarball = await pack(dir.dir);
    app = await makeApp(dir.dir, "node", tarball);
  });

  afterAll(async () => {
    await dir?.clean();
  });

  /** Runs an ES module in the app (a fresh process: init() state starts empty) and parses its JSON. */
  async function node(code: string): Promise<Record<string, unknown>> {
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", code], {
      cwd: app,
    });
    return JSON.parse(stdout);
  }

  const PRELUDE = `
    import { readFileSync } from "node:fs";
    import { BatchNorm, init } from "wasm-batchnorm";
    const file = (kind) => "node_modules/wasm-batchnorm/dist/batchnorm-" + kind + ".wasm";
    const check = () => {
      const out = {};
      for (const backend of ["simd", "scalar", "js"]) {
        const bn = new BatchNorm(2, { backend });
        out[backend] = Array.from(bn.forward(new Float32Array([1, 10, 3, 30]), [2, 2]));
        bn.dispose();
      }
      return out;
    };
  `;
  const EXPECTED = [-1, -1, 1, 1].map((v) => expect.closeTo(v, 4));

  it("resolves the node entry and reads the .wasm files from disk", async () => {
    const out = await node(`${PRELUDE}
      const info = await init();
      console.log(JSON.stringify({ entry: import.meta.resolve("wasm-batchnorm"), info, y: check() }));`);
    expect(out.entry).toMatch(/node_modules\/wasm-batchnorm\/dist\/index\.node\.js$/);
    expect(out.info).toEqual({ backend: "simd", available: ["simd", "scalar", "js"] });
    expect(out.y).toEqual({ simd: EXPECTED, scalar: EXPECTED, js: EXPECTED });
  });

  it.each([
    ["a file path", "file(kind)"],
    ["a file URL", 'new URL(file(kind), "file://" + process.cwd() + "/")'],
    ["bytes", "readFileSync(file(kind))"],
    ["a Response", "new Response(readFileSync(file(kind)))"],
    ["a WebAssembly.Module", "await WebAssembly.compile(readFileSync(file(kind)))"],
  ])("init() loads both builds from %s", async (_, expr) => {
    const out = await node(`${PRELUDE}
      const source = async (kind) => ${expr};
      const info = await init({ simd: await source("simd"), scalar: await source("scalar") });
      console.log(JSON.stringify({ info, y: check() }));`);
    expect(out.info).toEqual({ backend: "simd", available: ["simd", "scalar", "js"] });
    expect(out.y).toEqual({ simd: EXPECTED, scalar: EXPECTED, js: EXPECTED });
  });

  it("a failed init() can be retried; a non-wasm file gets a clear error, and falls back to scalar when it is the SIMD build", async () => {
    const out = await node(`${PRELUDE}
      const errors = [];
      for (const bad of [{ scalar: "no-such.wasm" }, { scalar: "package.json" }]) {
        await init(bad).then(() => errors.push(null), (e) => errors.push(e.message));
      }
      const info = await init({ simd: "package.json" });
      const y = {};
      for (const backend of ["scalar", "js"]) {
        const bn = new BatchNorm(2, { backend });
        y[backend] = Array.from(bn.forward(new Float32Array([1, 10, 3, 30]), [2, 2]));
      }
      console.log(JSON.stringify({ errors, info, y }));`);
    const [missing, notWasm] = out.errors as string[];
    expect(missing).toMatch(/ENOENT.*no-such\.wasm/);
    expect(notWasm).toMatch(
      /the scalar build from file:.*package\.json is not a WebAssembly file \(it starts with "\{\? {2}"\)/,
    );
    expect(out.info).toEqual({
      backend: "scalar",
      available: ["scalar", "js"],
      reason: expect.stringMatching(
        /^the SIMD build failed to load, so the scalar build is used: .*the simd build from file:.*package\.json is not a WebAssembly file/,
      ),
    });
    expect(out.y).toEqual({ scalar: EXPECTED, js: EXPECTED });
  });

  it("its published types check in a strict TypeScript consumer", async () => {
    await writeFile(
      join(app, "consumer.ts"),
      `import { BatchNorm, type InitResult, init } from "wasm-batchnorm";
const info: InitResult = await init({ simd: new URL("https://cdn.example/simd.wasm") });
const bn = new BatchNorm(3, { backend: info.backend, momentum: null });
const y: Float32Array = bn.forward(new Float32Array(6), [2, 3]);
const { dx } = bn.backward(y);
const t = bn.tensor([2, 3]);
const out = bn.forward(t);
out.dispose();
bn.dispose();
export { dx };
// @ts-expect-error: an unknown back end is a type error
new BatchNorm(3, { backend: "gpu" });
`,
    );
    await writeFile(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          // Tensor implements Symbol.dispose (`using`): TypeScript ≥ 5.2 with this lib.
          lib: ["ES2022", "DOM", "ESNext.Disposable"],
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: [],
        },
        files: ["consumer.ts"],
      }),
    );
    const tsc = join(ROOT, "node_modules/.bin/tsc");
    await expect(run(tsc, ["-p", "tsconfig.json"], { cwd: app })).resolves.toBeDefined();
  });
});
