/**
 * `npm run bench`: batch norm on our SIMD, scalar and JS back ends (copy API and zero-copy
 * path), on a plain JS loop and on TensorFlow.js (wasm and CPU back ends), side by side, in
 * one process.
 *
 * For every shape and op (a "case"), every contestant is first run once and its result compared
 * with the JS back end's (a wrong answer stops the run), then warmed up, then timed in rounds
 * (see `timing.ts`). Reported: the median sample and the p10–p90 spread. Next to each time: the
 * effective bandwidth over the bytes the op must move at least, and that of a wasm SIMD copy of
 * the same size timed in the same rounds.
 *
 * Usage: node --expose-gc --import tsx bench/run.ts [--quick] [--no-tfjs] [--filter text]
 *        [--json path] [--svg path]
 * `--filter` keeps the cases whose label contains the text (e.g. "NHWC 32x56", "fwd+bwd"), skips
 * the fused-activation rows (run after the cases: `fused-rows.ts`) unless the text is "fused",
 * and then writes no files unless `--json`/`--svg` are given; `--quick` writes
 * `bench/results/quick.json` and no chart, and runs TF.js's CPU back end on the small shapes only.
 *
 * Files: `plan.ts` (ops, shapes, budgets), `contestant.ts` (what runs, the check),
 * `rig.ts`, `plain.ts` and `rig-tfjs.ts` (contestants per shape: ours, the plain JS loop,
 * TF.js), `timing.ts` (check, warm-up, rounds), `results.ts` (summaries, targets), `print.ts`
 * (console), `chart.ts` and `report.ts` (the README's chart and table), `lib.ts` (everything
 * taken from `ts/`). Beside it: `js-kernels.ts` (the JS back end's kernels against the plain
 * loop's), `kernels.ts` (kernel passes against the copy) and `fused.ts` (only the fused rows:
 * `npm run bench:fused`).
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { renderChart } from "./chart.js";
import { benchFused } from "./fused-rows.js";
import { init } from "./lib.js";
import { budget, OPS, SHAPES, shapeLabel } from "./plan.js";
import { printCase, printTargets, progress, progressLine } from "./print.js";
import { deriveTfjsBackward, summarize, targets } from "./results.js";
import { makeRig } from "./rig.js";
import { loadTfjs } from "./tfjs.js";
import { collect, gc, now, timeCase } from "./timing.js";
import type { BenchResults, CaseResult } from "./types.js";

const argv = process.argv.slice(2);
const option = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = argv.includes("--quick");
const FILTER = option("--filter");
const WITH_TFJS = !argv.includes("--no-tfjs");
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** A full run updates the results and the chart the README shows; --quick and --filter do not. */
const JSON_OUT =
  option("--json") ??
  (FILTER
    ? undefined
    : join(ROOT, QUICK ? "bench/results/quick.json" : "bench/results/latest.json"));
const SVG_OUT = option("--svg") ?? (FILTER || QUICK ? undefined : join(ROOT, "docs/bench.svg"));
const PLAN = budget(QUICK);

async function main() {
  const root = (p: string) => readFileSync(join(ROOT, p));
  await init({
    simd: root("dist/batchnorm-simd.wasm"),
    scalar: root("dist/batchnorm-scalar.wasm"),
  });
  const tf = WITH_TFJS ? await loadTfjs() : undefined;
  if (gc === undefined)
    progressLine("note: run node with --expose-gc to collect garbage between cases");

  const cases = SHAPES.flatMap((spec) => OPS.map((op) => ({ spec, op })));
  const selected = cases.filter(
    ({ spec, op }) => FILTER === undefined || `${shapeLabel(spec)} ${op.label}`.includes(FILTER),
  );
  const withFused = FILTER === undefined || FILTER === "fused";
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    memoryGB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    commit: gitCommit(),
    tfjs: tf?.version_core,
    tfjsWasmSimd: tf?.env().getBool("WASM_HAS_SIMD_SUPPORT"),
    command: `node --expose-gc --import tsx bench/run.ts ${argv.join(" ")}`.trim(),
    plan: PLAN,
  };
  console.log(
    `wasm-batchnorm benchmark · Node ${meta.node} (V8 ${meta.v8}) · ${meta.cpu}, ${meta.cores} cores · ` +
      `TF.js ${meta.tfjs ?? "skipped"}${QUICK ? " · --quick" : ""}`,
  );

  const results: CaseResult[] = [];
  const started = now();
  let index = 0;
  for (const spec of SHAPES) {
    const mine = selected.filter((s) => s.spec === spec);
    if (mine.length === 0) continue;
    collect(true);
    const rig = makeRig(spec, tf, QUICK);
    for (const { op } of mine) {
      index++;
      const label = `${shapeLabel(spec)} ${op.label}`;
      const where = () =>
        `[${index}/${selected.length}] ${label}` +
        ` · ${((now() - started) / 1000).toFixed(0)} s elapsed`;
      progress(`${where()} · checking and warming up`);
      if (!process.stderr.isTTY) process.stderr.write(`${where()}\n`);
      collect(true);
      const timed = await timeCase(rig.contestants(op.id), rig.reference[op.id], label, PLAN, (s) =>
        progress(`${where()} · ${s}`),
      );
      const result = summarize(spec, op, rig.n, timed);
      results.push(result);
      progress("");
      printCase(result);
    }
    rig.dispose();
  }
  progress("");
  deriveTfjsBackward(results);
  const verdicts = targets(results);
  printTargets(verdicts);
  let fused: BenchResults["fused"];
  if (withFused) {
    console.log("");
    collect(true);
    fused = benchFused("relu", QUICK, console.log);
  }
  const totalS = (now() - started) / 1000;
  const out: BenchResults = {
    meta: { ...meta, totalSeconds: Math.round(totalS) },
    cases: results,
    targets: verdicts,
    fused,
  };
  console.log(`\ntotal ${totalS.toFixed(0)} s`);
  if (JSON_OUT !== undefined) {
    mkdirSync(dirname(JSON_OUT), { recursive: true });
    writeFileSync(JSON_OUT, `${JSON.stringify(out, null, 1)}\n`);
    console.log(`wrote ${relative(process.cwd(), JSON_OUT)}`);
  }
  if (SVG_OUT !== undefined) {
    mkdirSync(dirname(SVG_OUT), { recursive: true });
    writeFileSync(SVG_OUT, renderChart(out));
    console.log(`wrote ${relative(process.cwd(), SVG_OUT)}`);
  }
}

function gitCommit(): string | undefined {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: ROOT,
      encoding: "utf8",
    }).trim();
  } catch {
    return undefined;
  }
}

main().catch((error: unknown) => {
  progress("");
  console.error(error);
  process.exit(1);
});
