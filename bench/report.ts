/**
 * The README's benchmark tables, in Markdown, from a results file:
 * `node --import tsx bench/report.ts [bench/results/latest.json]` (the main table, then the
 * fused-activation rows when the run has them).
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { FusedRow } from "./fused-rows.js";
import type { BenchResults, CaseResult, Impl, Path } from "./types.js";

const ms = (v: number | undefined) =>
  v === undefined || !Number.isFinite(v)
    ? "—"
    : v >= 100
      ? v.toFixed(0)
      : v >= 10
        ? v.toFixed(1)
        : v >= 1
          ? v.toFixed(2)
          : // Three significant digits below 1 ms: a few µs must not read as 0.001.
            v.toPrecision(3);
const ratio = (v: number | undefined) =>
  v === undefined || !Number.isFinite(v)
    ? "—"
    : v >= 10
      ? v.toFixed(0)
      : v >= 1
        ? v.toFixed(1)
        : v.toFixed(2);

function find(c: CaseResult, impl: Impl, path: Path) {
  return c.results.find((r) => r.impl === impl && r.path === path);
}

/**
 * One row per shape and op: times in ms (medians; the per-call row in µs), SIMD's bandwidth
 * and its share of the same-run copy's, and ratios to the plain JS loop and to TF.js-wasm.
 */
export function markdownTable(results: BenchResults): string {
  const lines = [
    "| shape | op | SIMD 0-copy | SIMD copy API | scalar 0-copy | JS 0-copy | plain loop | TF.js wasm | TF.js cpu | SIMD GB/s | copy GB/s | SIMD % of copy | SIMD × plain | JS × plain | SIMD × TF.js wasm |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
  ];
  for (const c of results.cases) {
    const simd = find(c, "simd", "zero-copy");
    const js = find(c, "js", "zero-copy");
    const tfw = find(c, "tfjs-wasm", "");
    const time = (r: ReturnType<typeof find>) => {
      const t = c.perCall
        ? `${ms(r === undefined ? undefined : r.medianMs * 1000)} µs`
        : ms(r?.medianMs);
      return r?.derived ? `≈${t}` : r === undefined ? "—" : t;
    };
    const cells = [
      c.shapeLabel.replace(/x/g, "×"),
      c.opLabel,
      time(simd),
      time(find(c, "simd", "copy API")),
      time(find(c, "scalar", "zero-copy")),
      time(js),
      time(find(c, "plain", "")),
      time(tfw),
      time(find(c, "tfjs-cpu", "")),
      simd?.gbps.toFixed(1) ?? "—",
      c.copy.gbps.toFixed(1),
      simd === undefined ? "—" : `${(simd.fractionOfCopy * 100).toFixed(0)}%`,
      ratio(simd?.speedupVsPlain),
      ratio(js?.speedupVsPlain),
      simd === undefined || tfw === undefined ? "—" : ratio(tfw.medianMs / simd.medianMs),
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The fused-activation rows: plain BN, fused, BN then a separate pass (wasm SIMD, JS), ratios. */
export function fusedTable(rows: readonly FusedRow[]): string {
  const lines = [
    "| shape | op | plain BN | BN+ReLU fused | BN, then a SIMD ReLU pass | BN, then a JS ReLU loop | fused / plain | SIMD separate / fused | JS separate / fused |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    const t = (x: { medianMs: number }) => `${ms(x.medianMs)} ms`;
    const cells = [
      r.shapeLabel.replace(/x/g, "×"),
      r.op === "train fwd" ? "training fwd" : r.op,
      t(r.plain),
      t(r.fused),
      t(r.separate),
      t(r.separateJs),
      `${r.fusedOverPlain.toFixed(2)}×`,
      `${r.separateOverFused.toFixed(2)}×`,
      `${r.separateJsOverFused.toFixed(2)}×`,
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const input = process.argv[2] ?? "bench/results/latest.json";
  const results = JSON.parse(readFileSync(input, "utf8")) as BenchResults;
  console.log(markdownTable(results));
  if (results.fused !== undefined) console.log(`\n${fusedTable(results.fused)}`);
}
