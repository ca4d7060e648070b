// Prints "N passed, N failed" from Vitest's JSON report, the line CI reads. A missing or
// unreadable report (the build or a check failed before Vitest ran) counts as one failure;
// a second argument adds failures from outside Vitest (the demo run of .ci/run).
import { readFileSync } from "node:fs";

const path = process.argv[2] ?? ".vitest-report.json";
const extraFailed = Number(process.argv[3] ?? 0);
let report;
try {
  report = JSON.parse(readFileSync(path, "utf8"));
} catch {
  console.log(`0 passed, ${1 + extraFailed} failed`);
  process.exit(1);
}
// A file that fails to load fails its suite but no test: count it as one failure then.
const failed =
  (report.numFailedTests || report.numFailedTestSuites || (report.success ? 0 : 1)) + extraFailed;
const skipped = report.numPendingTests + report.numTodoTests;
console.log(
  `${report.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`,
);
process.exit(failed > 0 || !report.success ? 1 : 0);
