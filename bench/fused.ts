/**
 * `npm run bench:fused`: only the fused-activation rows of `npm run bench` (`fused-rows.ts`).
 *
 * Usage: node --expose-gc --import tsx bench/fused.ts [--quick] [--act relu]
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Act } from "../ts/activation.js";
import { benchFused } from "./fused-rows.js";
import { init } from "./lib.js";

const argv = process.argv.slice(2);
const at = argv.indexOf("--act");
const kind = (at >= 0 ? argv[at + 1] : "relu") as Act["kind"];
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const root = (p: string) => readFileSync(join(ROOT, p));
await init({ simd: root("dist/batchnorm-simd.wasm"), scalar: root("dist/batchnorm-scalar.wasm") });
benchFused(kind, argv.includes("--quick"), console.log);
