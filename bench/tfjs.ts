/**
 * Loads TensorFlow.js (tfjs-core with its gradients, the CPU and the WebAssembly back ends) for
 * the benchmark.
 *
 * tfjs-core's Node entry (`dist/tf-core.node.js`) ships without the gradient registrations that
 * `tf.grads` needs (the `@tensorflow/tfjs` union package adds them), and its ES-module files use
 * extensionless imports that Node cannot load. So the three packages are bundled once, with
 * esbuild (which tsx, the benchmark's runner, already depends on), into one CommonJS file under
 * `node_modules/.cache/`, and that file is required. The wasm back end reads its own `.wasm`
 * files from its package directory.
 *
 * @module
 */
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export type Tf = typeof import("@tensorflow/tfjs-core") & {
  setWasmPaths(prefix: string): void;
};

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), "..");

const ENTRY = `
export * from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-core/dist/register_all_gradients";
import "@tensorflow/tfjs-backend-cpu";
export { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
`;

/** Bundles (about a second) and loads TF.js; both back ends are initialised and checked. */
export async function loadTfjs(): Promise<Tf> {
  const esbuild = require("esbuild") as typeof import("esbuild");
  const outDir = join(root, "node_modules", ".cache", "wasm-batchnorm-bench");
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, "tfjs.cjs");
  await esbuild.build({
    stdin: { contents: ENTRY, resolveDir: root, loader: "js" },
    bundle: true,
    format: "cjs",
    platform: "node",
    mainFields: ["module", "main"],
    outfile,
    logLevel: "error",
  });
  const tf = require(outfile) as Tf;
  const wasmDir = dirname(
    require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"),
  );
  tf.setWasmPaths(`${wasmDir}/`);
  // TF.js greets Node users with an advertisement for tfjs-node on the CPU back end; silence it.
  const warn = console.warn;
  const log = console.log;
  console.warn = console.log = () => {};
  try {
    for (const name of ["wasm", "cpu"]) {
      if (!(await tf.setBackend(name))) throw new Error(`TF.js back end "${name}" failed to load`);
      tf.tidy(() => tf.add(tf.ones([2]), tf.ones([2])).dataSync());
    }
  } finally {
    console.warn = warn;
    console.log = log;
  }
  return tf;
}
