/**
 * The benchmark's console output: progress on stderr, one table per case and the targets on
 * stdout.
 *
 * @module
 */
import type { Verdict } from "./results.js";
import type { CaseResult } from "./types.js";

const fmtMs = (ms: number) =>
  ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
const fmtX = (x: number) => (x >= 10 ? x.toFixed(1) : x.toFixed(2));
const pad = (s: string, w: number) => s.padStart(w);
const padR = (s: string, w: number) => s.padEnd(w);

/** Overwrites the status line (on a terminal only). */
export function progress(text: string) {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
}

/** A line of progress that stays (also when stderr is a file or pipe). */
export function progressLine(text: string) {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}\n`);
  else process.stderr.write(`${text}\n`);
}

/** One case: a row per contestant; the per-call row in µs. */
export function printCase(r: CaseResult) {
  const unit = r.perCall ? "µs" : "ms";
  const time = r.perCall ? (ms: number) => (ms * 1000).toFixed(2) : fmtMs;
  const lines = [
    `\n${r.shapeLabel} · ${r.opLabel} · ${(r.n / 1e6).toFixed(r.perCall ? 6 : 2)}M floats, ${(
      r.bytes / 1e6
    ).toFixed(
      r.perCall ? 4 : 1,
    )} MB moved at least · copy ${time(r.copy.medianMs)} ${unit} = ${r.copy.gbps.toFixed(1)} GB/s`,
    `  ${padR("contestant", 16)}${pad(`median ${unit}`, 11)}${pad(`p10–p90 ${unit}`, 18)}` +
      `${pad("GB/s", 8)}${pad("% copy", 8)}${pad("× plain", 9)}${pad("× js", 8)}${pad("samples", 9)}`,
  ];
  for (const c of r.results) {
    if (c.impl === "copy") continue;
    const spread = c.derived ? "(derived)" : `${time(c.p10Ms)}–${time(c.p90Ms)}`;
    lines.push(
      `  ${padR(c.name, 16)}${pad(time(c.medianMs), 11)}${pad(spread, 18)}` +
        `${pad(c.gbps.toFixed(1), 8)}${pad(`${(c.fractionOfCopy * 100).toFixed(0)}%`, 8)}` +
        `${pad(fmtX(c.speedupVsPlain), 9)}${pad(fmtX(c.speedupVsJs), 8)}` +
        `${pad(`${c.samples}×${c.runsPerSample}`, 9)}`,
    );
  }
  console.log(lines.join("\n"));
}

export function printTargets(verdicts: readonly Verdict[]) {
  const lines: string[] = ["\nTargets (SIMD, zero-copy path):"];
  for (const v of verdicts) {
    const value = v.target.includes("%")
      ? `${(v.value * 100).toFixed(0)}%`
      : `${v.value.toFixed(1)}×`;
    lines.push(
      `  ${v.ok ? "met    " : "NOT MET"}  ${padR(v.target, 16)}${pad(value, 8)}   ${v.where}`,
    );
  }
  const failed = verdicts.filter((v) => !v.ok).length;
  lines.push(`  ${verdicts.length - failed} of ${verdicts.length} met`);
  console.log(lines.join("\n"));
}
